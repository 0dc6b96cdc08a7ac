"""helm.stats against scipy and brute-force loops over the definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from helm import stats


def test_spearman_rows_equals_scipy_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 6, size=(5, 40)).astype(float)  # many ties
    p = y + rng.normal(size=(5, 40))
    p[:, :7] = p[:, [0]]  # ties in the predictions too
    got = stats.spearman_rows(y, p)
    want = [sps.spearmanr(a, b)[0] for a, b in zip(y, p)]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert math.isnan(stats.spearman_rows(np.ones(5), np.arange(5.0)))  # constant: undefined


def test_mean_sd_and_t_interval():
    values = [0.61, 0.65, 0.58]
    mean, sd, n = stats.mean_sd(values)
    assert (mean, n) == (pytest.approx(np.mean(values)), 3) and sd == pytest.approx(np.std(values, ddof=1))
    m, lo, hi = stats.t_interval(values)
    want = sps.t.interval(0.95, 2, loc=np.mean(values), scale=sps.sem(values))
    assert (lo, hi) == (pytest.approx(want[0]), pytest.approx(want[1]))
    assert math.isnan(stats.t_interval([0.5])[1]) and stats.mean_sd([None, float("nan")])[2] == 0
    assert stats.format_mean_sd(0.71234, 0.0131) == "0.712 ± 0.013" and stats.format_mean_sd(0.5, math.nan) == "0.500"


def _brute_bootstrap(y, a, b, replicates, seed):
    """One seed, one pretraining seed per model: resample test rows with a plain loop and scipy."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(replicates):
        rows = rng.integers(0, len(y), len(y))
        out.append(sps.spearmanr(y[rows], a[rows])[0] - sps.spearmanr(y[rows], b[rows])[0])
    return np.quantile(out, [0.025, 0.975])


def test_paired_bootstrap_matches_a_brute_force_resampling():
    rng = np.random.default_rng(1)
    y = rng.normal(size=150)
    a, b = y + rng.normal(size=150) * 0.8, y + rng.normal(size=150) * 1.2
    diff = stats.paired_bootstrap({0: stats.SeedPredictions(y, [a], [b])}, replicates=3000, seed=5)
    assert diff.estimate == pytest.approx(sps.spearmanr(y, a)[0] - sps.spearmanr(y, b)[0], abs=1e-12)
    lo, hi = _brute_bootstrap(y, a, b, 3000, seed=11)  # independent draws: agree up to Monte Carlo error
    assert diff.low == pytest.approx(lo, abs=0.02) and diff.high == pytest.approx(hi, abs=0.02)
    assert diff.n_seeds == 1 and diff.n_pretrain == (1, 1)


def test_paired_bootstrap_pairs_rows_and_pools_seeds():
    rng = np.random.default_rng(2)
    seeds = {}
    for s in range(3):
        y = rng.normal(size=120)
        same = y + rng.normal(size=120)
        seeds[s] = stats.SeedPredictions(y, [same, same], [same])
    diff = stats.paired_bootstrap(seeds, replicates=500)
    # identical predictions: every paired replicate is exactly 0 (an unpaired resampling would scatter)
    assert diff.estimate == 0 and diff.low == 0 and diff.high == 0 and diff.n_pretrain == (2, 1)
    # a clearly better model: the interval excludes 0 and holds the estimate
    for s, sp in seeds.items():
        seeds[s] = stats.SeedPredictions(sp.y, [sp.y + rng.normal(size=120) * 0.3], sp.b)
    diff = stats.paired_bootstrap(seeds, replicates=500)
    assert 0 < diff.low < diff.estimate < diff.high
    want = np.mean([sps.spearmanr(s.y, s.a[0])[0] - sps.spearmanr(s.y, s.b[0])[0] for s in seeds.values()])
    assert diff.estimate == pytest.approx(want, abs=1e-12)
