"""`python train.py` / `helm train`: every flag of the HELM seed's train.py, plus `--config` YAML.

Precedence of values: field defaults < `--preset` (model sizes) < `--config` YAML < command line.
Every flag is accepted as `--a_b` and `--a-b`. `TrainConfig` below is the single source of truth: the
parser, the YAML validation and the resolved `config.yaml` of a run are all generated from its fields.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import math
import os
import shutil
import sys
import time
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

LOSSES = ("XE", "HXE", "aa_loss_add", "aa_loss_only", "soft_labels")
TOKENIZERS = ("3mer", "codon", "nuc", "6mer", "aa", "bpe", "wp", "ug")
SCHEDULERS = ("cosine", "tanh", "step", "multistep", "poly", "wsd", "rsqrt", "constant", "plateau", "none")
# metric name -> better direction; `--eval-metric` picks one, `--val-metric-mode` defaults from it
EVAL_METRICS = {
    "val_loss": "min",
    "val_acc": "max",
    "val_ppl": "min",
    "val_aa_acc": "max",
    "val_mistake_severity": "min",
}
REMOVED_BACKENDS = {"ddp2", "horovod", "dp", "ddp_cpu"}  # gone from Lightning 2.x


def _f(default: Any, help: str, *, choices: tuple | None = None, group: str = "misc", seed: bool = True) -> Any:
    """A config field; `seed=False` marks flags added beyond the seed README."""
    meta = {"help": help, "choices": choices, "group": group, "seed": seed}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    # ---------------------------------------------------------------------------------------------- data
    data_dir: str | None = _f(
        None,
        "directory with the raw data files, or an already prepared directory (has summary.json; then it is used as is)",
        group="data",
    )
    train_file: str | None = _f(
        None, "training file inside --data_dir (extension --file_extension if none)", group="data"
    )
    val_file: str | None = _f(
        None, "validation file; without it a seeded 5%% split of --train_file (helm.prepare)", group="data"
    )
    test_file: str | None = _f(
        None, "test file; without it a seeded 5%% split of --train_file (helm.prepare)", group="data"
    )
    file_extension: str = _f(
        "txt", "data file format: txt (one sequence a line), csv, tsv, fasta, csv.gz ...", group="data"
    )
    column_name: str | None = _f(None, "column holding the sequences in csv/tsv files", group="data")
    max_seq_len: int = _f(256, "maximum tokens per sequence, specials included (longer ones are cut)", group="data")
    masking_strategy: str = _f(
        "single",
        "MLM masking: single tokens, double (pairs) or spans",
        choices=("single", "double", "span"),
        group="data",
    )
    masking_ratio: float = _f(0.15, "share of tokens selected for the MLM loss", group="data")
    mask_replace: str = _f(
        "mask",
        "what a selected MLM training token becomes: mask (always <mask>, the HELM reference) or bert (80/10/10 "
        "<mask>/random/unchanged); validation and test always use <mask>",
        choices=("mask", "bert"),
        group="data",
        seed=False,
    )
    data_type: str = _f(
        "nuc",
        "what the sequences are: nuc (nucleotides, tokenized by --tokenizer, default 3mer), "
        "codon (in-frame CDS, forces the 3mer tokenizer), aa (amino acids, one token per residue; "
        "OAS files give their translated CDS; XE loss only: the hierarchies are codon trees)",
        choices=("nuc", "codon", "aa"),
        group="data",
    )
    tokenizer: str | None = _f(
        None, "tokenizer (default from --data-type: 3mer, aa for aa)", choices=TOKENIZERS, group="data"
    )
    overlap: int = _f(0, "overlap between consecutive k-mers (stride k - overlap)", group="data")
    position_ids: bool = _f(
        False,
        "feed explicit position ids to the model (restart at 0 in every sequence) "
        "instead of letting it count positions itself",
        group="data",
    )
    mode: str = _f(
        "mlm", "mlm (bidirectional, masked) or clm (causal, next token)", choices=("mlm", "clm"), group="data"
    )
    batch_size: int = _f(
        64, "batch size per device (global batch = this x devices x nodes x grad-accum-steps)", group="data"
    )
    num_samples: int = _f(-1, "use only the first N sequences of each split: train, val, test (-1 = all)", group="data")
    group_by_length: bool = _f(
        False,
        "batch training sequences of similar length (seeded shuffle, sorted within chunks of 50 batches per rank, "
        "batch order shuffled): far fewer pads per batch; changes the data order, so off by default",
        group="data",
        seed=False,
    )
    # --------------------------------------------------------------------------------------------- model
    model_name: str = _f("gpt2", "backbone: gpt2, bert, mamba, hyena (see `helm models`)", group="model")
    bidirectional: bool = _f(
        False, "non-causal backbone; implied by --mode mlm, an error with --mode clm", group="model"
    )
    ssm_layer: str = _f("Mamba", "mamba block type", choices=("Mamba", "Mamba2"), group="model")
    bimamba: str = _f(
        "add",
        "bidirectional mamba layer: add (a reversed mixer summed with the forward one before one MLP) or concat "
        "(a forward and a backward block, each with its MLP, projected from their concatenation: the paper's "
        "Bi-Mamba, set by the mamba-<size>-mlm presets)",
        choices=("add", "concat"),
        group="model",
        seed=False,
    )
    vocab_size: int | None = _f(
        None,
        "for learned tokenizers (bpe/wp/ug): the vocabulary size to learn "
        "(default 256). For fixed ones it follows from the tokenizer (3mer: 70) and a "
        "different value is an error",
        group="model",
    )
    num_layers: int = _f(4, "number of layers", group="model")
    num_heads: int = _f(4, "attention heads", group="model")
    pad_vocab_size_multiple: int = _f(1, "pad the embedding/LM-head rows to a multiple of this (speed)", group="model")
    pos_embedding: str = _f(
        "absolute", "position embedding: none, absolute, rotary", choices=("none", "absolute", "rotary"), group="model"
    )
    pos_embedding_apply: str = _f(
        "add", "add the absolute position embedding or concat it", choices=("add", "concat"), group="model"
    )
    pos_embedding_dim: int | None = _f(
        None, "channels of a concatenated position embedding / rotary dims per head", group="model"
    )
    tie_embeddings: bool = _f(False, "tie input embedding and LM head", group="model")
    hidden_size: int = _f(256, "model width", group="model")
    intermediate_size: int = _f(1024, "MLP width", group="model")
    dropout: float = _f(0.0, "dropout", group="model")
    attn_dropout: float = _f(0.0, "attention dropout", group="model")
    activation: str = _f("gelu", "activation (any transformers ACT2FN name)", group="model")
    preset: str | None = _f(
        None,
        "model size preset (e.g. gpt2-tiny, gpt2-50m; `helm models`): sets the size "
        "flags and --model_name; explicit flags win",
        group="model",
        seed=False,
    )
    # ---------------------------------------------------------------------------------------------- loss
    loss: str = _f("XE", "training loss", choices=LOSSES, group="loss")
    hxe_alpha: float = _f(0.2, "HXE alpha: larger = more weight on coarse (top-level) decisions", group="loss")
    soft_labels_beta: float = _f(15.0, "soft-label beta: larger = sharper targets", group="loss")
    hierarchy: str = _f(
        "true",
        "codon hierarchy for HXE / soft labels (random: seeded by --seed)",
        choices=("true", "random"),
        group="loss",
    )
    hxe_normalize: bool = _f(
        True, "normalize HXE level weights by Z over all tree nodes (the reference)", group="loss", seed=False
    )
    # ----------------------------------------------------------------------------------------- optimizer
    opt: str = _f("adamw", "timm optimizer name (create_optimizer_v2)", group="optimizer")
    opt_eps: float | None = _f(None, "optimizer epsilon (default: the optimizer's)", group="optimizer")
    opt_betas: list[float] | None = _f(None, "optimizer betas (default: the optimizer's)", group="optimizer")
    momentum: float = _f(0.9, "momentum (SGD-type optimizers)", group="optimizer")
    weight_decay: float = _f(2e-5, "weight decay (not on biases / norms / embeddings of size 1-d)", group="optimizer")
    clip_grad: float | None = _f(None, "clip gradients at this value (off when unset)", group="optimizer")
    clip_mode: str = _f(
        "norm",
        "gradient clipping: norm, value or agc (adaptive, timm)",
        choices=("norm", "value", "agc"),
        group="optimizer",
    )
    layer_decay: float | None = _f(None, "layer-wise lr decay (timm), e.g. 0.75", group="optimizer")
    grad_accum_steps: int = _f(1, "accumulate gradients over this many batches per update", group="optimizer")
    # ------------------------------------------------------------------------------------------ schedule
    early_stop: bool = _f(
        False, "stop when --eval-metric has not improved for --patience-epochs validations", group="schedule"
    )
    sched: str = _f("cosine", "timm lr scheduler (create_scheduler_v2)", choices=SCHEDULERS, group="schedule")
    sched_on_updates: bool = _f(
        False, "step the lr schedule every optimizer update instead of every epoch", group="schedule"
    )
    lr: float | None = _f(None, "learning rate (default: --lr-base scaled by the global batch)", group="schedule")
    lr_base: float = _f(1e-3, "base lr at batch --lr-base-size, used when --lr is unset", group="schedule")
    lr_base_size: int = _f(256, "batch size at which --lr-base applies", group="schedule")
    lr_base_scale: str = _f(
        "",
        "scaling of --lr-base with the batch: linear, sqrt (default: sqrt for ada*/lamb "
        "optimizers, else linear, as timm)",
        choices=("", "linear", "sqrt"),
        group="schedule",
        seed=False,
    )
    lr_noise: list[float] | None = _f(None, "lr noise on/off points, fractions of the schedule", group="schedule")
    lr_noise_pct: float = _f(0.67, "lr noise limit percent", group="schedule")
    lr_noise_std: float = _f(1.0, "lr noise std-dev", group="schedule")
    lr_cycle_mul: float = _f(1.0, "lr cycle length multiplier", group="schedule")
    lr_cycle_decay: float = _f(0.5, "lr decay per cycle", group="schedule")
    lr_cycle_limit: int = _f(
        1,
        "number of lr cycles (cosine, tanh, poly; the further cycles are trained after --epochs, as timm)",
        group="schedule",
    )
    lr_k_decay: float = _f(1.0, "lr k-decay (cosine, poly)", group="schedule")
    warmup_lr: float = _f(1e-8, "lr at the start of warmup", group="schedule")
    min_lr: float = _f(0.0, "lr floor of the decaying schedules", group="schedule")
    epochs: int = _f(
        300,
        "epochs of the lr schedule (trained, plus --cooldown-epochs, further cycles, a warmup prefix)",
        group="schedule",
    )
    epoch_repeats: float = _f(0.0, "if > 0, one epoch = this many passes over the training data", group="schedule")
    start_epoch: int | None = _f(
        None,
        "start the lr schedule (and the epoch count) at this epoch "
        "(fresh runs only; a resumed run continues from its checkpoint)",
        group="schedule",
    )
    decay_milestones: list[int] = _f([90, 180, 270], "multistep: epochs at which to decay", group="schedule")
    decay_epochs: float | None = _f(None, "step: decay interval in epochs (wsd/rsqrt: decay length)", group="schedule")
    warmup_epochs: float = _f(
        5, "epochs of linear warmup (a fraction such as 0.05 needs --sched-on-updates)", group="schedule"
    )
    warmup_prefix: bool = _f(
        False, "warmup is not counted in --epochs of the decay (it is trained before them, as timm)", group="schedule"
    )
    cooldown_epochs: int = _f(
        0, "epochs at --min-lr after the schedule (trained after --epochs, as timm)", group="schedule"
    )
    patience_epochs: int = _f(
        10, "plateau scheduler patience, and --early-stop patience (validations)", group="schedule"
    )
    decay_rate: float = _f(0.1, "lr decay rate (step, multistep, plateau; poly power)", group="schedule")
    max_steps: int = _f(-1, "stop after this many optimizer updates (-1 = run --epochs)", group="schedule", seed=False)
    # ----------------------------------------------------------------------------------------------- ema
    model_ema: bool = _f(
        False, "keep an EMA of the weights (timm ModelEmaV3); validation and the exported model use it", group="ema"
    )
    model_ema_force_cpu: bool = _f(False, "keep the EMA on the CPU", group="ema")
    model_ema_decay: float = _f(0.9998, "EMA decay per update", group="ema")
    # ----------------------------------------------------------------------------------------------- run
    seed: int = _f(42, "random seed (weights, data order, masking, random hierarchy, lr noise)", group="run")
    resume: str | None = _f(
        None,
        "resume from this checkpoint (default: <output>/checkpoints/last.ckpt when the run is unfinished)",
        group="run",
    )
    accelerator: str = _f(
        "auto", "Lightning accelerator", choices=("auto", "cpu", "cuda", "gpu", "tpu", "mps"), group="run"
    )
    num_workers: int | None = _f(
        None,
        "dataloader worker processes (default: 4 with a GPU, 0 on the CPU, where workers only slow the start)",
        group="run",
    )
    distributed_backend: str = _f(
        "auto",
        "Lightning strategy: auto, ddp, fsdp, deepspeed ... (not the spawn / fork ones) "
        "(ddp2 / horovod / dp no longer exist in Lightning 2)",
        group="run",
    )
    sync_bn: bool = _f(
        False,
        "synchronize BatchNorm across devices (Lightning sync_batchnorm); none of the "
        "helm backbones has BatchNorm, so this changes nothing for them",
        group="run",
    )
    num_nodes: int = _f(1, "number of nodes", group="run")
    num_devices: int = _f(1, "devices per node", group="run")
    worker_seeding: str = _f(
        "all",
        "all: seed python, numpy and torch in every dataloader worker; part: torch only",
        choices=("all", "part"),
        group="run",
    )
    checkpoint_hist: int = _f(3, "keep the best N checkpoints by --eval-metric (plus last.ckpt)", group="run")
    val_metric_mode: str | None = _f(
        None, "min or max for --eval-metric (default: from the metric)", choices=("min", "max"), group="run"
    )
    log_interval: int = _f(1, "log training metrics every N steps", group="run")
    amp: bool = _f(False, "mixed precision: bf16 autocast where supported (CPU, Ampere+), else fp16", group="run")
    compile: bool = _f(
        False,
        "torch.compile the model (inductor) for training and evaluation: faster steps after a compile of a few "
        "seconds to minutes per new batch shape (needs a C++ compiler on CPU)",
        group="run",
        seed=False,
    )
    pin_mem: bool = _f(False, "pin dataloader memory (faster host-to-GPU copies)", group="run")
    no_prefetcher: bool = _f(
        False,
        "timm's CUDA prefetcher does not exist here; this sets the DataLoader "
        "prefetch_factor to 1 (instead of 2) when --num_workers > 0",
        group="run",
    )
    output: str | None = _f(None, "run directory (default output/<model>-<mode>-<loss>)", group="run")
    eval_metric: str = _f(
        "val_loss", "metric that selects checkpoints / early stopping", choices=tuple(EVAL_METRICS), group="run"
    )
    # ------------------------------------------------------------------------------------ beyond the seed
    overwrite: bool = _f(False, "replace a finished run in --output", group="run", seed=False)
    precision: str | None = _f(
        None, "Lightning precision (overrides --amp), e.g. 32-true, bf16-mixed", group="run", seed=False
    )
    limit_train_batches: float | None = _f(
        None, "batches per epoch (int) or share (float <= 1)", group="run", seed=False
    )
    limit_val_batches: float | None = _f(
        None, "validation batches (int) or share (float <= 1)", group="run", seed=False
    )
    limit_test_batches: float | None = _f(None, "test batches (int) or share (float <= 1)", group="run", seed=False)
    val_check_interval: float | None = _f(
        None, "validate every N training batches (int) or share of an epoch", group="run", seed=False
    )
    checkpoint_every_n_steps: int = _f(
        0, "also write last.ckpt every N updates (mid-epoch resume); 0 = only after validation", group="run", seed=False
    )
    num_sanity_val_steps: int = _f(
        1, "validation batches run before training (catches bugs early)", group="run", seed=False
    )
    progress_bar: bool = _f(True, "show a progress bar", group="run", seed=False)
    test: bool = _f(True, "evaluate on the test split at the end (metrics.json)", group="run", seed=False)


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_HINTS = typing.get_type_hints(TrainConfig)


def _kind(name: str) -> tuple[type, bool]:
    """(scalar type, is_list) of a field from its annotation (`float | None`, `list[int]`, `bool`...)."""
    hint = _HINTS[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)] if _is_union(hint) else [hint]
    (hint,) = args
    if typing.get_origin(hint) is list:
        return typing.get_args(hint)[0], True
    return hint, False


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _number(kind: type):
    """argparse type: floats accept ints; ints reject '1.5' with a clear message."""

    def convert(text: str):
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {text!r}") from None

    convert.__name__ = kind.__name__
    return convert


def _int_or_float(text: str) -> float | int:
    """Lightning's limit_*/val_check_interval: an int counts batches, a float is a share."""
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


_MIXED = {"limit_train_batches", "limit_val_batches", "limit_test_batches", "val_check_interval"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="helm train",
        description="Pretrain an mRNA language model (the HELM train.py flags). Every flag is accepted as "
        "--a_b and --a-b; --config YAML supplies defaults that the command line overrides.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--config", "-c", default=None, help="YAML file of flag: value defaults")
    groups: dict[str, argparse._ArgumentGroup] = {}
    for name, f in FIELDS.items():
        meta = f.metadata
        group = groups.setdefault(meta["group"], parser.add_argument_group(meta["group"]))
        flags = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
        help_ = meta["help"] + ("" if meta["seed"] else " [beyond the seed]")
        kind, is_list = _kind(name)
        kw: dict[str, Any] = {"dest": name, "help": help_}
        if kind is bool:
            # --x / --no-x; a flag that itself starts with "no" (--no-prefetcher) is a plain switch, since
            # BooleanOptionalAction reads any "--no-" prefix as the negation
            kw["action"] = "store_true" if name.startswith("no_") else argparse.BooleanOptionalAction
        else:
            kw["type"] = _int_or_float if name in _MIXED else (_number(kind) if kind in (int, float) else kind)
            kw["choices"] = meta["choices"]
            kw["nargs"] = "+" if is_list else None
        group.add_argument(*flags, **kw)
    parser.set_defaults(**{n: (f.default_factory() if callable(f.default_factory) else f.default)
                           for n, f in FIELDS.items()})  # fmt: skip
    return parser


# ------------------------------------------------------------------------------------------ YAML config
def _yaml_value(name: str, value: Any, where: str) -> Any:
    """Check a YAML value against the field's type and choices (argparse checks command-line ones)."""
    kind, is_list = _kind(name)
    f = FIELDS[name]
    if value is None:
        if f.default is not None and not is_list:
            raise ValueError(f"{where}: {name} may not be null")
        return None
    if isinstance(value, list) and not is_list:
        raise ValueError(f"{where}: {name} expects a single {kind.__name__}, got a list")
    items = value if isinstance(value, list) else [value]
    out = []
    for v in items:
        if isinstance(v, str) and (kind in (int, float) or name in _MIXED):
            # YAML 1.1 reads `1e-3` (no dot) as a string: parse numbers the way the command line does
            try:
                v = _int_or_float(v) if name in _MIXED else _number(kind)(v)
            except argparse.ArgumentTypeError as e:
                raise ValueError(f"{where}: {name}: {e}") from None
        ok = (
            isinstance(v, bool)
            if kind is bool
            else (
                isinstance(v, (int, float))
                and not isinstance(v, bool)
                and (kind is float or name in _MIXED)
                or (kind is int and isinstance(v, int) and not isinstance(v, bool))
                or (kind is str and isinstance(v, (str, int, float)) and not isinstance(v, bool))
            )
        )
        if not ok:
            raise ValueError(f"{where}: {name}: expected {kind.__name__}, got {v!r} ({type(v).__name__})")
        v = str(v) if kind is str else (float(v) if kind is float and name not in _MIXED else v)
        choices = f.metadata["choices"]
        if choices and v not in choices:
            raise ValueError(f"{where}: {name}: invalid choice {v!r} (choose from {', '.join(map(str, choices))})")
        out.append(v)
    return out if is_list else out[0]


DERIVED_KEY = "derived"  # the section of a run's config.yaml holding values computed from the flags
# where that run lives and what it did to its directory: reusing its settings must never rewrite or delete it
RUN_LOCAL_KEYS = ("output", "overwrite", "resume")


def load_yaml_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read a --config YAML: keys are flag names (either spelling, without dashes in front); a run's own
    resolved config.yaml is one (its ``derived`` section is skipped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--config {path}: file not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"--config {path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"--config {path}: expected a mapping of flag: value, got {type(raw).__name__}")
    values = {}
    own_run = DERIVED_KEY in raw  # a run's resolved config.yaml: its derived values are recomputed, not inputs
    for key, value in raw.items():
        if key == DERIVED_KEY or (own_run and key in RUN_LOCAL_KEYS):
            continue
        name = str(key).lstrip("-").replace("-", "_")
        if name not in FIELDS:
            close = difflib.get_close_matches(name, FIELDS, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"--config {path}: unknown key {key!r}{hint}")
        values[name] = _yaml_value(name, value, f"--config {path}")
    return values


def _preset_values(name: str) -> dict[str, Any]:
    from helm.models import get_preset

    try:
        preset = dict(get_preset(name))
    except (KeyError, ValueError) as e:
        raise ValueError(f"--preset {name}: {e}") from None
    if "model" in preset:
        preset["model_name"] = preset.pop("model")
    unknown = set(preset) - set(FIELDS)
    if unknown:
        raise ValueError(f"--preset {name}: fields {sorted(unknown)} are not training flags")
    return preset


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    """Command line (+ --config YAML, + --preset) -> validated TrainConfig (files are checked in `prepare_run`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # First pass: only --config and --preset, to layer their values under the command line.
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", "-c", default=None)
    pre.add_argument("--preset", default=None)
    known, _ = pre.parse_known_args(argv)
    try:
        yaml_values = load_yaml_config(known.config) if known.config else {}
    except (OSError, ValueError) as e:
        parser.error(str(e))
    preset = known.preset or yaml_values.get("preset")
    try:
        defaults = _preset_values(preset) if preset else {}
    except ValueError as e:
        parser.error(str(e))
    defaults.update(yaml_values)
    parser.set_defaults(**defaults)
    ns = parser.parse_args(argv)
    values = {k: v for k, v in vars(ns).items() if k in FIELDS}
    cfg = TrainConfig(**values)
    try:
        validate(cfg, explicit_model_name="--model_name" in argv or "--model-name" in argv or "model_name" in
                 yaml_values, preset=defaults.get("model_name") if preset else None)  # fmt: skip
    except ValueError as e:
        parser.error(str(e))
    return cfg


def validate(cfg: TrainConfig, explicit_model_name: bool = False, preset: str | None = None) -> None:
    """Value checks that need no files. Raises ValueError naming the flag and the reason."""

    def need(ok: bool, message: str) -> None:
        if not ok:
            raise ValueError(message)

    from helm.models import list_models

    models = list_models()
    need(cfg.model_name in models, f"--model_name {cfg.model_name!r}: unknown model; choose one of {models}")
    if preset and explicit_model_name:
        need(cfg.model_name == preset, f"--preset {cfg.preset} is a {preset} preset but --model_name is "
             f"{cfg.model_name}")  # fmt: skip
    need(cfg.max_seq_len >= 3, f"--max_seq_len {cfg.max_seq_len}: must be >= 3 (a framed sequence needs <cls>, "
         "at least one token and <eos>)")  # fmt: skip
    need(0.0 < cfg.masking_ratio <= 1.0, f"--masking_ratio {cfg.masking_ratio}: must lie in (0, 1]")
    if cfg.data_type == "aa":
        need(cfg.tokenizer in (None, "aa"), f"--data-type aa means the aa tokenizer (one token per residue), not "
             f"--tokenizer {cfg.tokenizer}")  # fmt: skip
        need(cfg.loss == "XE", f"--loss {cfg.loss} needs the codon hierarchy; amino-acid "
             "tokens (--data-type aa) train with --loss XE")  # fmt: skip
    else:
        need(cfg.tokenizer != "aa", f"--tokenizer aa reads amino acids: add --data-type aa (not {cfg.data_type})")
    if cfg.data_type == "codon":
        need(cfg.tokenizer in (None, "3mer", "codon"), f"--data-type codon means the 3mer tokenizer, not "
             f"--tokenizer {cfg.tokenizer}")  # fmt: skip
    need(not (cfg.mode == "clm" and cfg.bidirectional), "--bidirectional with --mode clm: a causal LM must not "
         "see the future; drop one of them")  # fmt: skip
    for name in ("batch_size", "grad_accum_steps", "epochs", "num_nodes", "num_devices", "log_interval",
                 "lr_base_size", "num_layers", "num_heads", "hidden_size"):  # fmt: skip
        need(getattr(cfg, name) >= 1, f"--{name} {getattr(cfg, name)}: must be >= 1")
    for name in ("num_workers", "overlap", "checkpoint_hist", "warmup_epochs", "cooldown_epochs",
                 "checkpoint_every_n_steps", "num_sanity_val_steps", "epoch_repeats"):  # fmt: skip
        need(getattr(cfg, name) is None or getattr(cfg, name) >= 0, f"--{name} {getattr(cfg, name)}: must be >= 0")
    need(cfg.num_samples == -1 or cfg.num_samples >= 1, f"--num_samples {cfg.num_samples}: -1 (all) or >= 1")
    need(cfg.max_steps == -1 or cfg.max_steps >= 1, f"--max-steps {cfg.max_steps}: -1 (off) or >= 1")
    need(0.0 < cfg.model_ema_decay < 1.0, f"--model-ema-decay {cfg.model_ema_decay}: must lie in (0, 1)")
    for name in ("dropout", "attn_dropout"):
        need(0.0 <= getattr(cfg, name) < 1.0, f"--{name} {getattr(cfg, name)}: must lie in [0, 1)")
    need(cfg.lr is None or cfg.lr > 0, f"--lr {cfg.lr}: must be > 0")
    need(cfg.sched_on_updates or float(cfg.warmup_epochs).is_integer(), f"--warmup-epochs {cfg.warmup_epochs}: a "
         "fraction of an epoch needs --sched-on-updates (an epoch schedule steps once per epoch)")  # fmt: skip
    fractional_epochs = cfg.epoch_repeats > 0 and not (1 / cfg.epoch_repeats).is_integer()
    need(not (cfg.lr_noise and fractional_epochs and not cfg.sched_on_updates), f"--lr-noise with --epoch-repeats "
         f"{cfg.epoch_repeats}: the schedule then steps at fractional epochs, but timm draws its noise per whole "
         "epoch; add --sched-on-updates or drop one of them")  # fmt: skip
    need(cfg.opt_betas is None or len(cfg.opt_betas) == 2, f"--opt-betas {cfg.opt_betas}: give two numbers")
    need(cfg.clip_grad is None or cfg.clip_grad > 0, f"--clip-grad {cfg.clip_grad}: must be > 0")
    need(cfg.start_epoch is None or 0 <= cfg.start_epoch < cfg.epochs,
         f"--start-epoch {cfg.start_epoch}: must lie in [0, --epochs)")  # fmt: skip
    need(cfg.distributed_backend not in REMOVED_BACKENDS, f"--distributed-backend {cfg.distributed_backend}: "
         "removed in Lightning 2; use ddp (one process per device)")  # fmt: skip
    # Lightning's spawn / fork launchers train in child processes and hand back only the weights and metrics: the
    # step and token counts of metrics.json would read 0, and ddp_spawn cannot pickle the trainer's callbacks.
    launched = any(k in cfg.distributed_backend for k in ("spawn", "fork", "notebook"))
    need(not launched, f"--distributed-backend {cfg.distributed_backend}: spawn / fork launchers are not supported; "
         "use ddp (one process per device)")  # fmt: skip
    # inductor builds C++ kernels on the CPU: without a compiler --compile would fail at the first step
    need(not cfg.compile or cfg.accelerator in ("gpu", "cuda") or shutil.which("g++") or shutil.which("c++"),
         "--compile on the CPU needs a C++ compiler (g++) on PATH; install one or drop --compile")  # fmt: skip
    # timm steps the plateau schedule only per epoch (it asserts); it runs after each epoch's validation here
    need(not (cfg.sched == "plateau" and cfg.sched_on_updates), "--sched plateau steps once per epoch, after "
         "validation; drop --sched-on-updates")  # fmt: skip
    try:
        from timm.optim import get_optimizer_info, list_optimizers

        # create_optimizer_v2 also takes timm's "lookahead_<name>" (Lookahead around <name>)
        base = cfg.opt.lower().removeprefix("lookahead_")
        need(base in list_optimizers(), f"--opt {cfg.opt!r}: unknown timm optimizer; e.g. adamw, sgd, lamb, lion")
        info = get_optimizer_info(base)
        need(not (info.second_order and cfg.model_name == "mamba"), f"--opt {cfg.opt}: a second-order optimizer "
             "differentiates the gradients, which mamba's selective scan cannot; use gpt2, bert or hyena")  # fmt: skip
        opt_class = info.opt_class
        if isinstance(opt_class, str):  # apex / bitsandbytes: optional packages, CUDA only (timm asserts)
            import importlib.util

            import torch

            package = opt_class.split(".")[0]
            need(importlib.util.find_spec(package) is not None and torch.cuda.is_available() and cfg.accelerator
                 in ("auto", "cuda", "gpu"), f"--opt {cfg.opt}: needs CUDA and the {package} package")  # fmt: skip
    except ImportError:  # older timm without the registry: create_optimizer_v2 will complain itself
        pass


# ----------------------------------------------------------------------------------------- derived values
def tokenizer_name(cfg: TrainConfig) -> str:
    name = cfg.tokenizer or ("aa" if cfg.data_type == "aa" else "3mer")
    return "3mer" if name == "codon" else name


def world_size(cfg: TrainConfig) -> int:
    return cfg.num_devices * cfg.num_nodes


def global_batch(cfg: TrainConfig) -> int:
    return cfg.batch_size * cfg.grad_accum_steps * world_size(cfg)


def resolved_lr(cfg: TrainConfig) -> float:
    """--lr, or timm's rule: lr_base x (global batch / lr_base_size), linear or sqrt."""
    if cfg.lr is not None:
        return cfg.lr
    scale = cfg.lr_base_scale or ("sqrt" if any(o in cfg.opt.lower() for o in ("ada", "lamb")) else "linear")
    ratio = global_batch(cfg) / cfg.lr_base_size
    return cfg.lr_base * (math.sqrt(ratio) if scale == "sqrt" else ratio)


def precision(cfg: TrainConfig) -> str:
    """--precision wins; --amp = bf16 autocast where the hardware has it (every CPU does), else fp16."""
    if cfg.precision:
        return cfg.precision
    if not cfg.amp:
        return "32-true"
    import torch

    if cfg.accelerator in ("cuda", "gpu") or (cfg.accelerator == "auto" and torch.cuda.is_available()):
        return "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed"


def default_output(cfg: TrainConfig) -> str:
    return str(Path("output") / f"{cfg.model_name}-{cfg.mode}-{cfg.loss}")


def to_dict(cfg: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(values: dict[str, Any]) -> TrainConfig:
    """A resolved config.yaml back to a TrainConfig (derived keys under `derived` are ignored)."""
    return TrainConfig(**{k: v for k, v in values.items() if k in FIELDS})


# --------------------------------------------------------------------------------------------- the run
# Keys that may change between an interrupted run and its continuation (everything else must match).
RUNTIME_KEYS = {
    "resume", "overwrite", "num_workers", "pin_mem", "no_prefetcher", "progress_bar", "accelerator",
    "log_interval", "num_sanity_val_steps", "output", "data_dir", "train_file", "val_file", "test_file",
    "file_extension", "checkpoint_every_n_steps", "test", "max_steps", "limit_val_batches", "limit_test_batches",
    "val_check_interval", "precision", "compile",
}  # fmt: skip
OWN_ENTRIES = ("config.yaml", "tokenizer", "checkpoints", "model", "metrics.json", "tb")


def _rank() -> int:
    from lightning.pytorch.utilities import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0) or 0)


def _data_file(data_dir: Path, name: str, extension: str, flag: str) -> Path:
    """`name` inside `data_dir` (or as given); `--file_extension` completes a name that has no extension."""
    for candidate in (Path(name), data_dir / name):
        if candidate.is_file():
            return candidate
        with_ext = candidate.with_name(f"{candidate.name}.{extension.lstrip('.')}")
        if not candidate.suffix and with_ext.is_file():
            return with_ext
    raise FileNotFoundError(f"{flag} {name}: not found in --data_dir {data_dir} (nor with .{extension})")


def resolve_data(cfg: TrainConfig, out: Path) -> Path:
    """A prepared directory: --data_dir itself when it is one, else prepare the raw files into <output>/data
    (helm.prepare skips the work when that directory is already prepared from the same files and settings)."""
    if not cfg.data_dir:
        raise ValueError("--data_dir is required (a prepared directory, or raw files with --train_file)")
    data_dir = Path(cfg.data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"--data_dir {data_dir}: directory not found")
    if (data_dir / "summary.json").exists():
        return data_dir
    if not cfg.train_file:
        raise ValueError(f"--data_dir {data_dir} is not a prepared directory (no summary.json): give --train_file")
    files = {
        flag: _data_file(data_dir, name, cfg.file_extension, f"--{flag}")
        for flag, name in (("train_file", cfg.train_file), ("val_file", cfg.val_file), ("test_file", cfg.test_file))
        if name
    }
    prepared = out / "data"
    if _rank() == 0:
        from helm.prepare import format_summary, prepare

        summary = prepare(
            output=prepared,
            tokenizer=tokenizer_name(cfg),
            overlap=cfg.overlap,
            column=cfg.column_name,
            seed=cfg.seed,
            train_files=[files["train_file"]],
            val_files=[files["val_file"]] if "val_file" in files else [],
            test_files=[files["test_file"]] if "test_file" in files else [],
            vocab_size=cfg.vocab_size or 256,
            progress=cfg.progress_bar,
        )
        print(format_summary(prepared, summary), file=sys.stderr)  # kept and rejected rows, by reason, as prepare
    else:  # other ranks (started by Lightning or Slurm) wait for rank 0
        deadline = time.time() + 3600
        while not (prepared / "summary.json").exists():
            if time.time() > deadline:
                raise TimeoutError(f"{prepared}: rank 0 did not finish preparing the data within an hour")
            time.sleep(2)
    return prepared


def check_tokenizer(cfg: TrainConfig, tokenizer: Any, where: Path) -> None:
    want = tokenizer_name(cfg)
    if tokenizer.name != want:
        raise ValueError(f"{where}: the prepared data uses the {tokenizer.name} tokenizer but --tokenizer is {want}")
    learned = want in ("bpe", "wp", "ug")
    if cfg.vocab_size is not None and cfg.vocab_size != len(tokenizer) and not learned:
        raise ValueError(f"--vocab_size {cfg.vocab_size}: the {want} tokenizer has {len(tokenizer)} tokens; "
                         "drop the flag or give the matching value")  # fmt: skip
    # An already prepared --data_dir is used as is: a tokenization flag it was not prepared with would be ignored.
    overlap = getattr(tokenizer, "overlap", 0)
    if cfg.overlap != overlap:
        raise ValueError(f"--overlap {cfg.overlap}: the prepared data in {where} was tokenized with overlap "
                         f"{overlap}; give the matching value or prepare the data again")  # fmt: skip
    if learned and cfg.vocab_size is not None and cfg.vocab_size != len(tokenizer):
        # a learned vocabulary may come out smaller than asked for: the size it was prepared with also matches
        summary = Path(where) / "summary.json"
        settings = json.loads(summary.read_text()).get("settings", {}) if summary.is_file() else {}
        if cfg.vocab_size != settings.get("vocab_size"):
            raise ValueError(f"--vocab_size {cfg.vocab_size}: the prepared data in {where} has a learned {want} "
                             f"vocabulary of {len(tokenizer)} tokens; give the matching value or prepare the data "
                             "again")  # fmt: skip


def check_warmup(cfg: TrainConfig, updates_per_epoch: int) -> None:
    """Refuse a run whose lr warmup lasts as long as the run itself: the lr would never leave the ramp up from
    --warmup-lr (1e-8 by default), and the run would finish without having learned (silently)."""
    if cfg.sched == "none" or not cfg.warmup_epochs or cfg.warmup_prefix:
        return
    warmup_updates = cfg.warmup_epochs * updates_per_epoch
    run_updates = cfg.epochs * updates_per_epoch
    if cfg.max_steps > 0:
        run_updates = min(run_updates, cfg.max_steps)
    if warmup_updates >= run_updates:
        length = f"--max-steps {cfg.max_steps}" if cfg.max_steps > 0 else f"--epochs {cfg.epochs}"
        raise ValueError(f"--warmup-epochs {cfg.warmup_epochs:g} ({warmup_updates:g} updates) covers the whole run "
                         f"({length}, {run_updates} updates): the lr would never leave its warmup from --warmup-lr "
                         f"{cfg.warmup_lr:g}; pass a shorter --warmup-epochs (0, or a fraction with "
                         "--sched-on-updates) or train longer")  # fmt: skip


def model_config(cfg: TrainConfig, vocab_size: int) -> dict[str, Any]:
    from helm.models import ModelConfig

    values = {name: getattr(cfg, name) for name in ModelConfig.field_names() if hasattr(cfg, name)}
    values["vocab_size"] = vocab_size
    values["bidirectional"] = cfg.bidirectional or cfg.mode == "mlm"
    ModelConfig.from_dict(values)  # fail now, with the field named, rather than inside the trainer
    return values


def atomic_checkpoint_io() -> Any:
    """Checkpoints written to a temporary name and renamed: a run killed mid-save (SIGKILL, a Slurm
    preemption) keeps its previous, complete last.ckpt instead of a truncated one that resume cannot read."""
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    class _Atomic(TorchCheckpointIO):
        def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
            path = Path(path)
            tmp = path.with_name(path.name + ".tmp")
            super().save_checkpoint(checkpoint, tmp, storage_options)
            os.replace(tmp, path)

    return _Atomic()


def check_checkpoint(path: Path, vocab_tokens: list[str]) -> None:
    """Refuse a checkpoint trained on another vocabulary before any training starts."""
    from helm.run import load_checkpoint

    try:
        ckpt = load_checkpoint(path)
    except (FileNotFoundError, ValueError) as e:  # its messages name the file and the reason
        raise type(e)(f"--resume {e}") from None
    hp = ckpt.get("hyper_parameters", {})
    if "vocab_tokens" not in hp:
        raise ValueError(f"--resume {path}: not a helm training checkpoint (no vocabulary in its hyper-parameters)")
    if list(hp["vocab_tokens"]) != list(vocab_tokens):
        raise ValueError(f"--resume {path}: trained on a different vocabulary ({len(hp['vocab_tokens'])} tokens, "
                         f"{hp.get('vocab_kind')}) than this run's tokenizer ({len(vocab_tokens)} tokens)")  # fmt: skip


def prepare_run(cfg: TrainConfig) -> tuple[Path, str | None]:
    """Output directory checks: refuse a finished run (unless --overwrite), find the checkpoint to resume."""
    from helm import run

    out = Path(cfg.output or default_output(cfg))
    if run.is_finished(out) and not cfg.overwrite:
        raise FileExistsError(f"--output {out}: holds a finished run (metrics.json); pass --overwrite to replace it")
    if cfg.overwrite:  # start over: remove what an earlier run wrote (never anything else in the directory)
        if _rank() == 0:
            import shutil

            source = Path(cfg.resume).resolve() if cfg.resume else None
            for entry in OWN_ENTRIES:
                target = out / entry
                if source is not None and (source == target.resolve() or target.resolve() in source.parents):
                    # --resume from inside this run (extending a finished run in place): the checkpoint asked for
                    # must survive, and the checkpoints beside it belong to the same run's history
                    continue
                shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    ckpt = cfg.resume
    if ckpt is None and (last := run.last_checkpoint(out)) is not None:
        old = run.read_config(out) if (out / run.CONFIG_FILE).exists() else {}
        new = to_dict(cfg)
        changed = sorted(k for k in new if k not in RUNTIME_KEYS and k in old and old[k] != new[k])
        if changed:
            raise ValueError(f"--output {out}: holds an unfinished run with different settings ({', '.join(changed)}); "
                             "use another --output or --overwrite")  # fmt: skip
        ckpt = str(last)
    return out, ckpt


def _quiet_lightning() -> None:
    """Drop Lightning's advertisements and a warning that fires whenever `srun` is on PATH (not a Slurm job)."""
    import logging
    import warnings

    warnings.filterwarnings("ignore", message=".*The `srun` command is available on your system.*")
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*")
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(lambda record: "Tip:" not in str(record.msg))


def _clock():
    """A callback timing the training steps themselves (for tokens/s): start-up, the validations during training
    and the final evaluation are left out."""
    import lightning.pytorch as pl

    class Clock(pl.Callback):
        start = seconds = validating = 0.0
        val_start: float | None = None

        def on_train_start(self, trainer, module) -> None:
            self.start = time.perf_counter()

        def on_validation_start(self, trainer, module) -> None:
            self.val_start = time.perf_counter()

        def on_validation_end(self, trainer, module) -> None:
            if self.val_start is not None and self.start:  # validations inside the training loop only
                self.validating += time.perf_counter() - self.val_start
            self.val_start = None

        def on_train_end(self, trainer, module) -> None:
            self.seconds = time.perf_counter() - self.start - self.validating

    return Clock()


def _data_module(no_prefetcher: bool):
    """helm.data.HelmDataModule; with --no-prefetcher its loaders prefetch 1 batch per worker instead of 2."""
    from helm.data import HelmDataModule

    if not no_prefetcher:
        return HelmDataModule

    class DataModule(HelmDataModule):
        @staticmethod
        def _less_prefetch(loader):
            if loader.num_workers > 0:
                loader.prefetch_factor = 1
            return loader

        def train_dataloader(self):
            return self._less_prefetch(super().train_dataloader())

        def val_dataloader(self):
            return self._less_prefetch(super().val_dataloader())

        def test_dataloader(self):
            return self._less_prefetch(super().test_dataloader())

    return DataModule


def fit(cfg: TrainConfig) -> dict[str, Any]:
    """Train per `cfg`, write the run directory, return the final metrics (see helm.run for the layout)."""
    t0 = time.time()
    import lightning.pytorch as pl
    import torch
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger
    from lightning.pytorch.utilities.exceptions import MisconfigurationException

    from helm import run
    from helm.module import HelmModule, training_epochs
    from helm.tokenizers import load_tokenizer

    _quiet_lightning()
    cfg = dataclasses.replace(cfg, val_metric_mode=cfg.val_metric_mode or EVAL_METRICS[cfg.eval_metric])
    out, ckpt = prepare_run(cfg)
    data_dir = resolve_data(cfg, out)
    tokenizer = load_tokenizer(data_dir)
    check_tokenizer(cfg, tokenizer, data_dir)
    vocab = tokenizer.vocab
    mcfg = model_config(cfg, len(vocab))
    if ckpt:
        check_checkpoint(Path(ckpt), list(vocab.tokens))

    pl.seed_everything(cfg.seed, workers=cfg.worker_seeding == "all", verbose=False)
    gpu = cfg.accelerator in ("cuda", "gpu") or (cfg.accelerator == "auto" and torch.cuda.is_available())
    workers = cfg.num_workers if cfg.num_workers is not None else (4 if gpu else 0)
    dm = _data_module(cfg.no_prefetcher)(
        data_dir,
        mode=cfg.mode,
        max_seq_len=cfg.max_seq_len,
        batch_size=cfg.batch_size,
        masking_strategy=cfg.masking_strategy,
        masking_ratio=cfg.masking_ratio,
        mask_replace=cfg.mask_replace,
        num_workers=workers,
        seed=cfg.seed,
        num_samples=cfg.num_samples,
        pin_memory=cfg.pin_mem,
        position_ids=cfg.position_ids,
        group_by_length=cfg.group_by_length,
    )
    n_train = len(dm.dataset("train"))
    # sequences cut at --max_seq_len: counted per split, printed and kept in metrics.json (never silent)
    truncated = {split: dm.dataset(split).truncated() for split in ("train", "val", "test")}
    if any(truncated.values()) and _rank() == 0:
        counts = ", ".join(f"{split} {n:,} of {len(dm.dataset(split)):,}" for split, n in truncated.items())
        print(f"helm train: sequences longer than --max_seq_len {cfg.max_seq_len} are cut: {counts}", file=sys.stderr)
    if n_train < world_size(cfg):
        raise ValueError(f"{data_dir}: {n_train} training sequences, fewer than the {world_size(cfg)} processes")
    batches = math.ceil(n_train // world_size(cfg) / cfg.batch_size)
    if cfg.limit_train_batches is not None:
        lim = cfg.limit_train_batches
        batches = min(batches, int(lim) if isinstance(lim, int) or lim > 1 else max(1, int(batches * lim)))
    updates_per_epoch = math.ceil(batches / cfg.grad_accum_steps)  # Lightning steps on an epoch's last partial group
    repeats = cfg.epoch_repeats if cfg.epoch_repeats > 0 else 1.0
    check_warmup(cfg, max(1, round(updates_per_epoch * repeats)))
    lr = resolved_lr(cfg)
    train_epochs = training_epochs(to_dict(cfg))  # --epochs + cooldown, further lr cycles, warmup prefix (timm)
    module = HelmModule(
        config=to_dict(cfg),
        model_config=mcfg,
        vocab_kind=vocab.kind,
        vocab_tokens=list(vocab.tokens),
        vocab_k=vocab.k,
        updates_per_epoch=max(1, round(updates_per_epoch * repeats)) if cfg.epoch_repeats > 0 else updates_per_epoch,
        lr=lr,
    )
    available = {f"val_{name}" for name in module.val_metrics} | {"val_loss"}
    if cfg.eval_metric not in available:
        raise ValueError(f"--eval-metric {cfg.eval_metric}: not measured for the {tokenizer.name} vocabulary "
                         f"(available: {', '.join(sorted(available))})")  # fmt: skip
    num_parameters = sum(p.numel() for p in module.model.parameters())
    if _rank() == 0:
        resolved = to_dict(cfg)
        resolved[DERIVED_KEY] = {
            "output": str(out), "prepared_data": str(data_dir), "tokenizer": tokenizer.name, "vocab_size": len(vocab),
            "lr": lr, "global_batch": global_batch(cfg), "world_size": world_size(cfg), "precision": precision(cfg),
            "num_parameters": num_parameters, "updates_per_epoch": updates_per_epoch, "train_epochs": train_epochs,
            "model": mcfg,
        }  # fmt: skip
        run.write_config(out, resolved)
        tokenizer.save(out / run.TOKENIZER_DIR)
        print(f"helm train: {cfg.model_name} {num_parameters:,} parameters, lr {lr:.3g}, global batch "
              f"{global_batch(cfg)}, {n_train:,} training sequences -> {out}" + (f" (resuming {ckpt})" if ckpt else ""),
              file=sys.stderr)  # fmt: skip

    monitor, mode = cfg.eval_metric, cfg.val_metric_mode
    ckpt_dir = out / run.CHECKPOINT_DIR
    best_cb = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="{epoch}-{step}-{" + monitor + ":.4f}",
        monitor=monitor,
        mode=mode,
        save_top_k=cfg.checkpoint_hist,
        save_last=True,
        enable_version_counter=False,
    )
    clock = _clock()
    callbacks: list[pl.Callback] = [best_cb, clock]
    if cfg.checkpoint_every_n_steps:
        # last.ckpt between validations, so a killed run loses at most N updates
        callbacks.append(
            ModelCheckpoint(
                dirpath=ckpt_dir,
                save_top_k=0,
                save_last=True,
                every_n_train_steps=cfg.checkpoint_every_n_steps,
                enable_version_counter=False,
            )
        )
    if cfg.early_stop:
        callbacks.append(EarlyStopping(monitor=monitor, mode=mode, patience=cfg.patience_epochs))
    if cfg.progress_bar:
        from lightning.pytorch.callbacks import TQDMProgressBar

        callbacks.append(TQDMProgressBar(refresh_rate=max(1, cfg.log_interval)))

    plugins: list[Any] = [atomic_checkpoint_io()]
    from lightning.fabric.plugins.environments import SLURMEnvironment

    if SLURMEnvironment.detect():
        plugins.append(SLURMEnvironment(auto_requeue=True))
    strategy = cfg.distributed_backend
    if strategy == "auto" and world_size(cfg) > 1:
        strategy = "ddp"
    epochs = train_epochs - (cfg.start_epoch or 0)
    trainer_kwargs = dict(
        accelerator=cfg.accelerator,
        devices=cfg.num_devices,
        num_nodes=cfg.num_nodes,
        strategy=strategy,
        precision=precision(cfg),
        max_epochs=max(1, round(epochs * repeats)),
        max_steps=cfg.max_steps,
        accumulate_grad_batches=cfg.grad_accum_steps,
        limit_train_batches=cfg.limit_train_batches,
        limit_val_batches=cfg.limit_val_batches,
        limit_test_batches=cfg.limit_test_batches,
        val_check_interval=cfg.val_check_interval,
        check_val_every_n_epoch=max(1, round(repeats)),
        num_sanity_val_steps=cfg.num_sanity_val_steps,
        log_every_n_steps=cfg.log_interval,
        enable_progress_bar=cfg.progress_bar,
        enable_model_summary=False,
        sync_batchnorm=cfg.sync_bn,
        use_distributed_sampler=False,  # helm.data's EpochSampler splits by rank and resumes mid-epoch
        logger=TensorBoardLogger(save_dir=str(out), name=run.TB_DIR, version="", default_hp_metric=False),
        callbacks=callbacks,
        plugins=plugins,
        default_root_dir=str(out),
    )
    try:
        trainer = pl.Trainer(**trainer_kwargs)
    except (MisconfigurationException, ModuleNotFoundError) as e:
        # hardware or an optional package this machine lacks (no GPU, no torch_xla, DeepSpeed, transformer_engine)
        raise ValueError(f"--accelerator {cfg.accelerator} / --distributed-backend {strategy} / --precision "
                         f"{precision(cfg)}: {e}") from None  # fmt: skip
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt, weights_only=True)  # data, never code (check_checkpoint)
    steps = trainer.global_step

    # Select the exported weights: the best checkpoint by --eval-metric (its EMA when EMA is on).
    best = best_cb.best_model_path
    if best and Path(best).exists():
        state = run.load_checkpoint(best)
        module.load_state_dict(state["state_dict"])
        module.on_load_checkpoint(state)
    final: dict[str, Any] = {}
    for stage, loader in (("val", dm.val_dataloader), ("test", dm.test_dataloader)):
        if stage == "test" and (not cfg.test or len(dm.dataset("test")) == 0):
            continue
        if len(dm.dataset(stage)) == 0:
            continue
        evaluate = trainer.validate if stage == "val" else trainer.test
        results = evaluate(module, dataloaders=loader(), verbose=False)
        final.update({k: float(v) for k, v in (results[0] if results else {}).items()})
    # on the module's device: NCCL reduces CUDA tensors only
    tokens = torch.tensor(float(module.tokens_seen), dtype=torch.float64, device=module.device)
    if trainer.world_size > 1:
        tokens = trainer.strategy.reduce(tokens, reduce_op="sum")
    if trainer.global_rank == 0:
        module.eval_model().save_pretrained(out / run.MODEL_DIR)
        final.update(
            num_parameters=num_parameters,
            steps=steps,
            epochs=trainer.current_epoch,
            train_tokens=float(tokens),
            tokens_per_s=float(tokens) / clock.seconds if clock.seconds > 0 else None,
            train_time_s=clock.seconds,
            wall_time_s=time.time() - t0,
            selected_checkpoint=str(best) if best else "last",
            **{f"truncated_{split}": n for split, n in truncated.items()},
            ema=cfg.model_ema,
            resumed_from=ckpt,
        )
        run.write_metrics(out, final)
        shown = ", ".join(f"{k} {final[k]:.4g}" for k in ("val_ppl", "val_acc", "val_aa_acc", "test_ppl", "test_acc",
                                                         "test_aa_acc") if isinstance(final.get(k), float))  # fmt: skip
        speed = f"{final['tokens_per_s'] or 0:,.0f} tokens/s"
        print(f"helm train: done, {steps} updates in {clock.seconds:.0f} s of training ({speed}); {shown} -> "
              f"{out / run.METRICS_FILE}", file=sys.stderr)  # fmt: skip
    return final


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    try:
        fit(cfg)
    except (FileNotFoundError, FileExistsError, ValueError, TimeoutError) as e:
        print(f"helm train: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
