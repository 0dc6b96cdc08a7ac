"""The property-prediction protocol shared by `helm probe` and `helm baseline`.

Inputs are either precomputed frozen embeddings ``[N, L, D]`` (``Features``) or token ids that a trainable
encoder turns into embeddings on the fly (``Tokens``: fine-tuning, or the one-hot baseline). A head is
trained with Adam (separate backbone/head learning rates), MSE on standardized targets,
ReduceLROnPlateau on validation Spearman, early stopping; the epoch is chosen on validation. ``sweep`` runs
a grid of (batch size, head lr) and selects on validation Spearman; only the selected model ever sees the
test rows. The loop itself (``train_head``) also trains `helm annotate`'s per-token classifier.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from helm.downstream.heads import build_head
from helm.downstream.metrics import regression_metrics
from helm.splits import SPLITS

if TYPE_CHECKING:
    from helm.downstream.datasets import DownstreamData


@dataclass
class FitConfig:
    head: str = "textcnn"
    epochs: int = 100
    patience: int = 15  # early stopping, epochs without a better validation Spearman
    batch_size: int = 32
    lr: float = 1e-3  # head learning rate
    backbone_lr: float = 1e-5  # fine-tuning only
    weight_decay: float = 0.0
    plateau_patience: int | None = 5  # ReduceLROnPlateau on validation Spearman (None: a fixed lr)
    plateau_factor: float = 0.5
    eval_batch_size: int = 128
    seed: int = 0


@dataclass
class Split:
    """One part of a dataset: embeddings or token ids, the real-token mask and the targets."""

    x: torch.Tensor  # float [N, L, D] (frozen features) or long [N, L] (token ids)
    mask: torch.Tensor  # bool [N, L]
    y: np.ndarray  # float [N]

    def __len__(self) -> int:
        return len(self.y)

    def batch(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = self.mask[rows]
        width = max(int(mask.sum(1).max()), 1)  # trim the padding this batch does not need
        x = self.x[rows, :width]
        return (x.float() if x.is_floating_point() else x), mask[:, :width]


def splits_of(data: DownstreamData, x: torch.Tensor, mask: torch.Tensor, by_rows: bool = False) -> dict[str, Split]:
    """train/val/test parts. ``x``/``mask`` hold one row per kept sequence of ``data``, or, with ``by_rows``, one
    per row of the dataset as loaded (a features file, indexed through ``data.rows``)."""
    out = {}
    for part in SPLITS:
        idx = data.indices(part)
        rows = torch.as_tensor(data.rows[idx] if by_rows else idx)
        out[part] = Split(x[rows], mask[rows], data.targets[idx])
    return out


class OneHotEncoder(nn.Module):
    """Token ids -> one-hot vectors (the one-hot TextCNN baseline); no parameters."""

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.register_buffer("eye", torch.eye(vocab_size), persistent=False)

    def embed(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.eye[ids]


class Regressor(nn.Module):
    def __init__(self, head: nn.Module, encoder: nn.Module | None = None) -> None:
        super().__init__()
        self.head = head
        self.encoder = encoder

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.encoder is not None:
            x = self.encoder.embed(x, mask)
        return self.head(x, mask)


@torch.no_grad()
def predict(model: Regressor, data: Split, batch_size: int) -> np.ndarray:
    model.eval()
    out = []
    for start in range(0, len(data), batch_size):
        x, mask = data.batch(torch.arange(start, min(start + batch_size, len(data))))
        out.append(model(x, mask).float().cpu())
    return torch.cat(out).numpy().astype(np.float64)


def _score(metrics: dict[str, float]) -> float:
    s = metrics["spearman"]
    return -math.inf if s is None or not math.isfinite(s) else s


@dataclass
class FitResult:
    val: dict[str, float]
    best_epoch: int
    epochs_run: int
    state: dict[str, torch.Tensor] = field(repr=False)
    history: list[float] = field(default_factory=list, repr=False)


def fit(
    train: Split,
    val: Split,
    dim: int,
    cfg: FitConfig,
    encoder: nn.Module | None = None,
    progress: bool = True,
) -> tuple[Regressor, FitResult]:
    """Train one head (and the encoder's trainable parameters, if any); keep the best validation epoch."""
    torch.manual_seed(cfg.seed)
    model = Regressor(build_head(cfg.head, dim), encoder)
    mean, std = float(train.y.mean()), float(train.y.std()) or 1.0
    y_train = torch.tensor((train.y - mean) / std, dtype=torch.float32)
    groups = [{"params": list(model.head.parameters()), "lr": cfg.lr}]
    enc_params = [p for p in encoder.parameters() if p.requires_grad] if encoder is not None else []
    if enc_params:
        groups.append({"params": enc_params, "lr": cfg.backbone_lr})

    def loss(rows: torch.Tensor) -> torch.Tensor:
        x, mask = train.batch(rows)
        return nn.functional.mse_loss(model(x, mask), y_train[rows])

    def validate() -> float:
        return regression_metrics(val.y, predict(model, val, cfg.eval_batch_size))["spearman"]

    trained = train_head(model, groups, len(train), loss, validate, cfg, min_rows=2,
                         desc=f"fit bs={cfg.batch_size} lr={cfg.lr:g}", progress=progress)  # fmt: skip
    model.target_mean, model.target_std = mean, std  # predictions are de-standardized by `evaluate`
    val_metrics = evaluate(model, val, cfg.eval_batch_size)
    return model, FitResult(val_metrics, *trained)


def train_head(
    model: nn.Module,
    groups: list[dict],
    n_train: int,
    loss: Callable[[torch.Tensor], torch.Tensor],
    validate: Callable[[], float],
    cfg: FitConfig,
    min_rows: int = 1,
    desc: str = "fit",
    progress: bool = False,
) -> tuple[int, int, dict[str, torch.Tensor], list[float]]:
    """The head trainer of `helm probe`, `helm baseline` and `helm annotate`: Adam over parameter ``groups``,
    ``cfg.epochs`` epochs of shuffled batches (seeded by ``cfg.seed``; a batch under ``min_rows`` rows is skipped
    when there are more), ReduceLROnPlateau on the validation score when ``cfg.plateau_patience`` is set, early
    stopping after ``cfg.patience`` epochs without a better one. ``loss(rows)``: the loss of training rows;
    ``validate()``: the validation score (higher is better; NaN counts as the worst). Loads the best epoch's
    weights into ``model``; returns (best epoch, epochs run, its state, the score per epoch)."""
    opt = torch.optim.Adam(groups, weight_decay=cfg.weight_decay)
    sched = None
    if cfg.plateau_patience is not None:
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=cfg.plateau_factor,
                                                           patience=cfg.plateau_patience)  # fmt: skip
    gen = torch.Generator().manual_seed(cfg.seed)
    best, best_epoch, best_state, since, history = -math.inf, -1, None, 0, []
    bar = tqdm(range(cfg.epochs), desc=desc, disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        perm = torch.randperm(n_train, generator=gen)
        for start in range(0, n_train, cfg.batch_size):
            rows = perm[start : start + cfg.batch_size]
            if len(rows) < min_rows and n_train > 1:  # a 1-row batch gives no useful signal with dropout
                continue
            value = loss(rows)
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()
        raw = validate()
        score = raw if math.isfinite(raw) else -math.inf  # NaN (a constant prediction) counts as the worst
        history.append(raw)
        if sched is not None:
            sched.step(raw if math.isfinite(raw) else -1.0)
        if score > best or best_state is None:
            best, best_epoch, since = score, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            since += 1
            if since >= cfg.patience:
                break
        bar.set_postfix(val=f"{raw:.3f}", best=f"{best:.3f}")
    model.load_state_dict(best_state)
    return best_epoch, epoch + 1, best_state, history


def predict_targets(model: Regressor, data: Split, batch_size: int = 128) -> np.ndarray:
    """Predictions on the targets' own scale (the head is trained on standardised targets)."""
    return predict(model, data, batch_size) * model.target_std + model.target_mean


def evaluate(model: Regressor, data: Split, batch_size: int = 128) -> dict[str, float]:
    return regression_metrics(data.y, predict_targets(model, data, batch_size))


def sweep(
    train: Split,
    val: Split,
    test: Split,
    dim: int,
    base: FitConfig,
    batch_sizes: list[int],
    lrs: list[float],
    make_encoder=None,
    progress: bool = True,
) -> dict:
    """Grid over (batch size, head lr); select on validation Spearman; test only the selected model.

    ``make_encoder()`` returns a fresh trainable encoder per grid point (fine-tuning starts from the same
    pretrained weights every time), or None for frozen features.
    """
    grid, best_model, best_cfg, best_fit = [], None, None, None
    # one bar over the grid, with its ETA (a grid of TextCNN fits takes minutes), above each fit's epoch bar
    points = tqdm([(bs, lr) for bs in batch_sizes for lr in lrs], desc="head grid", unit="fit", disable=not progress)
    for bs, lr in points:
        cfg = FitConfig(**{**asdict(base), "batch_size": int(bs), "lr": float(lr)})
        encoder = make_encoder() if make_encoder else None
        model, res = fit(train, val, dim, cfg, encoder, progress)
        grid.append({"batch_size": bs, "lr": lr, "val": res.val, "best_epoch": res.best_epoch})
        if best_fit is None or _score(res.val) > _score(best_fit.val):
            best_model, best_cfg, best_fit = model, cfg, res
        else:
            del model
        points.set_postfix(best_val_spearman=f"{_score(best_fit.val):.3f}")
    test_pred = predict_targets(best_model, test, base.eval_batch_size)
    test_metrics = regression_metrics(test.y, test_pred)
    return {
        "metrics": {**test_metrics, **{f"val_{k}": v for k, v in best_fit.val.items()}},  # unprefixed = test
        "selected": {
            "batch_size": best_cfg.batch_size,
            "lr": best_cfg.lr,
            "best_epoch": best_fit.best_epoch,
            "epochs_run": best_fit.epochs_run,
        },
        "grid": grid,
        "model": best_model,
        "test_pred": test_pred,
    }


def grid_rows(grid: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The grid as the JSON records it: batch size, lr, best epoch and validation Spearman per point."""
    return [{k: g[k] for k in ("batch_size", "lr", "best_epoch")} | {"val_spearman": g["val"]["spearman"]}
            for g in grid]  # fmt: skip


def copy_encoder(model: nn.Module, finetune: str, lora_r: int = 8, lora_alpha: float = 16.0) -> nn.Module:
    """A trainable copy of a backbone: every weight (``full``) or LoRA adapters only (``lora``)."""
    from helm.downstream.lora import apply_lora

    enc = copy.deepcopy(model)
    if finetune == "full":
        for p in enc.parameters():
            p.requires_grad_(True)
    elif finetune == "lora":
        apply_lora(enc, r=lora_r, alpha=lora_alpha)
    else:
        raise ValueError(f"finetune must be full or lora here, got {finetune!r}")
    return enc
