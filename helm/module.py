"""The LightningModule: backbone + loss + metrics, timm optimizer / scheduler / EMA / clipping.

The module takes the typed `helm.config.TrainConfig`. Its checkpoint hyper-parameters hold that config as plain
flag: value data (plus the model config and the tokenizer's vocabulary), so a checkpoint is self-describing, loads
with ``weights_only=True`` and a resume can check the vocabulary before training starts.
"""

from __future__ import annotations

import copy
import re
import warnings
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
import torch
from torch import nn

from helm.codons import IGNORE_INDEX, Vocab

if TYPE_CHECKING:
    from helm.config import ScheduleArgs, TrainConfig


def _layer_id(name: str, num_layers: int) -> int:
    """Depth of a parameter for layer-wise lr decay: embeddings 0, block i -> i + 1, head / final norm last."""
    match = re.search(r"\.(\d+)\.", name)
    if match:
        return min(int(match.group(1)) + 1, num_layers)
    if any(k in name for k in ("wte", "wpe", "embed")):
        return 0
    return num_layers + 1


def param_groups(model: nn.Module, weight_decay: float, layer_decay: float | None, num_layers: int) -> list[dict]:
    """Weight decay only on matrices (not biases, norms, 1-d tensors); `lr_scale` per depth when layer-decaying.

    timm's own layer-decay grouping needs a `group_matcher` on the model; ours is by parameter name.
    """
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decay = p.ndim > 1 and weight_decay > 0
        layer = _layer_id(name, num_layers) if layer_decay is not None else 0
        group = groups.setdefault((layer, decay), {"params": [], "weight_decay": weight_decay if decay else 0.0})
        if layer_decay is not None:
            group["lr_scale"] = layer_decay ** (num_layers + 1 - layer)
        group["params"].append(p)
    return list(groups.values())


def resumable_plateau(scheduler):
    """Make timm's PlateauLRScheduler checkpoint its whole state, so a resumed `--sched plateau` run continues.

    timm saves only the best metric and epoch (and will not add more): the patience / cooldown counters, the last
    lrs and the noise-free lr to restore would start over on resume. Re-classing the scheduler that
    `create_scheduler_v2` built keeps timm's own argument mapping (warmup, noise range, mode) in one place.
    """
    from timm.scheduler import PlateauLRScheduler  # timm is imported lazily throughout helm

    class ResumablePlateauLRScheduler(PlateauLRScheduler):
        def state_dict(self) -> dict[str, Any]:
            # all of ReduceLROnPlateau's state (its settings too, as timm's other schedulers save theirs) + the noise
            return super().state_dict() | {"plateau": self.lr_scheduler.state_dict(), "restore_lr": self.restore_lr}

        def load_state_dict(self, state_dict: dict[str, Any]) -> None:
            super().load_state_dict(state_dict)  # best / last_epoch: all that a checkpoint from plain timm holds
            if "plateau" in state_dict:
                self.lr_scheduler.load_state_dict(state_dict["plateau"])
                self.restore_lr = state_dict["restore_lr"]

    assert type(scheduler) is PlateauLRScheduler, type(scheduler)
    scheduler.__class__ = ResumablePlateauLRScheduler  # the same object, only state_dict / load_state_dict change
    return scheduler


def create_scheduler(
    optimizer, s: ScheduleArgs, seed: int, mode: str = "min", updates_per_epoch: int = 1
) -> tuple[Any, int]:
    """timm's create_scheduler_v2 from the schedule settings: (scheduler, epochs to train). As in timm's train.py,
    the epochs to train are --epochs plus --cooldown-epochs, the further cycles of --lr-cycle-limit (cosine, tanh,
    poly) and a --warmup-prefix: training only --epochs would never reach them. `mode`: the plateau direction."""
    from timm.scheduler import create_scheduler_v2  # timm is imported lazily throughout helm

    with warnings.catch_warnings():
        # timm's deprecation warning says the plateau state is not checkpointed; resumable_plateau saves it
        warnings.filterwarnings("ignore", message="PlateauLRScheduler is deprecated", category=FutureWarning)
        return create_scheduler_v2(
            optimizer,
            sched=s.sched,
            num_epochs=s.epochs,
            decay_epochs=s.decay_epochs,
            decay_milestones=s.decay_milestones,
            cooldown_epochs=s.cooldown_epochs,
            patience_epochs=s.patience_epochs,
            decay_rate=s.decay_rate,
            min_lr=s.min_lr,
            warmup_lr=s.warmup_lr,
            warmup_epochs=s.warmup_epochs,
            warmup_prefix=s.warmup_prefix,
            noise=s.lr_noise,
            noise_pct=s.lr_noise_pct,
            noise_std=s.lr_noise_std,
            noise_seed=seed,
            cycle_mul=s.lr_cycle_mul,
            cycle_decay=s.lr_cycle_decay,
            cycle_limit=s.lr_cycle_limit,
            k_decay=s.lr_k_decay,
            plateau_mode=mode,
            step_on_epochs=not s.sched_on_updates,
            updates_per_epoch=updates_per_epoch,
        )


def training_epochs(s: ScheduleArgs) -> int:
    """Epochs to train for schedule `s` (see `create_scheduler`); --sched none: --epochs."""
    if s.sched == "none":
        return s.epochs
    probe = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)  # the length needs no real optimizer
    epoch_schedule = copy.copy(s)  # not dataclasses.replace: a per-update warmup fraction is valid here
    epoch_schedule.sched_on_updates = False
    return int(create_scheduler(probe, epoch_schedule, seed=0)[1])


class HelmModule(pl.LightningModule):
    """`config`: the run's TrainConfig; `vocab`: the tokenizer's vocabulary (checked on resume);
    `updates_per_epoch`: optimizer updates per schedule epoch (per-update schedules and --start-epoch)."""

    def __init__(self, config: TrainConfig, vocab: Vocab, updates_per_epoch: int = 1):
        super().__init__()
        from helm.losses import build_loss
        from helm.metrics import build_metrics
        from helm.models import create_model

        self.cfg = config
        self.vocab = vocab
        self.updates_per_epoch = updates_per_epoch
        self.lr = config.lr
        model_config = config.model_config(len(vocab))
        # plain data only: checkpoints load with weights_only=True (helm.run.load_checkpoint)
        self.save_hyperparameters({
            "config": config.flat(), "model_config": model_config.to_dict(), "vocab_kind": vocab.kind,
            "vocab_tokens": list(vocab.tokens), "vocab_k": vocab.k, "updates_per_epoch": updates_per_epoch,
            "lr": self.lr,
        })  # fmt: skip
        self.model = create_model(config.model_name, **model_config.to_dict())
        o = config.objective
        self.loss_fn = build_loss(o.loss, vocab, hxe_alpha=o.hxe_alpha, soft_labels_beta=o.soft_labels_beta,
                                  hierarchy=o.hierarchy, seed=config.run.seed, normalize=o.hxe_normalize)  # fmt: skip
        self.val_metrics = build_metrics(vocab, hierarchy=o.hierarchy, seed=config.run.seed)
        self.test_metrics = copy.deepcopy(self.val_metrics)
        # EMA lives outside the module tree: it may stay on the CPU (--model-ema-force-cpu) and must not be
        # touched by the optimizer or DDP; its state travels in the checkpoint via on_save_checkpoint.
        self._ema: list = []
        if config.ema.model_ema:
            from timm.utils import ModelEmaV3

            device = torch.device("cpu") if config.ema.model_ema_force_cpu else None
            self._ema.append(ModelEmaV3(self.model, decay=config.ema.model_ema_decay, device=device))
        # --compile: the compiled wrapper shares the model's parameters; kept out of the module tree (a list) so
        # state dicts and checkpoints hold the plain model's keys, loadable with or without --compile
        self._compiled: list = [torch.compile(self.model)] if config.run.compile else []
        self._loss_sums: dict[str, tuple] = {}  # val/test: (sum of position losses, positions) this epoch
        self._tokens: torch.Tensor | None = None  # real input tokens trained on, kept on the device (see tokens_seen)
        self._plateau_metric: float | None = None  # --sched plateau: this epoch's validation metric

    # ------------------------------------------------------------------------------------------ helpers
    @property
    def tokens_seen(self) -> int:
        """Real (non-pad) input tokens this process trained on, for tokens/s (one host sync, when read)."""
        return 0 if self._tokens is None else int(self._tokens)

    @property
    def ema(self):
        return self._ema[0] if self._ema else None

    def eval_model(self) -> nn.Module:
        """The weights validation and export use: the EMA when enabled."""
        return self.ema.module if self.ema is not None else self.model

    def forward(self, batch: dict[str, torch.Tensor], model: nn.Module | None = None) -> torch.Tensor:
        model = self.model if model is None else model
        if model is self.model and self._compiled:
            model = self._compiled[0]
        position_ids = batch.get("position_ids") if self.cfg.data.position_ids else None
        return model(batch["input_ids"], attention_mask=batch["attention_mask"], position_ids=position_ids)

    # -------------------------------------------------------------------------------------------- steps
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if self._second_order():
            # the fused attention kernels have no double backward; the math one (same result) has
            from torch.nn.attention import SDPBackend, sdpa_kernel

            with sdpa_kernel(SDPBackend.MATH):
                logits = self(batch)
        else:
            logits = self(batch)
        loss = self.loss_fn(logits.float(), batch["labels"])
        # summed on the device: reading it every step (int()) would make the host wait for the GPU each step
        count = batch["attention_mask"].sum().detach()
        self._tokens = count if self._tokens is None else self._tokens + count
        world = self.trainer.world_size if self._trainer is not None else 1
        if world > 1:
            # The loss is a mean over this rank's target positions, and DDP averages gradients over ranks: the
            # mean of means would weight a rank's tokens by 1 / its own count. Rescale so the update equals
            # single-process training on the global batch (mean over all target positions).
            count = (batch["labels"] != IGNORE_INDEX).sum().float()
            total = self.trainer.strategy.reduce(count.clone(), reduce_op="sum")  # all_reduce is in place
            loss = loss * count * world / total.clamp(min=1.0)
        # sync_dist mean of the rescaled per-rank losses = the global per-token mean
        self.log("train_loss", loss, prog_bar=True, sync_dist=world > 1, batch_size=batch["input_ids"].shape[0])
        # the unscaled lr (with --layer-decay the head's group has lr_scale 1, the others less)
        self.log("lr", max(g["lr"] for g in self.optimizers().param_groups), batch_size=1)
        return loss

    def _second_order(self) -> bool:
        return bool(getattr(self.trainer.optimizers[0], "is_second_order", False))

    def backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        # second-order timm optimizers (--opt adahessian) differentiate the gradients again: keep their graph
        if not self._second_order():
            return super().backward(loss, *args, **kwargs)
        with warnings.catch_warnings():
            # the parameter <-> gradient cycle it warns about is broken by zero_grad, which sets the grads to None
            warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph=True")
            super().backward(loss, *args, create_graph=True, **kwargs)

    def on_train_start(self) -> None:
        if self.ema is not None and not self.cfg.ema.model_ema_force_cpu:
            self.ema.module.to(self.device)
        if self.trainer.ckpt_path and self._stateless_schedule():
            # a resume: the optimizer state holds the lr of the old schedule; set this run's lr at this position
            self._step_schedule(self.current_epoch)

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        # Update the EMA right after each optimizer update (once per update under gradient accumulation),
        # before any checkpoint callback of this batch runs, so a saved checkpoint holds a consistent pair.
        super().optimizer_step(*args, **kwargs)
        if self.ema is not None:
            self.ema.update(self.model, step=self.global_step + 1)

    def _eval_step(self, batch: dict[str, torch.Tensor], metrics, prefix: str) -> torch.Tensor:
        model = self.eval_model()
        device = next(model.parameters()).device
        if device != batch["input_ids"].device:  # CPU-resident EMA: run it there, score where the metrics live
            logits = self({k: v.to(device) for k, v in batch.items()}, model=model).to(batch["input_ids"].device)
        else:
            logits = self(batch, model=model)
        logits = logits.float()
        loss = self.loss_fn(logits, batch["labels"])
        metrics.update(logits, batch["labels"])
        # the epoch's loss is the mean over every scored position of every rank: sums here, divided at epoch end
        # (Lightning's sync_dist would average the ranks' means, which differ in their position counts)
        count = (batch["labels"] != IGNORE_INDEX).sum()
        total, n = self._loss_sums.get(prefix, (0.0, 0))
        self._loss_sums[prefix] = (total + loss.detach().double() * count, n + count)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._eval_step(batch, self.val_metrics, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._eval_step(batch, self.test_metrics, "test")

    def _log_metrics(self, metrics, prefix: str) -> None:
        values = metrics.compute()
        # every rank takes part in the reduction, even one without batches (a collective must be matched)
        total, n = (
            torch.as_tensor(v, dtype=torch.float64, device=self.device) for v in self._loss_sums.pop(prefix, (0, 0))
        )
        if self.trainer.world_size > 1:
            total, n = (self.trainer.strategy.reduce(v, reduce_op="sum") for v in (total, n))
        if n > 0:
            self.log(f"{prefix}_loss", (total / n).float(), prog_bar=True, sync_dist=False)
        self.log_dict({f"{prefix}_{k}": v for k, v in values.items()}, sync_dist=False)
        metrics.reset()

    def on_validation_epoch_start(self) -> None:
        self._loss_sums.pop("val", None)
        self.val_metrics.to(self.device)

    def on_validation_epoch_end(self) -> None:
        self._log_metrics(self.val_metrics, "val")

    def on_test_epoch_start(self) -> None:
        self._loss_sums.pop("test", None)

    def on_test_epoch_end(self) -> None:
        self._log_metrics(self.test_metrics, "test")

    # ------------------------------------------------------------------------------- optimizer, schedule
    def configure_optimizers(self):
        from timm.optim import create_optimizer_v2

        o, s = self.cfg.optim, self.cfg.schedule
        kwargs: dict[str, Any] = {}
        if o.opt_eps is not None:
            kwargs["eps"] = o.opt_eps
        if o.opt_betas is not None:
            kwargs["betas"] = tuple(o.opt_betas)
        groups = param_groups(self.model, o.weight_decay, o.layer_decay, self.cfg.model.num_layers)
        optimizer = create_optimizer_v2(
            groups, opt=o.opt, lr=self.lr, weight_decay=o.weight_decay, momentum=o.momentum, **kwargs
        )
        if s.sched == "none":
            # timm applies the --layer-decay lr_scale of each group only through a scheduler: apply it once here
            for group in optimizer.param_groups:
                group["lr"] = self.lr * group.get("lr_scale", 1.0)
            return optimizer
        scheduler, _ = create_scheduler(optimizer, s, self.cfg.run.seed, self.cfg.metric_mode, self.updates_per_epoch)
        if s.sched == "plateau":
            scheduler = resumable_plateau(scheduler)
        if s.start_epoch and not s.sched_on_updates:
            scheduler.step(s.start_epoch)
        elif s.start_epoch:  # per-update schedule: start at the first update of --start-epoch
            scheduler.step_update(num_updates=self._update_offset())
        interval = "step" if s.sched_on_updates else "epoch"
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}

    def _schedule_epoch(self, lightning_epochs: int) -> float:
        # with --epoch-repeats, `repeats` Lightning epochs make one schedule epoch; a whole epoch goes as an int,
        # which timm's --lr-noise needs (it seeds its generator with noise_seed + epoch)
        repeats = self.cfg.schedule.epoch_repeats or 1.0
        epoch = lightning_epochs / repeats + (self.cfg.schedule.start_epoch or 0)
        return int(epoch) if float(epoch).is_integer() else epoch

    def _stateless_schedule(self) -> bool:
        # timm's schedulers other than plateau keep no progress, only their settings (lr = f(epoch or update))
        return self.cfg.schedule.sched not in ("none", "plateau")

    def _step_schedule(self, lightning_epochs: int) -> None:
        scheduler = self.lr_schedulers()
        if self.cfg.schedule.sched_on_updates:
            scheduler.step_update(num_updates=self.global_step + self._update_offset())
        else:
            scheduler.step(epoch=self._schedule_epoch(lightning_epochs))

    def _update_offset(self) -> int:
        """Updates before this run's first one in the schedule: --start-epoch whole schedule epochs (as timm)."""
        return (self.cfg.schedule.start_epoch or 0) * self.updates_per_epoch

    def lr_scheduler_step(self, scheduler, metric: Any) -> None:
        # timm schedulers take the epoch / update count explicitly
        if self.cfg.schedule.sched_on_updates or self.cfg.schedule.sched != "plateau":
            self._step_schedule(self.current_epoch + 1)  # plateau: stepped in on_train_epoch_end, after validation

    def on_validation_end(self) -> None:
        if self.cfg.schedule.sched == "plateau" and self.trainer.state.fn == "fit" and not self.trainer.sanity_checking:
            metric = self.trainer.callback_metrics.get(self.cfg.run.eval_metric)
            self._plateau_metric = None if metric is None else float(metric)

    def on_train_epoch_end(self) -> None:
        # Lightning steps epoch schedules before the epoch's validation (the metric would be an epoch late, and
        # absent after a resume) and its ReduceLROnPlateau path after the epoch-end checkpoint is saved; stepping
        # here uses this epoch's validation (if one ran) and comes before ModelCheckpoint saves on train epoch end.
        if self.cfg.schedule.sched == "plateau":
            self.lr_schedulers().step(epoch=self._schedule_epoch(self.current_epoch + 1), metric=self._plateau_metric)
            self._plateau_metric = None

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        # timm's dispatch covers norm, value and agc (adaptive clipping, which Lightning lacks); gradients are
        # already unscaled here under fp16 AMP.
        if self.cfg.optim.clip_grad is not None:
            from timm.utils import dispatch_clip_grad

            dispatch_clip_grad(self.model.parameters(), self.cfg.optim.clip_grad, mode=self.cfg.optim.clip_mode)

    # ------------------------------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.ema is not None:
            checkpoint["ema_state_dict"] = self.ema.module.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self._stateless_schedule():
            # such a scheduler's state is its settings: this run's win (a finished run resumed with more --epochs
            # follows the longer schedule, as timm's train.py rebuilds its scheduler on resume); on_train_start
            # sets the lr of the resumed position
            checkpoint["lr_schedulers"] = [{} for _ in checkpoint.get("lr_schedulers", [])]
        if self.ema is not None:
            if "ema_state_dict" not in checkpoint:
                raise ValueError("--model-ema is on but the checkpoint holds no EMA weights")
            self.ema.module.load_state_dict(checkpoint["ema_state_dict"])
