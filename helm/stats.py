"""Uncertainty for the tables: mean ± sd, the loss effect with the pretraining seed as the unit, test-row noise.

A comparison "loss A minus XE" on one downstream task (docs/PROTOCOL.md "Statistics") has three sources of noise:
the pretraining seed, the downstream seed (head initialisation, and the split where a dataset has no predefined
one) and the finite test set. Downstream seeds and test rows are *shared* by every model (the same split seed gives
the same split, predefined test sets are one set), so they cannot tell how much a model's score would move with
another pretraining seed. The experimental unit of a loss effect is therefore the pretraining seed:

- each pretraining seed s of a loss gets one score u_s: its headline metric averaged over the downstream seeds
  common to both losses (the test rows are averaged inside the metric);
- ``loss_effect``: with the same seeds on both sides (n >= 2), a paired t interval over d_s = u^A_s - u^B_s
  (the same seed gives both losses the same initialisation and data order, so the pairs share noise); with other
  seeds, a Welch interval (n >= 2 per side). Assumptions: units independent, d_s (or u_s) roughly normal, the
  test sets and splits fixed (the claim is about these benchmarks' test sets). One seed on a side leaves the
  pretraining variance unestimated: no interval, no verdict (``n/a``). No spread at all (identical units) is no
  estimate of it either.
- ``row_spread``: what the test rows and downstream seeds alone add, the models held fixed: a paired bootstrap of
  the test rows (one draw for every seed that shares its test set) and of the downstream seeds. Shown beside the
  loss effect as what it is -- not an interval for the loss effect.

``power`` and ``seeds_for_power``: the chance that the paired t interval excludes 0 for a true difference
``delta`` when paired differences have sd ``sd`` (noncentral t), and the seeds needed for a target power.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

LEVEL = 0.95
ONE_SEED = "n/a: one pretraining seed"
NO_SPREAD = "n/a: no spread between pretraining seeds"


def t_quantile(df: float, level: float = LEVEL) -> float:
    """The two-sided ``level`` quantile of Student's t with ``df`` degrees of freedom (nan below 1)."""
    from scipy.stats import t

    return float(t.ppf(0.5 + level / 2, df)) if df >= 1 else math.nan


def mean_sd(values: Sequence[float]) -> tuple[float, float, int]:
    """(mean, sample sd (nan for one value), n) of the finite values."""
    x = _finite(values)
    if len(x) == 0:
        return math.nan, math.nan, 0
    return float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else math.nan, len(x)


def t_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float, float]:
    """(mean, low, high): t interval of the mean; (mean, nan, nan) below two values or with no spread (a zero-width
    interval would turn any difference into a verdict)."""
    mean, sd, n = mean_sd(values)
    if n < 2 or not sd > 0:
        return mean, math.nan, math.nan
    half = t_quantile(n - 1, level) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def format_mean_sd(mean: float, sd: float, digits: int = 3) -> str:
    """'0.712 ± 0.013'; one value: '0.712'; nothing: ''."""
    if mean is None or not math.isfinite(mean):
        return ""
    if sd is None or not math.isfinite(sd):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def spearman_rows(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Spearman correlation of each row pair (..., n): Pearson correlation of average ranks; nan if constant."""
    from scipy.stats import rankdata

    y, pred = np.broadcast_arrays(np.asarray(y, np.float64), np.asarray(pred, np.float64))
    ry, rp = rankdata(y, axis=-1), rankdata(pred, axis=-1)  # average ranks for ties
    ry = ry - ry.mean(-1, keepdims=True)
    rp = rp - rp.mean(-1, keepdims=True)
    den = np.sqrt((ry * ry).sum(-1) * (rp * rp).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (ry * rp).sum(-1) / den, np.nan)


# ------------------------------------------------------------------------------------------- the loss effect
@dataclass(frozen=True)
class Difference:
    """A minus B with its interval; ``low``/``high`` are nan (and ``method`` starts with 'n/a') without one."""

    estimate: float  # mean unit score of A minus that of B
    low: float
    high: float
    n_pretrain: tuple[int, int]  # pretraining seeds (units) of A, B
    method: str

    @property
    def has_interval(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)


def loss_effect(a: Mapping[int, float], b: Mapping[int, float], level: float = LEVEL) -> Difference:
    """A minus B from per-pretraining-seed unit scores ``{seed: score}`` (module docstring): paired t when both
    sides have the same n >= 2 seeds, Welch with n >= 2 on each side, else no interval."""
    a = {s: float(v) for s, v in a.items() if v is not None and math.isfinite(v)}
    b = {s: float(v) for s, v in b.items() if v is not None and math.isfinite(v)}
    if not a or not b:
        raise ValueError("loss_effect needs at least one finite unit score on each side")
    n = (len(a), len(b))
    estimate = float(np.mean(list(a.values())) - np.mean(list(b.values())))
    if min(n) < 2:
        return Difference(estimate, math.nan, math.nan, n, ONE_SEED)
    if a.keys() == b.keys():
        _, low, high = t_interval([a[s] - b[s] for s in sorted(a)], level)
        method = f"paired t over {n[0]} pretraining seeds"
    else:
        low, high = _welch(np.array(list(a.values())), np.array(list(b.values())), level)
        method = f"Welch t over {n[0]} vs {n[1]} pretraining seeds"
    if not math.isfinite(low):
        return Difference(estimate, math.nan, math.nan, n, NO_SPREAD)
    return Difference(estimate, low, high, n, method)


def _welch(x: np.ndarray, y: np.ndarray, level: float) -> tuple[float, float]:
    vx, vy = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    se2 = vx + vy
    if not se2 > 0:
        return math.nan, math.nan
    df = se2**2 / (vx**2 / (len(x) - 1) + vy**2 / (len(y) - 1))  # Welch-Satterthwaite
    d, half = x.mean() - y.mean(), t_quantile(df, level) * math.sqrt(se2)
    return float(d - half), float(d + half)


def verdict(diff: Difference, higher_is_better: bool = True) -> str:
    """'better' / 'worse' when the interval excludes 0, 'no clear difference', or the reason there is none."""
    if not diff.has_interval:
        return diff.method
    low, high = (diff.low, diff.high) if higher_is_better else (-diff.high, -diff.low)
    return "better" if low > 0 else "worse" if high < 0 else "no clear difference"


# ------------------------------------------------------------------------------ noise of rows and seeds
@dataclass
class SeedPredictions:
    """One downstream seed: the test targets, the row ids (seeds with equal ids share one test set) and each
    pretraining seed's test predictions for both models (``a``, ``b``)."""

    y: np.ndarray  # [n]
    a: Sequence[np.ndarray]  # per pretraining seed of model a: [n]
    b: Sequence[np.ndarray]  # per pretraining seed of model b: [n]
    index: np.ndarray | None = None  # row ids of the test set; None: a test set of its own


def row_spread(
    seeds: Mapping[int, SeedPredictions], replicates: int = 2000, seed: int = 0, level: float = LEVEL
) -> tuple[float, float]:
    """Percentile range of A minus B (mean Spearman over all pretraining and downstream seeds) when only the test
    rows and the downstream seeds are redrawn: rows once per replicate for every seed sharing a test set, seeds
    with replacement (paired: both models get the same draw). The pretraining seeds are held fixed."""
    keys = sorted(seeds)
    if not keys:
        raise ValueError("no downstream seeds to resample")
    rng = np.random.default_rng(seed)
    draws: dict[bytes, np.ndarray] = {}  # one row draw per distinct test set
    per_seed = np.empty((replicates, len(keys)))
    for j, key in enumerate(keys):
        s = seeds[key]
        ident = np.asarray(s.index).tobytes() if s.index is not None else f"own:{key}".encode()
        if ident not in draws:
            draws[ident] = rng.integers(0, len(s.y), size=(replicates, len(s.y)))
        rows = draws[ident]
        y = s.y[rows]
        per_seed[:, j] = _mean_over(y, s.a, rows) - _mean_over(y, s.b, rows)
    picked = rng.integers(0, len(keys), size=(replicates, len(keys)))
    stat = np.take_along_axis(per_seed, picked, axis=1).mean(axis=1)
    stat = stat[np.isfinite(stat)]
    if not len(stat):
        return math.nan, math.nan
    tail = (1 - level) / 2
    low, high = np.quantile(stat, [tail, 1 - tail])
    return float(low), float(high)


def _mean_over(y: np.ndarray, preds: Sequence[np.ndarray], rows: np.ndarray) -> np.ndarray:
    return np.mean([spearman_rows(y, np.asarray(p)[rows]) for p in preds], axis=0)


# ------------------------------------------------------------------------------------------------ power
def power(delta: float, sd: float, n: int, level: float = LEVEL) -> float:
    """Chance that the paired t interval over ``n`` pretraining seeds excludes 0 when the true mean difference
    is ``delta`` and paired differences have sd ``sd`` (two-sided, noncentral t)."""
    from scipy.stats import nct

    if n < 2 or not sd > 0:
        return math.nan
    df, crit = n - 1, t_quantile(n - 1, level)
    ncp = delta / (sd / math.sqrt(n))
    return float(nct.sf(crit, df, ncp) + nct.cdf(-crit, df, ncp))


def seeds_for_power(delta: float, sd: float, target: float = 0.8, level: float = LEVEL, most: int = 1000) -> int:
    """The fewest pretraining seeds per loss (paired) whose ``power`` reaches ``target``; 0 if ``most`` do not."""
    if not (sd > 0 and delta != 0):
        return 0
    return next((n for n in range(2, most + 1) if power(delta, sd, n, level) >= target), 0)


def _finite(values: Sequence[float]) -> np.ndarray:
    return np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
