"""Encoding (framing, truncation, tails) and batched embedding extraction vs one sequence at a time."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from helm.codons import CLS_ID, EOS_ID, PAD_ID
from helm.downstream.embed import InputError, check_compatible, embed_pooled, embed_tokens, encode, mean_pool
from helm.run import load_run
from helm.tokenizers import create_tokenizer

CODON = create_tokenizer("3mer")


def test_encode_frames_like_pretraining():
    seqs = ["ATGAAACCC", "ATGGG"]  # the second has a 2-base tail
    mlm = encode(CODON, seqs, 16, mode="mlm")
    assert mlm.ids[0].tolist()[:5] == [CLS_ID, *CODON.encode("ATGAAACCC").tolist(), EOS_ID]
    assert mlm.ids[1].tolist()[:4] == [CLS_ID, CODON.vocab.index["ATG"], EOS_ID, PAD_ID]
    assert mlm.mask.sum(1).tolist() == [5, 3]
    assert mlm.n_tail_trimmed == 1
    clm = encode(CODON, seqs, 16, mode="clm")
    assert clm.ids[0].tolist() == [CLS_ID, *CODON.encode("ATGAAACCC").tolist()]
    assert clm.mask.sum(1).tolist() == [4, 2]


def test_encode_truncates_with_count_or_refuses(capsys):
    seqs = ["ATG" * 10, "ATG" * 3, "ATG" * 6]  # 6 codons + 2 specials fit exactly
    enc = encode(CODON, seqs, 8, mode="mlm", where="toy.csv")
    assert enc.n_truncated == 1 and enc.ids.shape[1] == 8  # 6 codons + cls + eos
    assert enc.ids[0, -1] == EOS_ID
    assert "toy.csv: 1 of 3 sequence(s)" in capsys.readouterr().err
    with pytest.raises(InputError, match="toy.csv: 1 sequence"):
        encode(CODON, seqs, 8, mode="mlm", overlong="error", where="toy.csv")
    with pytest.raises(InputError, match="no tokens"):
        encode(CODON, ["AT"], 8)


def test_codon_frame_offset():
    enc = encode(CODON, ["GATGAAA"], 8, mode="clm", codon_frame=1)
    assert enc.ids[0, 1:].tolist() == CODON.encode("ATGAAA").tolist()


def test_checkpoint_tokenizer_mismatch(tiny_runs):
    run = load_run(tiny_runs["mlm"])
    check_compatible(run.model, run.tokenizer)
    with pytest.raises(InputError, match="mismatch.*vocab_size=70.*'nuc' has 11"):
        check_compatible(run.model, create_tokenizer("nuc"))


def test_amino_acid_runs_cannot_embed_nucleotide_benchmarks():
    with pytest.raises(InputError, match="mrfp.csv: this run reads amino acids"):
        encode(create_tokenizer("aa"), ["ATGAAA"], 8, where="mrfp.csv")


@pytest.mark.parametrize("mode", ["mlm", "clm"])
def test_batched_embeddings_equal_unpadded_single_rows(tiny_runs, mode):
    run = load_run(tiny_runs[mode])
    rng = np.random.default_rng(0)
    seqs = ["".join(rng.choice(list("ACGT"), 3 * int(n))) for n in rng.integers(2, 40, size=9)]
    enc = encode(run.tokenizer, seqs, 64, mode=mode)
    feats = embed_tokens(run.model, enc, batch_size=4, progress=False)
    for i in range(len(seqs)):
        n = int(enc.mask[i].sum())
        with torch.no_grad():
            alone = run.model.embed(enc.ids[i : i + 1, :n])[0]
        torch.testing.assert_close(feats[i, :n], alone, atol=1e-5, rtol=1e-4)
        assert (feats[i, n:] == 0).all()
    pooled = embed_pooled(run.model, enc, batch_size=3, progress=False)
    torch.testing.assert_close(pooled, mean_pool(feats, enc.mask), atol=1e-5, rtol=1e-4)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("g++") is None, reason="torch.compile on the CPU needs a C++ compiler (g++)")
def test_compiled_embedding_equals_eager(tiny_runs):
    """--compile (inductor, dynamic shapes) gives the eager features up to float32 reordering."""
    run = load_run(tiny_runs["mlm"])
    rng = np.random.default_rng(1)
    seqs = ["".join(rng.choice(list("ACGT"), 3 * int(n))) for n in rng.integers(2, 40, size=12)]
    enc = encode(run.tokenizer, seqs, 64, mode="mlm")
    eager = embed_tokens(run.model, enc, batch_size=4, progress=False)
    compiled = embed_tokens(run.model, enc, batch_size=4, progress=False, compile=True)
    torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("mode", ["mlm", "clm"])
@pytest.mark.parametrize("arch", ["gpt2", "bert", "mamba", "hyena"])
def test_every_backbone_embeds_padded_batches_like_single_rows(arch, mode):
    from helm.models import create_model

    torch.manual_seed(0)
    model = create_model(
        arch,
        vocab_size=70,
        num_layers=2,
        hidden_size=32,
        num_heads=2,
        intermediate_size=64,
        max_seq_len=64,
        bidirectional=mode == "mlm",
    ).eval()
    rng = np.random.default_rng(1)
    seqs = ["".join(rng.choice(list("ACGT"), 3 * int(n))) for n in rng.integers(2, 30, size=6)]
    enc = encode(CODON, seqs, 64, mode=mode)
    feats = embed_tokens(model, enc, batch_size=4, progress=False)
    for i in range(len(seqs)):
        n = int(enc.mask[i].sum())
        with torch.no_grad():
            alone = model.embed(enc.ids[i : i + 1, :n])[0]
        torch.testing.assert_close(feats[i, :n], alone, atol=1e-5, rtol=1e-4)
