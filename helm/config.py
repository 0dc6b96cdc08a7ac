"""The typed configuration of a training run: one tree of small dataclasses, the single source of truth.

``TrainConfig`` = backbone name and preset + `DataArgs` + `helm.models.ModelConfig` + `LossArgs` + `OptimArgs` +
`ScheduleArgs` + `EMAArgs` + `RunArgs`. Each field has its default, its type (``Literal`` for choices) and, in the
docstring under it, its help text; `helm.args.add_dataclass` turns them into the flags of `helm train` (every seed
flag of the HELM train.py keeps its flat name: ``--lr``, not ``--optim.lr``). Value checks live in each class's
``__post_init__`` (one place each); checks across groups in `TrainConfig.__post_init__`; checks that need a
registry (backbones, timm optimizers) in `check_registries`.

A run's resolved ``config.yaml`` is `TrainConfig.flat()` (flag: value), its ``tags`` and a ``derived`` section,
and reads back with `TrainConfig.from_flat`, so it is a valid ``--config`` (see docs/ARCHITECTURE.md,
"Configuration"); `sections` lays the same values out as the config tree (the workflow's request files).
"""

from __future__ import annotations

import dataclasses
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from helm.args import ConfigError
from helm.losses import LOSSES
from helm.models.config import ModelConfig
from helm.run import TAGS
from helm.tokenizers import CODON_TOKENIZERS, LEARNED, TOKENIZERS, create_tokenizer

# metric name -> better direction; `--eval-metric` picks one, `--val-metric-mode` defaults from it
EVAL_METRICS = {
    "val_loss": "min",
    "val_acc": "max",
    "val_ppl": "min",
    "val_aa_acc": "max",
    "val_mistake_severity": "min",
}
REMOVED_BACKENDS = {"ddp2", "horovod", "dp", "ddp_cpu"}  # gone from Lightning 2.x
MASKING_STRATEGIES = ("single", "double", "span")
MASK_REPLACE = ("mask", "bert")  # what a selected MLM position becomes (helm/data.py)
# ModelConfig fields that are not flags: the vocabulary comes from the tokenizer, the pad id from helm.codons
MODEL_DERIVED = ("vocab_size", "pad_token_id")
TAG_TYPES = (str, int, float, bool, type(None))


def _at_least(owner: Any, minimum: float, *names: str, none_ok: bool = False) -> None:
    for name in names:
        value = getattr(owner, name)
        if not (value is None and none_ok) and value < minimum:
            raise ConfigError(name, value, f"must be >= {minimum:g}")


def _within(owner: Any, name: str, low: float, high: float, closed: str = "[)") -> None:
    value = getattr(owner, name)
    ok = (low <= value if closed[0] == "[" else low < value) and (value <= high if closed[1] == "]" else value < high)
    if not ok:
        raise ConfigError(name, value, f"must lie in {closed[0]}{low:g}, {high:g}{closed[1]}")


@dataclass
class DataArgs:
    """Data: files, tokenization, masking, batches."""

    data_dir: str | None = None
    """directory with the raw data files, or an already prepared directory (has summary.json; then it is used as
    is)"""
    train_file: str | None = None
    """training file inside --data_dir (extension --file_extension if none)"""
    val_file: str | None = None
    """validation file; without it a seeded 5% split of --train_file (helm.prepare)"""
    test_file: str | None = None
    """test file; without it a seeded 5% split of --train_file (helm.prepare)"""
    file_extension: str = "txt"
    """data file format: txt (one sequence a line), csv, tsv, fasta, csv.gz ..."""
    column_name: str | None = None
    """column holding the sequences in csv/tsv files"""
    masking_strategy: Literal[MASKING_STRATEGIES] = "single"
    """MLM masking: single tokens, double (pairs) or spans"""
    masking_ratio: float = 0.15
    """share of tokens selected for the MLM loss"""
    mask_replace: Literal[MASK_REPLACE] = "mask"
    """what a selected MLM training token becomes: mask (always <mask>, the HELM reference) or bert (80/10/10
    <mask>/random/unchanged); validation and test always use <mask> [beyond the seed]"""
    data_type: Literal["nuc", "codon", "aa"] = "nuc"
    """what the sequences are: nuc (nucleotides, tokenized by --tokenizer, default 3mer), codon (in-frame CDS,
    forces the 3mer tokenizer), aa (amino acids, one token per residue; OAS files give their translated CDS; XE loss
    only: the hierarchies are codon trees)"""
    tokenizer: Literal[TOKENIZERS] | None = None
    """tokenizer (default from --data-type: 3mer, aa for aa)"""
    vocab_size: int | None = None
    """for learned tokenizers (bpe/wp/ug): the vocabulary size to learn (default 256). For fixed ones it follows
    from the tokenizer (3mer: 70) and a different value is an error"""
    overlap: int = 0
    """overlap between consecutive k-mers (stride k - overlap)"""
    position_ids: bool = False
    """feed explicit position ids to the model (restart at 0 in every sequence) instead of letting it count
    positions itself"""
    mode: Literal["mlm", "clm"] = "mlm"
    """mlm (bidirectional, masked) or clm (causal, next token)"""
    batch_size: int = 64
    """batch size per device (global batch = this x devices x nodes x grad-accum-steps)"""
    num_samples: int = -1
    """use only the first N sequences of each split: train, val, test (-1 = all)"""
    group_by_length: bool = False
    """batch training sequences of similar length (seeded shuffle, sorted within chunks of 50 batches per rank,
    batch order shuffled): far fewer pads per batch; changes the data order, so off by default [beyond the seed]"""

    def __post_init__(self) -> None:
        _within(self, "masking_ratio", 0.0, 1.0, "(]")
        _at_least(self, 1, "batch_size")
        _at_least(self, 0, "overlap")
        if self.num_samples != -1 and self.num_samples < 1:
            raise ConfigError("num_samples", self.num_samples, "-1 (all) or >= 1")
        if self.data_type == "aa" and self.tokenizer not in (None, "aa"):
            raise ConfigError("tokenizer", self.tokenizer, "--data-type aa means the aa tokenizer (one token per "
                              "residue)")  # fmt: skip
        if self.data_type != "aa" and self.tokenizer == "aa":
            raise ConfigError("tokenizer", "aa", f"reads amino acids: add --data-type aa (not {self.data_type})")
        if self.data_type == "codon" and self.tokenizer not in (None, "3mer", "codon"):
            raise ConfigError("tokenizer", self.tokenizer, "--data-type codon means the 3mer tokenizer")
        if self.vocab_size is not None and self.tokenizer_name not in LEARNED:
            size = len(create_tokenizer(self.tokenizer_name, self.overlap))
            if self.vocab_size != size:
                raise ConfigError("vocab_size", self.vocab_size, f"the {self.tokenizer_name} tokenizer has {size} "
                                  "tokens; drop the flag or give the matching value")  # fmt: skip

    @property
    def tokenizer_name(self) -> str:
        """The tokenizer this run uses (``codon`` is the 3mer one)."""
        name = self.tokenizer or ("aa" if self.data_type == "aa" else "3mer")
        return "3mer" if name == "codon" else name


@dataclass
class LossArgs:
    """Loss: the training objective and its codon hierarchy."""

    loss: Literal[LOSSES] = "XE"
    """training loss"""
    hxe_alpha: float = 0.2
    """HXE alpha: larger = more weight on coarse (top-level) decisions"""
    soft_labels_beta: float = 15.0
    """soft-label beta: larger = sharper targets"""
    hierarchy: Literal["true", "random"] = "true"
    """codon hierarchy for HXE / soft labels (random: seeded by --seed)"""
    hxe_normalize: bool = True
    """normalize HXE level weights by Z over all tree nodes (the reference) [beyond the seed]"""


@dataclass
class OptimArgs:
    """Optimizer (timm's create_optimizer_v2)."""

    opt: str = "adamw"
    """timm optimizer name (create_optimizer_v2)"""
    opt_eps: float | None = None
    """optimizer epsilon (default: the optimizer's)"""
    opt_betas: list[float] | None = None
    """optimizer betas (default: the optimizer's)"""
    momentum: float = 0.9
    """momentum (SGD-type optimizers)"""
    weight_decay: float = 2e-5
    """weight decay (not on biases / norms / embeddings of size 1-d)"""
    clip_grad: float | None = None
    """clip gradients at this value (off when unset)"""
    clip_mode: Literal["norm", "value", "agc"] = "norm"
    """gradient clipping: norm, value or agc (adaptive, timm)"""
    layer_decay: float | None = None
    """layer-wise lr decay (timm), e.g. 0.75"""
    grad_accum_steps: int = 1
    """accumulate gradients over this many batches per update"""

    def __post_init__(self) -> None:
        _at_least(self, 1, "grad_accum_steps")
        if self.opt_betas is not None and len(self.opt_betas) != 2:
            raise ConfigError("opt_betas", self.opt_betas, "give two numbers")
        if self.clip_grad is not None and self.clip_grad <= 0:
            raise ConfigError("clip_grad", self.clip_grad, "must be > 0")


@dataclass
class ScheduleArgs:
    """Learning-rate schedule and run length (timm's create_scheduler_v2)."""

    early_stop: bool = False
    """stop when --eval-metric has not improved for --patience-epochs validations"""
    sched: Literal["cosine", "tanh", "step", "multistep", "poly", "wsd", "rsqrt", "constant", "plateau", "none"] = (
        "cosine"
    )
    """timm lr scheduler (create_scheduler_v2)"""
    sched_on_updates: bool = False
    """step the lr schedule every optimizer update instead of every epoch"""
    lr: float | None = None
    """learning rate (default: --lr-base scaled by the global batch)"""
    lr_base: float = 1e-3
    """base lr at batch --lr-base-size, used when --lr is unset"""
    lr_base_size: int = 256
    """batch size at which --lr-base applies"""
    lr_base_scale: Literal["", "linear", "sqrt"] = ""
    """scaling of --lr-base with the batch: linear, sqrt (default: sqrt for ada*/lamb optimizers, else linear, as
    timm) [beyond the seed]"""
    lr_noise: list[float] | None = None
    """lr noise on/off points, fractions of the schedule"""
    lr_noise_pct: float = 0.67
    """lr noise limit percent"""
    lr_noise_std: float = 1.0
    """lr noise std-dev"""
    lr_cycle_mul: float = 1.0
    """lr cycle length multiplier"""
    lr_cycle_decay: float = 0.5
    """lr decay per cycle"""
    lr_cycle_limit: int = 1
    """number of lr cycles (cosine, tanh, poly; the further cycles are trained after --epochs, as timm)"""
    lr_k_decay: float = 1.0
    """lr k-decay (cosine, poly)"""
    warmup_lr: float = 1e-8
    """lr at the start of warmup"""
    min_lr: float = 0.0
    """lr floor of the decaying schedules"""
    epochs: int = 300
    """epochs of the lr schedule (trained, plus --cooldown-epochs, further cycles, a warmup prefix)"""
    epoch_repeats: float = 0.0
    """if > 0, one epoch = this many passes over the training data"""
    start_epoch: int | None = None
    """start the lr schedule (and the epoch count) at this epoch (fresh runs only; a resumed run continues from its
    checkpoint)"""
    decay_milestones: list[int] = field(default_factory=lambda: [90, 180, 270])
    """multistep: epochs at which to decay"""
    decay_epochs: float | None = None
    """step: decay interval in epochs (wsd/rsqrt: decay length)"""
    warmup_epochs: float = 5.0
    """epochs of linear warmup (a fraction such as 0.05 needs --sched-on-updates)"""
    warmup_prefix: bool = False
    """warmup is not counted in --epochs of the decay (it is trained before them, as timm)"""
    cooldown_epochs: int = 0
    """epochs at --min-lr after the schedule (trained after --epochs, as timm)"""
    patience_epochs: int = 10
    """plateau scheduler patience, and --early-stop patience (validations)"""
    decay_rate: float = 0.1
    """lr decay rate (step, multistep, plateau; poly power)"""
    max_steps: int = -1
    """stop after this many optimizer updates (-1 = run --epochs) [beyond the seed]"""

    def __post_init__(self) -> None:
        _at_least(self, 1, "epochs", "lr_base_size")
        _at_least(self, 0, "warmup_epochs", "cooldown_epochs", "epoch_repeats")
        if self.max_steps != -1 and self.max_steps < 1:
            raise ConfigError("max_steps", self.max_steps, "-1 (off) or >= 1")
        if self.lr is not None and self.lr <= 0:
            raise ConfigError("lr", self.lr, "must be > 0")
        if not self.sched_on_updates and not float(self.warmup_epochs).is_integer():
            raise ConfigError("warmup_epochs", self.warmup_epochs, "a fraction of an epoch needs --sched-on-updates "
                              "(an epoch schedule steps once per epoch)")  # fmt: skip
        fractional = self.epoch_repeats > 0 and not (1 / self.epoch_repeats).is_integer()
        if self.lr_noise and fractional and not self.sched_on_updates:
            raise ConfigError("lr_noise", self.lr_noise, f"with --epoch-repeats {self.epoch_repeats}: the schedule "
                              "then steps at fractional epochs, but timm draws its noise per whole epoch; add "
                              "--sched-on-updates or drop one of them")  # fmt: skip
        if self.start_epoch is not None and not 0 <= self.start_epoch < self.epochs:
            raise ConfigError("start_epoch", self.start_epoch, "must lie in [0, --epochs)")
        # timm steps the plateau schedule only per epoch (it asserts); it runs after each epoch's validation here
        if self.sched == "plateau" and self.sched_on_updates:
            raise ConfigError("sched", "plateau", "steps once per epoch, after validation; drop --sched-on-updates")


@dataclass
class EMAArgs:
    """Exponential moving average of the weights (timm ModelEmaV3)."""

    model_ema: bool = False
    """keep an EMA of the weights (timm ModelEmaV3); validation and the exported model use it"""
    model_ema_force_cpu: bool = False
    """keep the EMA on the CPU"""
    model_ema_decay: float = 0.9998
    """EMA decay per update"""

    def __post_init__(self) -> None:
        _within(self, "model_ema_decay", 0.0, 1.0, "()")


@dataclass
class RunArgs:
    """Run: seed, hardware, checkpoints, output."""

    seed: int = 42
    """random seed (weights, data order, masking, random hierarchy, lr noise)"""
    resume: str | None = None
    """resume from this checkpoint (default: <output>/checkpoints/last.ckpt when the run is unfinished)"""
    accelerator: Literal["auto", "cpu", "cuda", "gpu", "tpu", "mps"] = "auto"
    """Lightning accelerator"""
    num_workers: int | None = None
    """dataloader worker processes (default: 4 with a GPU, 0 on the CPU, where workers only slow the start)"""
    distributed_backend: str = "auto"
    """Lightning strategy: auto, ddp, fsdp, deepspeed ... (not the spawn / fork ones) (ddp2 / horovod / dp no longer
    exist in Lightning 2)"""
    sync_bn: bool = False
    """synchronize BatchNorm across devices (Lightning sync_batchnorm); none of the helm backbones has BatchNorm, so
    this changes nothing for them"""
    num_nodes: int = 1
    """number of nodes"""
    num_devices: int = 1
    """devices per node"""
    worker_seeding: Literal["all", "part"] = "all"
    """all: seed python, numpy and torch in every dataloader worker; part: torch only"""
    checkpoint_hist: int = 3
    """keep the best N checkpoints by --eval-metric (plus last.ckpt)"""
    val_metric_mode: Literal["min", "max"] | None = None
    """min or max for --eval-metric (default: from the metric)"""
    log_interval: int = 1
    """log training metrics every N steps"""
    amp: bool = False
    """mixed precision: bf16 autocast where supported (CPU, Ampere+), else fp16"""
    compile: bool = False
    """torch.compile the model (inductor) for training and evaluation: faster steps after a compile of a few seconds
    to minutes per new batch shape (needs a C++ compiler on CPU) [beyond the seed]"""
    pin_mem: bool = False
    """pin dataloader memory (faster host-to-GPU copies)"""
    no_prefetcher: bool = False
    """timm's CUDA prefetcher does not exist here; this sets the DataLoader prefetch_factor to 1 (instead of 2) when
    --num_workers > 0"""
    output: str | None = None
    """run directory (default output/<model>-<mode>-<loss>)"""
    eval_metric: Literal[tuple(EVAL_METRICS)] = "val_loss"
    """metric that selects checkpoints / early stopping"""
    overwrite: bool = False
    """replace a finished run in --output [beyond the seed]"""
    precision: str | None = None
    """Lightning precision (overrides --amp), e.g. 32-true, bf16-mixed [beyond the seed]"""
    limit_train_batches: int | float | None = None
    """batches per epoch (int) or share (float <= 1) [beyond the seed]"""
    limit_val_batches: int | float | None = None
    """validation batches (int) or share (float <= 1) [beyond the seed]"""
    limit_test_batches: int | float | None = None
    """test batches (int) or share (float <= 1) [beyond the seed]"""
    val_check_interval: int | float | None = None
    """validate every N training batches (int) or share of an epoch [beyond the seed]"""
    checkpoint_every_n_steps: int = 0
    """also write last.ckpt every N updates (mid-epoch resume); 0 = only after validation [beyond the seed]"""
    num_sanity_val_steps: int = 1
    """validation batches run before training (catches bugs early) [beyond the seed]"""
    progress_bar: bool = True
    """show a progress bar [beyond the seed]"""
    test: bool = True
    """evaluate on the test split at the end (metrics.json) [beyond the seed]"""

    def __post_init__(self) -> None:
        _at_least(self, 1, "num_nodes", "num_devices", "log_interval")
        _at_least(self, 0, "num_workers", none_ok=True)
        _at_least(self, 0, "checkpoint_hist", "checkpoint_every_n_steps", "num_sanity_val_steps")
        backend = self.distributed_backend
        if backend in REMOVED_BACKENDS:
            raise ConfigError("distributed_backend", backend, "removed in Lightning 2; use ddp (one process per "
                              "device)")  # fmt: skip
        # Lightning's spawn / fork launchers train in child processes and hand back only the weights and metrics:
        # the step and token counts of metrics.json would read 0, and ddp_spawn cannot pickle the callbacks.
        if any(k in backend for k in ("spawn", "fork", "notebook")):
            raise ConfigError("distributed_backend", backend, "spawn / fork launchers are not supported; use ddp "
                              "(one process per device)")  # fmt: skip
        # inductor builds C++ kernels on the CPU: without a compiler --compile would fail at the first step
        if self.compile and self.accelerator not in ("gpu", "cuda") and not (shutil.which("g++") or
                                                                              shutil.which("c++")):  # fmt: skip
            raise ConfigError("compile", True, "on the CPU needs a C++ compiler (g++) on PATH; install one or drop "
                              "--compile")  # fmt: skip

    @property
    def world_size(self) -> int:
        return self.num_devices * self.num_nodes

    @property
    def gpu(self) -> bool:
        """Whether this run trains on a CUDA GPU (--accelerator cuda/gpu, or auto with one present)."""
        if self.accelerator in ("cuda", "gpu"):
            return True
        import torch

        return self.accelerator == "auto" and torch.cuda.is_available()


GROUPS: dict[str, type] = {
    "data": DataArgs,
    "model": ModelConfig,
    "objective": LossArgs,
    "optim": OptimArgs,
    "schedule": ScheduleArgs,
    "ema": EMAArgs,
    "run": RunArgs,
}


@dataclass
class TrainConfig:
    """Everything a training run is made of (see the module docstring)."""

    model_name: str = "gpt2"
    """backbone: gpt2, bert, mamba, hyena (see `helm models`)"""
    preset: str | None = None
    """model size preset (e.g. gpt2-tiny, gpt2-50m; `helm models`): sets the size flags and --model_name; explicit
    flags win [beyond the seed]"""
    data: DataArgs = field(default_factory=DataArgs)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: LossArgs = field(default_factory=LossArgs)
    optim: OptimArgs = field(default_factory=OptimArgs)
    schedule: ScheduleArgs = field(default_factory=ScheduleArgs)
    ema: EMAArgs = field(default_factory=EMAArgs)
    run: RunArgs = field(default_factory=RunArgs)
    tags: dict[str, Any] = field(default_factory=dict)
    """labels of the run that change no setting, copied into its config.yaml: where it sits in a grid (the
    workflow's grid coordinates: run, model, arch, mode, size, loss_id ..., which helm/report reads as the run's
    identity). A ``tags:`` section of --config, not a flag; text, numbers, true/false or null"""

    def __post_init__(self) -> None:
        bad = {k: v for k, v in self.tags.items() if not isinstance(k, str) or not isinstance(v, TAG_TYPES)}
        if bad:
            raise ValueError(f"tags: {bad}: each tag is a name with text, a number, true/false or null")  # no flag
        # checks across groups
        if self.data.mode == "clm" and self.model.bidirectional:
            raise ConfigError("bidirectional", True, "with --mode clm: a causal LM must not see the future; drop "
                              "one of them")  # fmt: skip
        if self.data.data_type == "aa" and self.objective.loss != "XE":
            raise ConfigError("loss", self.objective.loss, "needs the codon hierarchy; amino-acid tokens "
                              "(--data-type aa) train with --loss XE")  # fmt: skip
        tokenizer = self.data.tokenizer_name
        if self.objective.loss != "XE" and tokenizer not in CODON_TOKENIZERS:
            raise ConfigError("loss", self.objective.loss, f"needs the codon hierarchy, which the {tokenizer} "
                              "tokenizer has not (use 3mer or 6mer, or --loss XE)")  # fmt: skip
        if self.run.eval_metric in ("val_aa_acc", "val_mistake_severity") and tokenizer not in CODON_TOKENIZERS:
            raise ConfigError("eval_metric", self.run.eval_metric, f"not measured for the {tokenizer} tokenizer "
                              "(no codons); use val_loss, val_acc or val_ppl")  # fmt: skip
        if self.model.max_seq_len < 3:
            raise ConfigError("max_seq_len", self.model.max_seq_len, "must be >= 3 (a framed sequence needs <cls>, "
                              "at least one token and <eos>)")  # fmt: skip

    # ------------------------------------------------------------------------------- flat view (flags)
    def flat(self) -> dict[str, Any]:
        """``{flag name: value}`` of every flag: the layout of a run's config.yaml and of a --config YAML."""
        owners = {klass: getattr(self, name) for name, klass in GROUPS.items()} | {TrainConfig: self}
        values = {flag: getattr(owners[klass], flag) for flag, klass in FLAGS.items()}
        return {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in values.items()}

    @classmethod
    def from_flat(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from ``{flag name: value}`` and an optional ``tags`` mapping (missing flags take their defaults;
        other keys are ignored)."""

        def of(klass: type) -> dict[str, Any]:
            return {k: v for k, v in values.items() if FLAGS.get(k) is klass}

        groups = {name: klass(**of(klass)) for name, klass in GROUPS.items()}
        return cls(**of(cls), **groups, tags=dict(values.get(TAGS) or {}))

    # --------------------------------------------------------------------------------- derived values
    @property
    def global_batch(self) -> int:
        return self.data.batch_size * self.optim.grad_accum_steps * self.run.world_size

    @property
    def lr(self) -> float:
        """--lr, or timm's rule: lr_base x (global batch / lr_base_size), linear or sqrt."""
        s = self.schedule
        if s.lr is not None:
            return s.lr
        scale = s.lr_base_scale or ("sqrt" if any(o in self.optim.opt.lower() for o in ("ada", "lamb")) else "linear")
        ratio = self.global_batch / s.lr_base_size
        return s.lr_base * (math.sqrt(ratio) if scale == "sqrt" else ratio)

    @property
    def metric_mode(self) -> str:
        """min or max for --eval-metric: --val-metric-mode, else the metric's own direction."""
        return self.run.val_metric_mode or EVAL_METRICS[self.run.eval_metric]

    @property
    def output(self) -> Path:
        return Path(self.run.output or Path("output") / f"{self.model_name}-{self.data.mode}-{self.objective.loss}")

    def precision(self) -> str:
        """--precision wins; --amp = bf16 autocast where the hardware has it (every CPU does), else fp16."""
        r = self.run
        if r.precision:
            return r.precision
        if not r.amp:
            return "32-true"
        if r.gpu:
            import torch

            return "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "16-mixed"
        return "bf16-mixed"

    def model_config(self, vocab_size: int) -> ModelConfig:
        """The backbone's config for a vocabulary of `vocab_size` tokens (MLM implies a bidirectional model)."""
        return dataclasses.replace(self.model, vocab_size=vocab_size,
                                   bidirectional=self.model.bidirectional or self.data.mode == "mlm")  # fmt: skip


def _flag_owners() -> dict[str, type]:
    """``{flag name: the dataclass that owns it}`` for every flag of `helm train`."""
    owners: dict[str, type] = {"model_name": TrainConfig, "preset": TrainConfig}
    for name, klass in GROUPS.items():
        for f in dataclasses.fields(klass):
            if not (name == "model" and f.name in MODEL_DERIVED):
                owners[f.name] = klass
    return owners


FLAGS = _flag_owners()  # the parser, config.yaml and --config YAML all read the flags from here


def sections(values: dict[str, Any]) -> dict[str, Any]:
    """``{flag name: value}`` (and ``tags``) laid out as the config tree: the backbone flags at the top, every
    other flag under its group (``optim: {lr: 0.001}``), the tags in their own section. A --config YAML in this
    layout reads back to the same values (helm/train.py `config_values`)."""
    tree: dict[str, Any] = {name: value for name, value in values.items() if FLAGS.get(name) is TrainConfig}
    for group, klass in GROUPS.items():
        settings = {name: value for name, value in values.items() if FLAGS.get(name) is klass}
        if settings:
            tree[group] = settings
    unknown = [name for name in values if name not in FLAGS and name != TAGS]
    if unknown:
        raise ValueError(f"not flags of helm train: {', '.join(unknown)}")
    return tree | ({TAGS: dict(values[TAGS])} if TAGS in values else {})


def check_registries(cfg: TrainConfig) -> None:
    """Checks that need a registry: the backbone name and the timm optimizer (ConfigError names the flag)."""
    from helm.models import list_models

    if cfg.model_name not in list_models():
        raise ConfigError("model_name", cfg.model_name, f"unknown model; choose one of {list_models()}")
    try:
        from timm.optim import get_optimizer_info, list_optimizers
    except ImportError:  # older timm without the registry: create_optimizer_v2 will complain itself
        return
    opt = cfg.optim.opt
    base = opt.lower().removeprefix("lookahead_")  # create_optimizer_v2 takes timm's "lookahead_<name>"
    if base not in list_optimizers():
        raise ConfigError("opt", opt, "unknown timm optimizer; e.g. adamw, sgd, lamb, lion")
    info = get_optimizer_info(base)
    if info.second_order and cfg.model_name == "mamba":
        raise ConfigError("opt", opt, "a second-order optimizer differentiates the gradients, which mamba's "
                          "selective scan cannot; use gpt2, bert or hyena")  # fmt: skip
    if isinstance(info.opt_class, str):  # apex / bitsandbytes: optional packages, CUDA only (timm asserts)
        import importlib.util

        import torch

        package = info.opt_class.split(".")[0]
        usable = importlib.util.find_spec(package) is not None and torch.cuda.is_available()
        if not (usable and cfg.run.accelerator in ("auto", "cuda", "gpu")):
            raise ConfigError("opt", opt, f"needs CUDA and the {package} package")
