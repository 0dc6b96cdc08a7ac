"""Lightning pieces of a training run: the step clock, the checkpoint callbacks and the atomic checkpoint I/O.

`helm.train.fit` wires them; each is small and documented here so the trainer setup reads as one screen.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.plugins.io import TorchCheckpointIO

from helm import files, run

if TYPE_CHECKING:
    from helm.config import TrainConfig

PROGRESS_KEY = "helm_progress"  # a checkpoint's training tokens and seconds since the run's first step


class Clock(pl.Callback):
    """Times the training steps themselves (for tokens/s): start-up, the validations during training and the final
    evaluation are left out. The training time and tokens of the processes before a resume travel in the checkpoint
    (``PROGRESS_KEY``), so a resumed run reports the counts of an uninterrupted one (`train_tokens`)."""

    def __init__(self) -> None:
        self.start = self.seconds = self.validating = 0.0
        self.val_start: float | None = None
        self.seconds_before = self.tokens_before = 0.0  # trained before this process, up to its checkpoint

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_validation_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.val_start = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if self.val_start is not None and self.start:  # validations inside the training loop only
            self.validating += time.perf_counter() - self.val_start
        self.val_start = None

    def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.seconds = self._elapsed()

    def _elapsed(self) -> float:
        return self.seconds_before + (time.perf_counter() - self.start - self.validating if self.start else 0.0)

    def train_tokens(self, trainer: pl.Trainer, module: pl.LightningModule) -> float:
        """Tokens trained on by every rank, since the run's first step (every rank calls it: a collective)."""
        tokens = torch.tensor(float(module.tokens_seen), dtype=torch.float64, device=module.device)  # NCCL: on device
        if trainer.world_size > 1:
            tokens = trainer.strategy.reduce(tokens, reduce_op="sum")
        return float(tokens) + self.tokens_before

    def on_save_checkpoint(self, trainer: pl.Trainer, module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        # Lightning dumps the checkpoint on every rank (rank 0 writes it), so the reduction is safe here
        checkpoint[PROGRESS_KEY] = {"train_tokens": self.train_tokens(trainer, module), "train_time_s": self._elapsed()}

    def on_load_checkpoint(self, trainer: pl.Trainer, module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        progress = checkpoint.get(PROGRESS_KEY, {})  # absent from checkpoints written before it was kept
        self.tokens_before = float(progress.get("train_tokens", 0.0))
        self.seconds_before = float(progress.get("train_time_s", 0.0))


class StopAtMaxSteps(pl.Callback):
    """--max-steps, kept here rather than in the Trainer's own `max_steps`: Lightning treats every resume of a
    max_steps run as a restart inside an epoch, so a checkpoint saved at the end of an epoch resumed into an epoch
    of 0 batches (a finished run extended with --epochs trained nothing). A run that stops inside an epoch
    validates at its last update, as one that ends with its epoch does: the best-checkpoint selection sees the final
    weights. Lightning validates when `should_stop` is set at the end of a training batch."""

    def __init__(self, max_steps: int) -> None:
        self.max_steps = max_steps

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.global_step >= self.max_steps:  # a resumed checkpoint that already holds every update asked
            trainer.should_stop = True

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, *args: Any) -> None:
        if trainer.global_step >= self.max_steps:
            trainer.should_stop = True


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary name beside the target and renamed: a run killed mid-save (SIGKILL, a
    Slurm preemption) keeps its previous, complete last.ckpt instead of a truncated one that resume cannot read.
    Written here, not by Lightning's saver: that one stages the file in the system's temporary folder (fsspec), where
    a kill leaves it for good; ours is removed by the next start (`files.remove_temporaries`)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        with files.atomic_path(path) as tmp, open(tmp, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())  # on disk before the rename makes it last.ckpt


def callbacks(cfg: TrainConfig, out: Path) -> tuple[ModelCheckpoint, Clock, list[pl.Callback]]:
    """(the best-checkpoint callback, the clock, every callback of the run)."""
    r = cfg.run
    ckpt_dir = out / run.CHECKPOINT_DIR
    best = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="{epoch}-{step}-{" + r.eval_metric + ":.4f}",
        monitor=r.eval_metric,
        mode=cfg.metric_mode,
        save_top_k=r.checkpoint_hist,
        save_last=True,
        enable_version_counter=False,
    )
    clock = Clock()
    out_list: list[pl.Callback] = [best, clock]
    if cfg.schedule.max_steps > 0:
        out_list.append(StopAtMaxSteps(cfg.schedule.max_steps))
    if r.checkpoint_every_n_steps:  # last.ckpt between validations, so a killed run loses at most N updates
        every = r.checkpoint_every_n_steps
        out_list.append(ModelCheckpoint(ckpt_dir, save_top_k=0, save_last=True, every_n_train_steps=every,
                                        enable_version_counter=False))  # fmt: skip
    if cfg.schedule.early_stop:
        patience = cfg.schedule.patience_epochs
        out_list.append(EarlyStopping(monitor=r.eval_metric, mode=cfg.metric_mode, patience=patience))
    if r.progress_bar:
        out_list.append(TQDMProgressBar(refresh_rate=max(1, r.log_interval)))
    return best, clock, out_list


def plugins() -> list[Any]:
    """Atomic checkpoints; inside a Slurm job, Lightning's Slurm environment with requeue on preemption."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    out: list[Any] = [AtomicCheckpointIO()]
    if SLURMEnvironment.detect():
        out.append(SLURMEnvironment(auto_requeue=True))
    return out


def quiet_lightning() -> None:
    """Drop Lightning's advertisements and a warning that fires whenever `srun` is on PATH (not a Slurm job)."""
    warnings.filterwarnings("ignore", message=".*The `srun` command is available on your system.*")
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*")
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(lambda record: "Tip:" not in str(record.msg))


def rank() -> int:
    """This process's global rank (0 outside distributed runs)."""
    from lightning.pytorch.utilities import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0) or 0)
