"""Uncertainty for the tables: mean ± sd, t intervals and a paired, hierarchical bootstrap of Spearman differences.

A comparison "loss L minus XE" on one downstream task (docs/PROTOCOL.md "Statistics") has three sources of noise:
the pretraining seed, the downstream seed (head initialisation, and the split where a dataset has no predefined
one) and the finite test set. ``paired_bootstrap`` resamples all three: in each replicate it draws downstream
seeds with replacement (shared by both models: they are paired through the same seed and split), then test rows
with replacement within each drawn seed (the same rows for both models), then pretraining seeds with replacement
within each model; the statistic is the mean over the drawn seeds of (mean Spearman of L) - (mean Spearman of
XE). The 95 % interval is the 2.5 / 97.5 percentile of the replicates. With one pretraining seed per model that
level is silent, so the interval does not hold pretraining variance: the tables show the XE seed-vs-seed
difference as a yardstick for it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


def t975(df: int) -> float:
    """The 97.5 % quantile of Student's t with ``df`` degrees of freedom (nan below 1)."""
    from scipy.stats import t

    return float(t.ppf(0.975, df)) if df >= 1 else math.nan


def mean_sd(values: Sequence[float]) -> tuple[float, float, int]:
    """(mean, sample sd (nan for one value), n) of the finite values."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if len(x) == 0:
        return math.nan, math.nan, 0
    return float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else math.nan, len(x)


def t_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, low, high): 95 % t interval of the mean; (mean, nan, nan) below two values."""
    mean, sd, n = mean_sd(values)
    if n < 2:
        return mean, math.nan, math.nan
    half = t975(n - 1) * sd / math.sqrt(n)
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


@dataclass
class SeedPredictions:
    """One downstream seed of one comparison: the test targets and each pretraining seed's test predictions
    for both models (``a`` = the loss under test, ``b`` = XE). Both models saw the same test rows."""

    y: np.ndarray  # [n]
    a: Sequence[np.ndarray]  # per pretraining seed of model a: [n]
    b: Sequence[np.ndarray]  # per pretraining seed of model b: [n]


@dataclass
class Difference:
    estimate: float  # mean Spearman of a - mean Spearman of b (over downstream and pretraining seeds)
    low: float
    high: float
    n_seeds: int  # downstream seeds
    n_pretrain: tuple[int, int]  # pretraining seeds of a, b
    method: str


def paired_bootstrap(
    seeds: Mapping[int, SeedPredictions], replicates: int = 2000, seed: int = 0, level: float = 0.95
) -> Difference:
    """The difference of mean test Spearman, a - b, with a percentile interval (module docstring)."""
    keys = sorted(seeds)
    if not keys:
        raise ValueError("no downstream seeds to compare")
    rng = np.random.default_rng(seed)
    point = float(np.mean([_mean_spearman(seeds[k].y, seeds[k].a) - _mean_spearman(seeds[k].y, seeds[k].b)
                           for k in keys]))  # fmt: skip
    per_seed = np.empty((replicates, len(keys)))
    drawn = rng.integers(0, len(keys), size=(replicates, len(keys)))  # downstream seeds, paired
    for j, key in enumerate(keys):
        s = seeds[key]
        rows = rng.integers(0, len(s.y), size=(replicates, len(s.y)))  # test rows, the same for a and b
        y = s.y[rows]
        diff = _resampled_mean(y, s.a, rows, rng) - _resampled_mean(y, s.b, rows, rng)
        per_seed[:, j] = diff
    stat = np.take_along_axis(per_seed, drawn, axis=1).mean(axis=1)
    stat = stat[np.isfinite(stat)]
    alpha = (1 - level) / 2
    low, high = np.quantile(stat, [alpha, 1 - alpha]) if len(stat) else (math.nan, math.nan)
    n_pre = (len(seeds[keys[0]].a), len(seeds[keys[0]].b))
    method = f"paired bootstrap over {len(keys)} downstream seed(s), test rows and pretraining seeds ({replicates})"
    return Difference(point, float(low), float(high), len(keys), n_pre, method)


def _mean_spearman(y: np.ndarray, preds: Sequence[np.ndarray]) -> float:
    return float(np.mean([spearman_rows(y, p) for p in preds]))


def _resampled_mean(y: np.ndarray, preds: Sequence[np.ndarray], rows: np.ndarray, rng: np.random.Generator):
    """Per replicate: the mean over pretraining seeds drawn with replacement of Spearman on the drawn rows."""
    scores = np.stack([spearman_rows(y, np.asarray(p)[rows]) for p in preds], axis=1)  # [replicates, seeds]
    pick = rng.integers(0, scores.shape[1], size=scores.shape)
    return np.take_along_axis(scores, pick, axis=1).mean(axis=1)
