"""The fit/sweep protocol on data with a known signal, and the selection rule (validation only)."""

from __future__ import annotations

import re

import numpy as np
import torch

from helm.downstream.harness import FitConfig, OneHotEncoder, Split, sweep


def toy_splits(seed=0, n=(120, 40, 40), length=12, dim=6):
    """Target = mean of channel 0 over the real tokens (+ noise): a linear probe can learn it."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for size in n:
        x = torch.randn(size, length, dim, generator=g)
        lengths = torch.randint(3, length + 1, (size,), generator=g)
        mask = torch.arange(length)[None] < lengths[:, None]
        x = x * mask.unsqueeze(-1)
        y = (x[..., 0].sum(1) / lengths).numpy() + 0.05 * np.random.default_rng(seed).normal(size=size)
        out.append(Split(x, mask, y.astype(np.float64)))
    return out


def test_linear_probe_learns_signal_and_selection_uses_validation():
    train, val, test = toy_splits()
    base = FitConfig(head="linear", epochs=30, patience=30)
    res = sweep(train, val, test, 6, base, batch_sizes=[16, 64], lrs=[1e-2, 1e-6], progress=False)
    assert res["metrics"]["spearman"] > 0.9  # test score of the selected model
    best = max(res["grid"], key=lambda g: g["val"]["spearman"])
    assert res["selected"]["batch_size"] == best["batch_size"] and res["selected"]["lr"] == best["lr"]
    assert res["metrics"]["val_spearman"] == best["val"]["spearman"]
    assert res["selected"]["lr"] == 1e-2  # 1e-6 cannot move the weights in 30 epochs


def test_early_stopping_stops_and_keeps_best_epoch():
    train, val, test = toy_splits(seed=1)
    res = sweep(
        train, val, test, 6, FitConfig(head="linear", epochs=50, patience=2, lr=1e-6), [32], [1e-6], progress=False
    )
    sel = res["selected"]
    assert sel["epochs_run"] < 50 and sel["epochs_run"] - 1 - sel["best_epoch"] == 2


def test_one_hot_encoder_is_identity_rows():
    enc = OneHotEncoder(5)
    ids = torch.tensor([[0, 4, 2]])
    assert enc.embed(ids).argmax(-1).tolist() == [[0, 4, 2]] and enc.embed(ids).sum() == 3


def test_sweep_shows_one_progress_bar_over_the_head_grid_with_its_eta(capsys):
    """A grid of head fits takes minutes (README: `helm probe --run ... --dataset mrfp`): the sweep shows a bar over
    the grid points with elapsed<remaining time, above each fit's epoch bar (issue 22, point 7)."""
    train, val, test = toy_splits()
    base = FitConfig(head="linear", epochs=3, patience=3, seed=0)
    sweep(train, val, test, 6, base, batch_sizes=[16, 64], lrs=[1e-2, 1e-3], progress=True)
    err = capsys.readouterr().err
    final = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("head grid")][-1]
    assert "4/4" in final and "100%" in final
    assert re.search(r"\[\d\d:\d\d<\d\d:\d\d", final), final  # elapsed<remaining: the ETA
    assert "best_val_spearman=" in final
