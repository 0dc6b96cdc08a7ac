"""Sampling filters and the batched sampler vs a one-row-at-a-time greedy decoder; generate CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from helm.codons import CLS_ID, EOS_ID, SPECIALS
from helm.downstream.generate import filter_logits, sample
from helm.run import load_run

OAS = "pretrain/oas_parameswaran2013_heavy_100k.csv.gz"


def test_top_k_and_top_p_filters():
    logits = torch.log(torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05]]))
    assert torch.isfinite(filter_logits(logits, top_k=2)).sum() == 2
    # nucleus: smallest prefix of the sorted probabilities whose mass reaches p
    for p, keep in [(0.5, 1), (0.6, 2), (0.7, 2), (0.8, 3), (0.86, 4), (1.0, 5)]:
        assert int(torch.isfinite(filter_logits(logits, top_p=p)).sum()) == keep, p
    shuffled = logits[:, [3, 0, 4, 2, 1]]  # order of the vocabulary must not matter
    assert torch.isfinite(filter_logits(shuffled, top_p=0.6))[0].tolist() == [False, True, False, False, True]


def greedy_one(model, prompt: np.ndarray, max_new: int) -> np.ndarray:
    ids = [CLS_ID, *prompt.tolist()]
    for _ in range(max_new):
        with torch.no_grad():
            logits = model(torch.tensor([ids]))[0, -1].clone()
        eos = logits[EOS_ID].item()
        logits[: len(SPECIALS)] = float("-inf")  # only sequence tokens and <eos> may be drawn
        logits[EOS_ID] = eos
        nxt = int(logits.argmax())
        if nxt == EOS_ID:
            break
        ids.append(nxt)
    return np.array(ids[1:])


def test_batched_sampler_matches_single_row_greedy(tiny_runs):
    run = load_run(tiny_runs["clm"])
    rng = np.random.default_rng(0)
    prompts = [rng.integers(6, 70, size=n) for n in (0, 3, 7, 1)]
    got = sample(run.model, prompts, max_new_tokens=12, top_k=1, seed=0, batch_size=3)
    for p, g in zip(prompts, got):
        np.testing.assert_array_equal(g, greedy_one(run.model, p, 12))
        np.testing.assert_array_equal(g[: len(p)], p)


def test_sampling_is_seeded_and_draws_only_sequence_tokens(tiny_runs):
    run = load_run(tiny_runs["clm"])
    prompts = [np.zeros(0, dtype=np.int64)] * 4
    a = sample(run.model, prompts, 20, temperature=1.5, top_k=0, top_p=1.0, seed=3)
    b = sample(run.model, prompts, 20, temperature=1.5, top_k=0, top_p=1.0, seed=3)
    assert all((x == y).all() for x, y in zip(a, b))
    assert all((x >= len(SPECIALS)).all() for x in a)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "helm.cli", *args], capture_output=True, text=True, timeout=600)


def test_generate_refuses_mlm_run(tiny_runs, shared_data, tmp_path, capsys):
    from helm.downstream.generate import main

    out = tmp_path / "g.json"
    rc = main(
        ["--run", str(tiny_runs["mlm"]), "--out", str(out), "--num-samples", "2", "--reference", str(shared_data / OAS)]
    )
    err = capsys.readouterr().err
    assert rc == 1 and not out.exists()
    assert "needs a CLM (causal) run" in err and "mode='mlm'" in err


@pytest.mark.slow
@pytest.mark.parametrize("prompt", ["none", "cdr3"])
def test_generate_cli_end_to_end(trained_clm, shared_data, tmp_path, prompt):
    """A really trained CLM (real `train.py` run); prompts from scratch or OAS rows cut before their CDR3."""
    out = tmp_path / f"gen_{prompt}.json"
    res = run_cli(
        "generate",
        "--run",
        str(trained_clm[0]),
        "--out",
        str(out),
        "--num-samples",
        "6",
        "--reference",
        str(shared_data / OAS),
        "--num-reference",
        "12",
        "--prompt",
        prompt,
        "--max-new-tokens",
        "30",
        "--seed",
        "1",
    )
    assert res.returncode == 0, res.stderr
    payload = json.loads(out.read_text())
    assert payload["task"] == "generation" and payload["run"] == "oas-clm"
    m = payload["metrics"]
    for key in ("valid_orf_frac", "gc_content", "codon_usage_distance", "internal_diversity", "frechet_distance"):
        assert m[key] is not None, key
    fasta = (tmp_path / f"gen_{prompt}.fasta").read_text().split("\n")
    seqs = fasta[1::2][:6]
    assert len(seqs) == 6 and all(set(s) <= set("ACGT") for s in seqs)
    from helm.downstream.metrics import is_valid_orf

    assert m["valid_orf_frac"] == pytest.approx(np.mean([is_valid_orf(s) for s in seqs]))
    if prompt == "none":
        assert all(len(s) <= 90 for s in seqs)  # at most 30 new codons


@pytest.mark.slow
def test_generate_with_prepared_reference(trained_clm, tmp_path):
    """The reference can be a prepared directory: its held-out split, decoded with its tokenizer."""
    run, prepared = trained_clm
    out = tmp_path / "g.json"
    res = run_cli(
        "generate",
        "--run",
        str(run),
        "--out",
        str(out),
        "--num-samples",
        "4",
        "--reference",
        str(prepared),
        "--prompt",
        "codons",
        "--prompt-codons",
        "5",
        "--max-new-tokens",
        "20",
        "--num-reference",
        "10",
    )
    assert res.returncode == 0, res.stderr
    payload = json.loads(out.read_text())
    assert payload["config"]["num_reference"] == 10 and payload["config"]["prompt_codons"] == 5
    assert payload["metrics"]["ref_gc_content"] > 0


# ------------------------------------------------------------------------------ protein-space embeddings


def synonymous_recoding(cds: str, rng: np.random.Generator) -> str:
    """The same protein with every codon replaced by a random synonymous one."""
    from helm.codons import GENETIC_CODE

    synonyms: dict[str, list[str]] = {}
    for codon, aa in GENETIC_CODE.items():
        synonyms.setdefault(aa, []).append(codon)
    return "".join(rng.choice(synonyms[GENETIC_CODE[cds[i : i + 3]]]) for i in range(0, len(cds) - 2, 3))


@pytest.fixture(scope="module")
def oas_cds(shared_data) -> list[str]:
    from helm.io import oas_cds, read_records

    out = []
    for _, row in read_records(shared_data / OAS):
        seq, reason, _ = oas_cds(row)
        if reason is None:
            out.append(seq)
        if len(out) == 24:
            return out


@pytest.fixture(scope="module")
def tiny_esm(tmp_path_factory):
    """A randomly initialised Hugging Face ESM checkpoint directory with the ESM-2 alphabet (real classes)."""
    from transformers import EsmConfig, EsmModel, EsmTokenizer

    path = tmp_path_factory.mktemp("esm")
    tokens = ["<cls>", "<pad>", "<eos>", "<unk>", *"LAGVSERTIDPKQNFYMHWCXBUZO.-", "<null_1>", "<mask>"]
    (path / "vocab.txt").write_text("\n".join(tokens) + "\n")
    torch.manual_seed(0)
    config = EsmConfig(vocab_size=len(tokens), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=32, max_position_embeddings=202, pad_token_id=1, mask_token_id=32,
                       position_embedding_type="rotary", token_dropout=False)  # fmt: skip
    EsmModel(config, add_pooling_layer=False).save_pretrained(path)
    EsmTokenizer(str(path / "vocab.txt")).save_pretrained(path)
    return path


def test_to_protein_stops_at_the_first_stop_codon():
    from helm.downstream.generate import to_protein

    assert to_protein("ATGAAATTTTAAGGGCCC") == "MKF"
    assert to_protein("ATGAAAT") == "MK" and to_protein("TAAATG") == "" and to_protein("") == ""


@pytest.mark.parametrize("space", ["aa-run", "esm"])
def test_protein_space_cannot_tell_synonymous_recodings_apart(space, oas_cds, tiny_runs, tiny_esm, tmp_path):
    """The paper's Fréchet distance lives in protein space: samples that are synonymous recodings of the
    reference score a distance of zero there, while the nucleotide-space embedder sees the difference."""
    from helm.downstream.generate import EsmEmbedder, RunEmbedder, score

    from .runs import make_run

    rng = np.random.default_rng(0)
    recoded = [synonymous_recoding(s, rng) for s in oas_cds]
    assert recoded != oas_cds
    if space == "esm":
        protein = EsmEmbedder(tiny_esm, batch_size=5)
    else:
        protein = RunEmbedder(load_run(make_run(tmp_path, "aa-mlm", "mlm", tokenizer="aa")))
    nucleotide = RunEmbedder(load_run(tiny_runs["mlm"]))
    assert (protein.alphabet, nucleotide.alphabet) == ("aa", "nuc")
    in_protein = score(recoded, oas_cds, protein, pca_components=4, threshold=0.05)
    in_nucleotide = score(recoded, oas_cds, nucleotide, pca_components=4, threshold=0.05)
    assert in_protein["num_empty_protein"] == 0
    assert in_protein["frechet_distance"] == pytest.approx(0, abs=1e-6)
    assert (in_protein["precision"], in_protein["recall"]) == (1.0, 1.0)
    assert in_nucleotide["frechet_distance"] > 1e-3
    # batching and padding do not change an embedding
    single = np.concatenate([protein([p]) for p in ["MKV", "MKVLLAGW"]])
    np.testing.assert_allclose(protein(["MKV", "MKVLLAGW"]), single, atol=1e-5)


def test_generate_cli_with_esm_embedder(tiny_runs, tiny_esm, shared_data, tmp_path):
    out = tmp_path / "g.json"
    args = ["generate", "--run", str(tiny_runs["clm"]), "--out", str(out), "--num-samples", "6", "--reference",
            str(shared_data / OAS), "--num-reference", "8", "--prompt", "codons", "--prompt-codons", "20",
            "--max-new-tokens", "10", "--esm", str(tiny_esm)]  # fmt: skip
    res = run_cli(*args)
    assert res.returncode == 0, res.stderr
    payload = json.loads(out.read_text())
    assert payload["config"]["embedding_space"] == "protein" and payload["config"]["embedder"] == str(tiny_esm)
    m = payload["metrics"]
    assert m["num_empty_protein"] + 2 <= 6 and np.isfinite(m["frechet_distance"])
    res = run_cli(*args, "--embed-run", str(tiny_runs["mlm"]))
    assert res.returncode == 2 and "not allowed with argument" in res.stderr
    res = run_cli(*args[:-1], str(tmp_path))
    assert res.returncode == 1 and "not a Hugging Face model directory" in res.stderr
