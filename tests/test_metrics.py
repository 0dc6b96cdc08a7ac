"""Metrics against per-position Python loops over their definitions."""

from __future__ import annotations

import math

import pytest
import torch

from helm.codons import GENETIC_CODE, SPECIALS, codon_tree, codon_vocab, kmer_vocab, nuc_vocab, translate
from helm.metrics import build_metrics


def _batches(v: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(3):
        logits = torch.randn(4, 9, v, generator=gen) * 3
        labels = torch.randint(0, v, (4, 9), generator=gen)
        # make some predictions right, so accuracy is neither 0 nor 1
        right = torch.rand(4, 9, generator=gen) < 0.4
        logits[right, labels[right]] += 20
        labels[torch.rand(4, 9, generator=gen) < 0.25] = -100
        out.append((logits, labels))
    return out


def _label(token: str) -> str:
    return token if token in SPECIALS else translate(token)


def _brute(batches, vocab, lca) -> dict[str, float]:
    n = correct = syn = 0
    nll = 0.0
    severities = []
    for logits, labels in batches:
        for z, y in zip(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)):
            y = int(y)
            if y == -100:
                continue
            pred = int(torch.argmax(z))
            n += 1
            correct += pred == y
            nll += -float(torch.log_softmax(z.double(), 0)[y])
            if vocab is not None:
                syn += _label(vocab.tokens[pred]) == _label(vocab.tokens[y])
                if pred != y:
                    severities.append(int(lca[pred][y]))
    out = {"acc": correct / n, "ppl": math.exp(nll / n)}
    if vocab is not None:
        out["aa_acc"] = syn / n
        out["mistake_severity"] = sum(severities) / len(severities)
    return out


def _biological_path(token: str) -> list[str]:
    """The true tree written out from the genetic code (root -> codons -> start/coding/stop ...)."""
    if token in SPECIALS:
        return [token, f"special:{token}", "root"]
    if token == "ATG":
        return [token, "start", "codons", "root"]
    if GENETIC_CODE[token] == "*":
        return [token, "stop", "codons", "root"]
    return [token, f"aa:{GENETIC_CODE[token]}", "coding", "codons", "root"]


def _true_lca_height(vocab) -> list[list[int]]:
    """LCA height from the explicit paths: the height of a node is its longest way down to a leaf."""
    height: dict[str, int] = {}
    for token in vocab.tokens:
        for h, node in enumerate(_biological_path(token)):
            height[node] = max(height.get(node, 0), h)
    out = []
    for a in vocab.tokens:
        row = []
        for b in vocab.tokens:
            common = next(node for node in _biological_path(a) if node in _biological_path(b))
            row.append(0 if a == b else height[common])
        out.append(row)
    return out


@pytest.mark.parametrize("hierarchy", ["true", "random"])
def test_codon_metrics_match_definitions(hierarchy: str) -> None:
    """Severity is scored on the true biological tree whatever tree a run trains on (so a random-hierarchy run
    is comparable with the others); the training tree's value is added under its own name."""
    vocab = codon_vocab()
    true_lca = _true_lca_height(vocab)
    metrics = build_metrics(vocab, hierarchy=hierarchy, seed=11, prefix="val/")
    batches = _batches(len(vocab))
    for logits, labels in batches:
        metrics.update(logits, labels)
    got = {k: float(v) for k, v in metrics.compute().items()}
    want = _brute(batches, vocab, true_lca)
    if hierarchy != "true":
        want["mistake_severity_train_tree"] = _brute(batches, vocab, codon_tree(vocab, hierarchy, seed=11).lca_height)[
            "mistake_severity"
        ]
        assert want["mistake_severity_train_tree"] != want["mistake_severity"]
    assert set(got) == {f"val/{k}" for k in want}
    for key, value in want.items():
        assert got[f"val/{key}"] == pytest.approx(value, rel=1e-6), key
    assert 0 < want["acc"] < want["aa_acc"] < 1  # synonymous mistakes exist in this sample


def test_synonymous_mistake_counts_for_aa_accuracy_and_is_mild() -> None:
    vocab = codon_vocab()
    metrics = build_metrics(vocab)
    logits = torch.zeros(2, len(vocab))
    logits[0, vocab.index["CTT"]] = 5  # label CTG (Leu): a synonymous mistake
    logits[1, vocab.index["TAA"]] = 5  # label AAA (Lys): a stop instead of an amino acid
    labels = torch.tensor([vocab.index["CTG"], vocab.index["AAA"]])
    assert GENETIC_CODE["CTT"] == GENETIC_CODE["CTG"] == "L"
    out = metrics(logits, labels)
    assert float(out["acc"]) == 0.0 and float(out["aa_acc"]) == 0.5
    # LCA(CTT, CTG) = aa:L, height 1; LCA(TAA, AAA) = codons, height 3 (codons -> coding -> aa -> codon)
    assert float(out["mistake_severity"]) == pytest.approx((1 + 3) / 2)


def test_6mer_metrics_use_peptides() -> None:
    vocab = kmer_vocab(6)
    metrics = build_metrics(vocab)
    assert set(metrics.keys()) == {"acc", "ppl", "aa_acc", "mistake_severity"}
    logits = torch.zeros(1, len(vocab))
    logits[0, vocab.index["CTTAAA"]] = 5
    out = metrics(logits, torch.tensor([vocab.index["CTGAAG"]]))  # LK == LK
    assert float(out["aa_acc"]) == 1.0 and float(out["mistake_severity"]) == 1.0


def test_vocab_without_hierarchy_gets_token_metrics_only() -> None:
    vocab = nuc_vocab()
    metrics = build_metrics(vocab)
    assert set(metrics.keys()) == {"acc", "ppl"}
    batches = _batches(len(vocab))
    for logits, labels in batches:
        metrics.update(logits, labels)
    want = _brute(batches, None, None)
    got = metrics.compute()
    assert float(got["acc"]) == pytest.approx(want["acc"])
    assert float(got["ppl"]) == pytest.approx(want["ppl"], rel=1e-6)


def test_perplexity_is_exp_xe_and_no_positions_is_safe() -> None:
    vocab = codon_vocab()
    metrics = build_metrics(vocab)
    logits = torch.zeros(3, len(vocab))  # uniform prediction: perplexity = V
    out = metrics(logits, torch.tensor([7, 8, -100]))
    assert float(out["ppl"]) == pytest.approx(len(vocab), rel=1e-6)
    metrics.reset()
    out = metrics(logits, torch.full((3,), -100))
    assert all(torch.isfinite(v) for v in out.values())
    with pytest.raises(ValueError, match="do not match"):
        metrics(logits, torch.tensor([1, 2]))
