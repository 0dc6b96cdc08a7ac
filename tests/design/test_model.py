"""The run as a codon model: the key/value cache against full forwards, constrained decoding against exhaustive
search, MLM pseudo-log-likelihood against one-position-at-a-time masking, refinement keeps the protein."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from helm.codons import CLS_ID, CODONS, EOS_ID, GENETIC_CODE, MASK_ID, translate
from helm.design.constraints import Constraints, violations
from helm.design.model import CodonModel, Gpt2Cache, likelihood_scores
from helm.design.protein import codons_of, synonymous_mask
from helm.models import create_model
from helm.run import load_run

FREE = Constraints(gc_min=0.0, gc_max=1.0, avoid=[], max_homopolymer=0)


@pytest.mark.parametrize("pos_embedding", ["absolute", "rotary"])
def test_kv_cache_step_equals_full_forward(pos_embedding):
    torch.manual_seed(0)
    lm = create_model("gpt2", vocab_size=70, num_layers=2, hidden_size=32, num_heads=2, intermediate_size=64,
                      max_seq_len=64, pos_embedding=pos_embedding).eval()  # fmt: skip
    ids = torch.randint(6, 70, (3, 20))
    ids[:, 0] = CLS_ID
    cache = Gpt2Cache(lm)
    with torch.no_grad():
        full = lm(ids)
        steps = torch.stack([cache.step(ids[:, t], t) for t in range(ids.shape[1])], dim=1)
    assert torch.allclose(steps, full, atol=1e-5)
    # reordering rows keeps each row's own history
    cache2, rows = Gpt2Cache(lm), torch.tensor([2, 0, 0])
    with torch.no_grad():
        for t in range(10):
            cache2.step(ids[:, t], t)
        cache2.reorder(rows)
        nxt = cache2.step(ids[rows, 10], 10)
    assert torch.allclose(nxt, full[rows, 10], atol=1e-5)


def _exhaustive_best(model: CodonModel, protein: str, bias: np.ndarray) -> tuple[tuple[int, ...], float]:
    options = [[i for i, c in enumerate(CODONS) if GENETIC_CODE[c] == aa] for aa in protein]
    combos = np.array(list(itertools.product(*options)))
    logp = model.codon_logprobs(combos)
    total = (logp[np.arange(len(combos))[:, None], np.arange(len(protein)), combos] + bias[combos]).sum(1)
    return tuple(combos[total.argmax()]), float(total.max())


def test_clm_decoding_against_exhaustive_search(design_runs):
    model = CodonModel(load_run(design_runs["clm"]))
    protein = "LSR"  # 6 x 6 x 6 synonymous combinations
    bias = np.random.default_rng(0).normal(size=64)
    best, best_score = _exhaustive_best(model, protein, bias)
    beam = model.decode(protein, "beam", 1, bias, FREE, beam_size=64 * 6)[0]
    assert tuple(beam.codons) == best
    greedy = model.decode(protein, "greedy", 1, bias, FREE)[0]
    # greedy = argmax at each step, which brute force over one position at a time reproduces
    prefix: list[int] = []
    for aa in protein:
        opts = [i for i, c in enumerate(CODONS) if GENETIC_CODE[c] == aa]
        with torch.no_grad():
            ids = torch.tensor([[CLS_ID, *model.codon_ids[prefix].tolist()]])
            logp = torch.log_softmax(model.lm(ids)[0, -1], -1)[model.codon_ids].numpy() + bias
        prefix.append(max(opts, key=lambda i: logp[i]))
    assert greedy.codons.tolist() == prefix
    assert translate(codons_of(beam.codons)) == translate(codons_of(greedy.codons)) == protein


def test_recompute_decoder_matches_cache(design_runs, monkeypatch):
    """Backbones without a cache recompute the prefix each step: the same designs as the cached gpt2 path."""
    model = CodonModel(load_run(design_runs["clm"]))
    protein = "MASSEDVIKEFMRFKV"
    bias = np.random.default_rng(1).normal(size=64)
    cached = [model.decode(protein, m, 2, bias, FREE, beam_size=3, seed=5) for m in ("beam", "sample")]
    monkeypatch.setattr("helm.design.model.GPT2LM", type("NotGpt2", (), {}))  # isinstance fails: Recompute
    again = [model.decode(protein, m, 2, bias, FREE, beam_size=3, seed=5) for m in ("beam", "sample")]
    for xs, ys in zip(cached, again):
        for x, y in zip(xs, ys):
            assert x.codons.tolist() == y.codons.tolist()
            assert np.allclose(x.pref, y.pref, atol=1e-4)
            assert translate(codons_of(x.codons)) == protein


def test_mlm_pseudo_log_likelihood_against_masking_one_position_at_a_time(design_runs):
    model = CodonModel(load_run(design_runs["mlm"]), batch_size=7)  # batches that cut across designs
    protein = "MKVLAGE"
    rng = np.random.default_rng(0)
    designs = np.array([[rng.choice(np.flatnonzero(row)) for row in synonymous_mask(protein)] for _ in range(3)])
    got = model.codon_logprobs(designs)
    for b, codons in enumerate(designs):
        for pos in range(len(protein)):
            ids = torch.tensor([[CLS_ID, *model.codon_ids[codons].tolist(), EOS_ID]])
            ids[0, pos + 1] = MASK_ID
            with torch.no_grad():
                ref = torch.log_softmax(model.lm(ids)[0, pos + 1], -1)[model.codon_ids].numpy()
            assert np.allclose(got[b, pos], ref, atol=1e-5)
    s = likelihood_scores(got[0], designs[0], protein)
    picked = got[0][np.arange(len(protein)), designs[0]]
    syn = [got[0][i, designs[0][i]] - math.log(np.exp(got[0][i][synonymous_mask(protein)[i]]).sum())
           for i in range(len(protein))]  # fmt: skip
    assert s["ll"] == pytest.approx(picked.sum(), rel=1e-6)
    assert s["syn_ll_per_codon"] == pytest.approx(np.mean(syn), rel=1e-6)


@pytest.mark.parametrize("anneal", [True, False])
def test_mlm_refinement_keeps_protein_and_avoids_patterns(design_runs, anneal):
    model = CodonModel(load_run(design_runs["mlm"]))
    protein = "MKKKKFFFFGGEEFRSSLL"
    cons = Constraints(gc_min=0.0, gc_max=1.0, avoid=["GAATTC"], max_homopolymer=5)
    init = np.array([[np.flatnonzero(row)[0] for row in synonymous_mask(protein)]] * 2)  # AAA AAA ...: runs of A
    out = model.refine(protein, init, np.zeros(64), cons, sweeps=4, t_start=1.0, t_end=0.0, seed=0, anneal=anneal)
    for d in out:
        assert translate(codons_of(d.codons)) == protein
        assert violations(codons_of(d.codons), cons) == []
        assert d.pref.shape == (len(protein), 64)


def test_annealing_to_zero_does_not_lower_pseudo_likelihood_below_the_start(design_runs):
    model = CodonModel(load_run(design_runs["mlm"]))
    protein = "MASSEDVIKEFMRFKVRMEG"
    rng = np.random.default_rng(3)
    init = np.array([[rng.choice(np.flatnonzero(row)) for row in synonymous_mask(protein)]])
    out = model.refine(protein, init, np.zeros(64), FREE, sweeps=6, t_start=0.5, t_end=0.0, seed=1)[0]
    before = model.log_likelihoods(protein, [init[0]])[0]["syn_ll_per_codon"]
    after = model.log_likelihoods(protein, [out.codons])[0]["syn_ll_per_codon"]
    assert after > before
