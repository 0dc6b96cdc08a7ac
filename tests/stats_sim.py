"""A simulated loss comparison with the structure of a real grid, for calibration tests of helm.stats.

Each test row has a target y; a backbone of loss L and pretraining seed s has a quality q (its own pretraining
draw: ``pretrain_sd``; half of it shared by both losses' seed s, as the same seed gives the same initialisation
and data order); a downstream seed k fits a head whose test predictions are q * y + noise. The score of one
evaluation is the test Spearman; downstream seeds and test sets are shared by every backbone, as in the workflow
(one predefined test set, or one split per downstream seed)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from helm import stats


@dataclass
class Grid:
    y: np.ndarray  # [K, rows]: the test targets of each downstream seed (the same rows K times if shared)
    pred: np.ndarray  # [R, 2, n, K, rows]: replicate, loss (a, b), pretraining seed, downstream seed, row
    score: np.ndarray  # [R, 2, n, K] test Spearman

    def units(self, r: int) -> tuple[dict[int, float], dict[int, float]]:
        """Replicate r's unit scores {pretraining seed: mean over downstream seeds} of a and b."""
        u = self.score[r].mean(axis=-1)
        return dict(enumerate(u[0])), dict(enumerate(u[1]))


def test_sets(rng: np.random.Generator, seeds: int, rows: int, shared: bool) -> np.ndarray:
    y = rng.standard_normal((1 if shared else seeds, rows))
    return np.repeat(y, seeds, axis=0) if shared else y


def simulate(rng, y, replicates: int, n: int, effect: float, pretrain_sd: float, head_sd: float = 1.0) -> Grid:
    seeds = y.shape[0]
    shared = rng.standard_normal((replicates, 1, n, 1, 1))  # seed s: the same for both losses
    own = rng.standard_normal((replicates, 2, n, 1, 1))
    q = 1.0 + effect * np.array([1.0, 0.0])[None, :, None, None, None]
    q = q + pretrain_sd * np.sqrt(0.5) * (shared + own)
    pred = q * y[None, None, None] + head_sd * rng.standard_normal((replicates, 2, n, seeds, y.shape[1]))
    return Grid(y, pred, stats.spearman_rows(np.broadcast_to(y, pred.shape), pred))


def true_difference(rng, y, effect: float, pretrain_sd: float, draws: int = 10000) -> float:
    """E[unit a - unit b] for these test sets, by Monte Carlo over many pretraining seeds."""
    g = simulate(rng, y, 1, draws, effect, pretrain_sd)
    return float(g.score[0, 0].mean() - g.score[0, 1].mean())


def calibration(replicates: int = 2000, seed: int = 0) -> list[dict]:
    """False-positive rate (null) and coverage (a real difference) of helm.stats.loss_effect per design."""
    rows = []
    rng = np.random.default_rng(seed)
    for shared in (True, False):
        for pretrain_sd in (0.0, 0.4):
            y = test_sets(rng, seeds=3, rows=120, shared=shared)
            truth = true_difference(rng, y, 0.25, pretrain_sd)
            for n in (2, 3, 5):
                null = simulate(rng, y, replicates, n, 0.0, pretrain_sd)
                real = simulate(rng, y, replicates, n, 0.25, pretrain_sd)
                d0 = [stats.loss_effect(*null.units(r)) for r in range(replicates)]
                d1 = [stats.loss_effect(*real.units(r)) for r in range(replicates)]
                rows.append({"test set": "predefined" if shared else "split per seed", "pretrain sd": pretrain_sd,
                             "seeds per loss": n,
                             "false positives": np.mean([stats.verdict(d) in ("better", "worse") for d in d0]),
                             "coverage": np.mean([d.low <= truth <= d.high for d in d1]),
                             "power": np.mean([stats.verdict(d) == "better" for d in d1])})  # fmt: skip
    return rows


if __name__ == "__main__":  # python tests/stats_sim.py: the table in docs/PROTOCOL.md "Statistics"
    for row in calibration():
        print("  ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
