"""helm.stats against scipy and brute-force loops over the definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import stats_sim
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


# ------------------------------------------------------------------------ calibration of the loss effect
@pytest.mark.parametrize("shared", [True, False], ids=["predefined-test-set", "split-per-seed"])
@pytest.mark.parametrize("pretrain_sd", [0.0, 0.4], ids=["no-seed-variance", "seed-variance"])
def test_loss_effect_is_calibrated_by_simulation(shared: bool, pretrain_sd: float) -> None:
    """Two losses from the same distribution (null) and with a real difference, 1 to 5 pretraining seeds: where a
    verdict is printed the false-positive rate is 2-8 %, and the interval covers the true difference >= 92 %."""
    rng = np.random.default_rng(7 + int(shared) + int(10 * pretrain_sd))
    y = stats_sim.test_sets(rng, seeds=3, rows=120, shared=shared)
    replicates = 1000
    truth = stats_sim.true_difference(rng, y, 0.25, pretrain_sd)
    for n in (1, 2, 3, 5):
        for effect in (0.0, 0.25):
            grid = stats_sim.simulate(rng, y, replicates, n, effect, pretrain_sd)
            diffs = [stats.loss_effect(*grid.units(r)) for r in range(replicates)]
            if n == 1:  # one seed a side: no interval, no verdict, the difference still shown
                assert all(d.method == stats.ONE_SEED and not d.has_interval for d in diffs)
                assert all(stats.verdict(d) == stats.ONE_SEED and math.isfinite(d.estimate) for d in diffs)
                continue
            assert all(d.has_interval for d in diffs)
            covered = np.mean([d.low <= (truth if effect else 0.0) <= d.high for d in diffs])
            if effect == 0:
                false_positive = np.mean([stats.verdict(d) in ("better", "worse") for d in diffs])
                assert 0.02 <= false_positive <= 0.08, (n, false_positive)
            assert covered >= 0.92, (n, effect, covered, truth)


def test_loss_effect_paired_and_welch_against_scipy() -> None:
    a = {0: 0.71, 1: 0.69, 2: 0.74, 3: 0.70}
    b = {0: 0.68, 1: 0.69, 2: 0.70, 3: 0.66}
    d = stats.loss_effect(a, b)
    diffs = [a[s] - b[s] for s in a]
    want = sps.t.interval(0.95, 3, loc=np.mean(diffs), scale=sps.sem(diffs))
    assert (d.low, d.high) == (pytest.approx(want[0]), pytest.approx(want[1])) and "paired t over 4" in d.method
    b2 = {10: 0.68, 11: 0.69, 12: 0.60}  # other seeds: not paired
    d = stats.loss_effect(a, b2)
    res = sps.ttest_ind(list(a.values()), list(b2.values()), equal_var=False).confidence_interval(0.95)
    assert (d.low, d.high) == (pytest.approx(res.low), pytest.approx(res.high)) and d.method.startswith("Welch")
    assert d.estimate == pytest.approx(np.mean(list(a.values())) - np.mean(list(b2.values())))


def test_no_interval_without_spread_or_with_one_seed() -> None:
    assert stats.t_interval([0.03] * 3)[1] != stats.t_interval([0.03] * 3)[1]  # nan: a zero-width interval is none
    same = stats.loss_effect({0: 0.5, 1: 0.6}, {0: 0.47, 1: 0.57})  # identical paired differences
    assert same.method == stats.NO_SPREAD and stats.verdict(same) == stats.NO_SPREAD
    one = stats.loss_effect({0: 0.9}, {0: 0.1, 1: 0.2})
    assert one.method == stats.ONE_SEED and one.estimate == pytest.approx(0.75)
    with pytest.raises(ValueError):
        stats.loss_effect({}, {0: 0.1})


def test_verdict_orientation() -> None:
    better = stats.Difference(0.05, 0.01, 0.09, (3, 3), "paired t")
    assert stats.verdict(better) == "better" and stats.verdict(better, higher_is_better=False) == "worse"
    assert stats.verdict(stats.Difference(0.0, -0.1, 0.1, (3, 3), "paired t")) == "no clear difference"


def test_power_against_a_simulated_paired_t() -> None:
    rng = np.random.default_rng(3)
    delta, sd, n = 0.03, 0.04, 6
    d = delta + sd * rng.standard_normal((20000, n))
    lo = d.mean(1) - sps.t.ppf(0.975, n - 1) * d.std(1, ddof=1) / np.sqrt(n)
    hi = d.mean(1) + sps.t.ppf(0.975, n - 1) * d.std(1, ddof=1) / np.sqrt(n)
    assert stats.power(delta, sd, n) == pytest.approx(np.mean((lo > 0) | (hi < 0)), abs=0.01)
    k = stats.seeds_for_power(delta, sd)
    assert stats.power(delta, sd, k) >= 0.8 > stats.power(delta, sd, k - 1)
    assert stats.seeds_for_power(0.0, sd) == 0 and math.isnan(stats.power(delta, sd, 1))


def test_row_spread_draws_one_row_sample_for_a_shared_test_set() -> None:
    """Three downstream seeds on one predefined test set with a deterministic head give identical predictions:
    the spread must be that of ONE seed (redrawing rows per seed would shrink it by about sqrt(3))."""
    rng = np.random.default_rng(4)
    y = rng.normal(size=200)
    a, b = y + rng.normal(size=200) * 0.8, y + rng.normal(size=200) * 1.2
    index = np.arange(200)
    one = stats.row_spread({0: stats.SeedPredictions(y, [a], [b], index)}, replicates=3000, seed=1)
    three = stats.row_spread({k: stats.SeedPredictions(y, [a], [b], index) for k in range(3)}, replicates=3000, seed=1)
    assert (three[1] - three[0]) == pytest.approx(one[1] - one[0], rel=0.1)
    lo, hi = _brute_bootstrap(y, a, b, 3000, seed=11)  # and it is the plain paired row bootstrap
    assert one[0] == pytest.approx(lo, abs=0.02) and one[1] == pytest.approx(hi, abs=0.02)
