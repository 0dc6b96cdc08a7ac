"""Metrics against brute-force implementations of their definitions."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from helm.codons import CODONS
from helm.downstream.metrics import (
    codon_usage,
    codon_usage_distance,
    frechet_distance,
    gc_content,
    has_internal_stop,
    internal_diversity,
    is_valid_orf,
    levenshtein,
    neighbour_precision_recall,
    pca_project,
    regression_metrics,
)


def levenshtein_brute(a: str, b: str) -> int:
    d = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) + 1):
        d[i][0] = i
    for j in range(len(b) + 1):
        d[0][j] = j
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
    return d[-1][-1]


def test_levenshtein_matches_dynamic_programming():
    rng = np.random.default_rng(0)
    for _ in range(200):
        a = "".join(rng.choice(list("ACGT"), rng.integers(0, 15)))
        b = "".join(rng.choice(list("ACGT"), rng.integers(0, 15)))
        assert levenshtein(a, b) == levenshtein_brute(a, b), (a, b)


def test_internal_diversity_is_mean_offdiagonal_distance():
    seqs = ["ATGAAA", "ATGCCCTAA", "GG", "ATGAAT"]
    pairs = [levenshtein_brute(a, b) for a, b in itertools.combinations(seqs, 2)]
    assert internal_diversity(seqs) == pytest.approx(np.mean(pairs))


def ranks(x):
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    r[order] = np.arange(len(x))
    return r


def test_regression_metrics_match_definitions():
    rng = np.random.default_rng(1)
    y = rng.normal(size=50)
    p = y + rng.normal(size=50)
    m = regression_metrics(y, p)
    assert m["pearson"] == pytest.approx(np.corrcoef(y, p)[0, 1])
    assert m["spearman"] == pytest.approx(np.corrcoef(ranks(y), ranks(p))[0, 1])  # no ties in continuous data
    assert m["r2"] == pytest.approx(1 - ((y - p) ** 2).sum() / ((y - y.mean()) ** 2).sum())
    assert np.isnan(regression_metrics(y, np.ones(50))["spearman"])


def test_orf_validity_and_gc():
    assert is_valid_orf("ATGAAATAA") and is_valid_orf("ATGAAA")
    assert not is_valid_orf("ATGTAAAAA")  # internal stop
    assert not is_valid_orf("CTGAAA")  # no start
    assert not is_valid_orf("ATGAA")  # not a multiple of 3
    assert has_internal_stop("CCCTGACCC") and not has_internal_stop("CCCCCCTGA") and not has_internal_stop("")
    assert gc_content("GGCA") == 0.75


def test_codon_usage_distance():
    a, b = ["AAAAAA"], ["AAACCC"]
    ua = codon_usage(a)
    assert ua[CODONS.index("AAA")] == 1 and ua.sum() == 1
    assert codon_usage_distance(a, b) == pytest.approx(0.5)
    assert codon_usage_distance(a, a) == 0


def test_frechet_distance_closed_forms():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(4000, 1))
    b = rng.normal(loc=3, scale=2, size=(4000, 1))
    # 1-D Gaussians: (mu1 - mu2)^2 + (s1 - s2)^2, with the sample moments
    expected = (a.mean() - b.mean()) ** 2 + (a.std(ddof=1) - b.std(ddof=1)) ** 2
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
    x = rng.normal(size=(300, 4))
    assert abs(frechet_distance(x, x)) < 1e-6


def reference_pca_frechet(generated: np.ndarray, reference: np.ndarray, k: int = 4) -> float:
    """The paper's Fréchet distance written independently: PCA by an eigendecomposition of the reference
    covariance, Fréchet distance with the symmetric form Tr(S_g + S_r - 2 (S_r^1/2 S_g S_r^1/2)^1/2), both square
    roots from eigendecompositions (numpy only; helm takes scipy's sqrtm of S_g S_r)."""
    mu = reference.mean(0)
    w, v = np.linalg.eigh(np.cov(reference, rowvar=False))
    basis = v[:, np.argsort(w)[::-1][:k]]
    g, r = (generated - mu) @ basis, (reference - mu) @ basis
    s_g, s_r = np.cov(g, rowvar=False), np.cov(r, rowvar=False)
    w_r, v_r = np.linalg.eigh(s_r)
    root = v_r @ np.diag(np.sqrt(w_r.clip(0))) @ v_r.T
    trace_cross = np.sqrt(np.linalg.eigvalsh(root @ s_g @ root).clip(0)).sum()
    return float(((g.mean(0) - r.mean(0)) ** 2).sum() + np.trace(s_g + s_r) - 2 * trace_cross)


def test_pca_is_fitted_on_the_reference_by_default():
    """Default: 4 components fitted on the reference alone (the paper's protocol), so the reference's coordinates
    do not depend on the samples; the union fit (--pca-fit both, our earlier default) moves them."""
    rng = np.random.default_rng(5)
    scale = np.array([5, 4, 3, 2.5, 0.5, 0.5, 0.4, 0.3, 0.2, 0.1])
    reference = rng.normal(size=(200, 10)) * scale
    close = rng.normal(size=(150, 10)) * scale + 0.3
    # the same samples plus rows far out in the reference's quiet directions: they would rotate a union fit
    wide = np.concatenate([close, rng.normal(size=(50, 10)) * np.r_[np.zeros(4), np.full(6, 20.0)]])
    for generated in (close, wide):
        got = frechet_distance(*pca_project(generated, reference, 4))
        assert got == pytest.approx(reference_pca_frechet(generated, reference), rel=1e-6)
    ref_a = pca_project(close, reference, 4)[1]
    ref_b = pca_project(wide, reference, 4)[1]
    np.testing.assert_allclose(ref_a, ref_b)  # the space does not depend on the samples
    union_a = pca_project(close, reference, 4, reference_only=False)[1]
    union_b = pca_project(wide, reference, 4, reference_only=False)[1]
    assert np.abs(np.abs(union_a) - np.abs(union_b)).max() > 1  # the union fit does
    assert frechet_distance(*pca_project(wide, reference, 8, reference_only=False)) != pytest.approx(
        reference_pca_frechet(wide, reference)
    )


def test_the_two_pca_fits_can_rank_runs_differently():
    """Why the default follows the paper: run A matches the reference in its main directions but spreads in
    directions the reference barely uses; run B is shifted in a main direction. Reference-fitted PCA (4
    components) ranks A first; the union fit with 8 components (our earlier default) ranks B first."""
    rng = np.random.default_rng(6)
    scale = np.r_[np.full(4, 3.0), np.full(6, 0.1)]
    reference = rng.normal(size=(300, 10)) * scale
    run_a = rng.normal(size=(300, 10)) * np.r_[np.full(4, 3.0), np.full(6, 2.0)]
    run_b = rng.normal(size=(300, 10)) * scale + np.r_[1.5, np.zeros(9)]
    paper = [frechet_distance(*pca_project(run, reference, 4)) for run in (run_a, run_b)]
    union = [frechet_distance(*pca_project(run, reference, 8, reference_only=False)) for run in (run_a, run_b)]
    assert paper[0] < paper[1] and union[0] > union[1]


def test_pca_and_neighbours():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(20, 10)), rng.normal(size=(30, 10))
    pa, pb = pca_project(a, b, 3)
    assert pa.shape == (20, 3) and pb.shape == (30, 3)
    assert neighbour_precision_recall(a, a, 1e-9) == (1.0, 1.0)

    def cos_dist(u, v):
        return 1 - u @ v / np.linalg.norm(u) / np.linalg.norm(v)

    t = 0.4
    p, r = neighbour_precision_recall(a, b, t)
    assert p == np.mean([min(cos_dist(u, v) for v in b) <= t for u in a])
    assert r == np.mean([min(cos_dist(u, v) for u in a) <= t for v in b])
    assert 0 < p < 1 or 0 < r < 1  # the threshold is inside the range, so the check is not trivial
