"""`python train.py` / `helm train`: every flag of the HELM seed's train.py, plus `--config` YAML.

Precedence of values: field defaults < `--preset` (model sizes) < `--config` YAML < command line. The flags, their
help, types, choices and checks all come from the typed config tree in helm/config.py; this module parses them,
prepares the data and runs Lightning: `fit` reads as parse -> data -> module -> trainer -> results.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from helm import files, run
from helm.args import HelmParser, add_dataclass, command_errors, typed
from helm.config import EVAL_METRICS, FLAGS, GROUPS, MODEL_DERIVED, TAGS, TrainConfig, check_registries
from helm.errors import user_message
from helm.prepare import SUMMARY_FILE
from helm.splits import SPLITS
from helm.tokenizers import LEARNED, LEARNED_VOCAB_SIZE

PROG = "helm train"
DERIVED_KEY = "derived"  # the section of a run's config.yaml holding values computed from the flags
# where that run lives, what it did to its directory and what it is called: reusing its settings must never
# rewrite or delete it, nor give a new run its name
RUN_LOCAL_KEYS = ("output", "overwrite", "resume", TAGS)


# ------------------------------------------------------------------------------------------ the parser
def build_parser() -> HelmParser:
    description = ("Pretrain an mRNA language model (the HELM train.py flags). Every flag is accepted as --a_b and "
                   "--a-b; --config YAML supplies defaults that the command line overrides.")  # fmt: skip
    parser = HelmParser(PROG, description)
    parser.add_argument("--config", "-c", default=None, help="YAML file of flag: value defaults (a run's own "
                        "config.yaml is one)")  # fmt: skip
    add_dataclass(parser, TrainConfig, title="backbone", skip=(*GROUPS, TAGS))  # tags: a --config section only
    for name, klass in GROUPS.items():
        # --data / --out: the input and output names every helm command accepts
        aliases = {"data_dir": ("--data",), "output": ("--out",)}
        add_dataclass(parser, klass, skip=MODEL_DERIVED if name == "model" else (), aliases=aliases)
    return parser


def load_yaml_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read a --config YAML file into typed ``{flag: value}`` (and ``tags``): see `config_values`."""
    path = Path(path)
    where = f"--config {path}"
    if not path.is_file():
        raise FileNotFoundError(f"{where}: file not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{where}: not valid YAML: {' '.join(str(e).split())}") from None
    return config_values(raw, where)


def config_values(raw: Any, where: str) -> dict[str, Any]:
    """A --config mapping -> typed ``{flag: value}``: keys are flag names (either spelling, without dashes in
    front), at the top level or under their group (``optim: {lr: 1e-3}``); values are typed as on the command
    line; a ``tags`` section is kept as the run's labels. A run's own resolved config.yaml is one (its ``derived``
    section, its run-local keys and its tags are skipped: they belong to that run). Errors start with `where`."""
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a mapping of flag: value, got {type(raw).__name__}")
    own_run = DERIVED_KEY in raw  # a run's resolved config.yaml: its derived values are recomputed, not inputs
    sections = {g: v for g, v in raw.items() if g in GROUPS and isinstance(v, dict)}
    items = [(None, k, v) for k, v in raw.items() if k not in sections]
    items += [(g, k, v) for g, section in sections.items() for k, v in section.items()]
    values = {}
    for group, key, value in items:
        name = str(key).lstrip("-").replace("-", "_")
        if key == DERIVED_KEY or (own_run and name in RUN_LOCAL_KEYS):
            continue
        if key == TAGS and group is None:
            if not isinstance(value, dict):
                raise ValueError(f"{where}: tags: expected a mapping of name: value, got {type(value).__name__}")
            values[TAGS] = dict(value)
            continue
        if name not in FLAGS:
            close = difflib.get_close_matches(name, FLAGS, n=3)
            raise ValueError(f"{where}: unknown key {key!r}" + (f"; did you mean {', '.join(close)}?" if close else ""))
        if group is not None and FLAGS[name] is not GROUPS[group]:
            owner = next((g for g, klass in GROUPS.items() if klass is FLAGS[name]), "the top level")
            raise ValueError(f"{where}: {name} is not a {group} setting (it belongs under {owner})")
        try:
            values[name] = typed(FLAGS[name], name, value)
        except ValueError as e:
            raise ValueError(f"{where}: {name}: {e}") from None
    return values


def _preset_values(name: str) -> dict[str, Any]:
    from helm.models import get_preset

    try:
        preset = dict(get_preset(name))
    except (KeyError, ValueError) as e:
        raise ValueError(f"--preset {name}: {str(e).strip(chr(34))}") from None
    preset["model_name"] = preset.pop("model")
    return preset


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    """Command line (+ --config YAML, + --preset) -> a checked TrainConfig; any error is one line and exit 2
    (files are checked in `prepare_run` and `resolve_data`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # First pass: only --config and --preset, to layer their values under the command line.
    pre = HelmParser(PROG, add_help=False)
    pre.add_argument("--config", "-c", default=None)
    pre.add_argument("--preset", default=None)
    known, _ = pre.parse_known_args(argv)
    with command_errors(PROG):
        yaml_values = load_yaml_config(known.config) if known.config else {}
        preset_name = known.preset or yaml_values.get("preset")
        preset = _preset_values(preset_name) if preset_name else {}
    parser.set_defaults(**(preset | yaml_values))
    values = vars(parser.parse_args(argv))
    explicit = {a.split("=")[0] for a in argv} & {"--model_name", "--model-name"} or "model_name" in yaml_values
    if preset and explicit and values["model_name"] != preset["model_name"]:
        parser.error(f"--preset {preset_name} is a {preset['model_name']} preset but --model_name is "
                     f"{values['model_name']}")  # fmt: skip
    with command_errors(PROG):
        cfg = TrainConfig.from_flat(values)
        check_registries(cfg)
    return cfg


def request_config(document: dict[str, Any], where: str) -> TrainConfig:
    """The TrainConfig that ``helm train --config FILE`` builds from a file holding `document` (its preset under
    its values; registries unchecked): the workflow checks every run's request with it while it builds the DAG.
    A bad key or value raises ValueError naming `where` and the flag."""
    values = config_values(document, where)
    try:
        preset = _preset_values(values["preset"]) if values.get("preset") else {}
        return TrainConfig.from_flat(preset | values)
    except ValueError as e:
        raise ValueError(f"{where}: {user_message(e)}") from None


# ------------------------------------------------------------------------------- data and its checks
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
    from helm.callbacks import rank

    d = cfg.data
    if not d.data_dir:
        raise ValueError("--data_dir is required (a prepared directory, or raw files with --train_file)")
    data_dir = Path(d.data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"--data_dir {data_dir}: directory not found")
    if (data_dir / SUMMARY_FILE).exists():
        return data_dir
    if not d.train_file:
        raise ValueError(f"--data_dir {data_dir} is not a prepared directory (no summary.json): give --train_file")
    files = {split: [_data_file(data_dir, name, d.file_extension, f"--{split}_file")] if name else []
             for split, name in (("train", d.train_file), ("val", d.val_file), ("test", d.test_file))}  # fmt: skip
    prepared = out / run.PREPARED_DIR
    settings = {"tokenizer": d.tokenizer_name, "overlap": d.overlap, "column": d.column_name, "seed": cfg.run.seed,
                "train_files": files["train"], "val_files": files["val"], "test_files": files["test"],
                "vocab_size": d.vocab_size or LEARNED_VOCAB_SIZE}  # fmt: skip
    if rank() == 0:
        from helm.prepare import format_summary, prepare

        summary = prepare(output=prepared, progress=cfg.run.progress_bar, **settings)
        print(format_summary(prepared, summary), file=sys.stderr)  # kept and rejected rows, by reason, as prepare
    else:  # other ranks (started by Lightning or Slurm) wait for rank 0 to prepare these files (not a stale copy)
        from helm.prepare import is_prepared

        deadline = time.time() + 3600
        while not is_prepared(prepared, **settings):
            if time.time() > deadline:
                raise TimeoutError(f"{prepared}: rank 0 did not finish preparing the data within an hour")
            time.sleep(2)
    return prepared


def check_tokenizer(cfg: TrainConfig, tokenizer: Any, where: Path) -> None:
    """The prepared data must be tokenized as the flags say (a prepared --data_dir is used as is)."""
    want, vocab_size = cfg.data.tokenizer_name, cfg.data.vocab_size
    if tokenizer.name != want:
        raise ValueError(f"{where}: the prepared data uses the {tokenizer.name} tokenizer but --tokenizer is {want}")
    learned = want in LEARNED  # a fixed tokenizer's --vocab_size was checked while parsing (DataArgs)
    overlap = getattr(tokenizer, "overlap", 0)
    if cfg.data.overlap != overlap:
        raise ValueError(f"--overlap {cfg.data.overlap}: the prepared data in {where} was tokenized with overlap "
                         f"{overlap}; give the matching value or prepare the data again")  # fmt: skip
    if learned and vocab_size is not None and vocab_size != len(tokenizer):
        # a learned vocabulary may come out smaller than asked for: the size it was prepared with also matches
        summary = Path(where) / SUMMARY_FILE
        settings = json.loads(summary.read_text()).get("settings", {}) if summary.is_file() else {}
        if vocab_size != settings.get("vocab_size"):
            raise ValueError(f"--vocab_size {vocab_size}: the prepared data in {where} has a learned {want} "
                             f"vocabulary of {len(tokenizer)} tokens; give the matching value or prepare the data "
                             "again")  # fmt: skip


def check_warmup(cfg: TrainConfig, updates_per_epoch: int) -> None:
    """Refuse a run whose lr warmup lasts as long as the run itself: the lr would never leave the ramp up from
    --warmup-lr (1e-8 by default), and the run would finish without having learned (silently)."""
    s = cfg.schedule
    if s.sched == "none" or not s.warmup_epochs or s.warmup_prefix:
        return
    warmup_updates = s.warmup_epochs * updates_per_epoch
    run_updates = s.epochs * updates_per_epoch
    if s.max_steps > 0:
        run_updates = min(run_updates, s.max_steps)
    if warmup_updates >= run_updates:
        length = f"--max-steps {s.max_steps}" if s.max_steps > 0 else f"--epochs {s.epochs}"
        raise ValueError(f"--warmup-epochs {s.warmup_epochs:g} ({warmup_updates:g} updates) covers the whole run "
                         f"({length}, {run_updates} updates): the lr would never leave its warmup from --warmup-lr "
                         f"{s.warmup_lr:g}; pass a shorter --warmup-epochs (0, or a fraction with "
                         "--sched-on-updates) or train longer")  # fmt: skip


def updates_per_pass(cfg: TrainConfig, n_train: int) -> int:
    """Optimizer updates in one pass over the training split (one Lightning epoch), per rank."""
    batches = math.ceil(n_train // cfg.run.world_size / cfg.data.batch_size)
    if (lim := cfg.run.limit_train_batches) is not None:
        batches = min(batches, int(lim) if isinstance(lim, int) or lim > 1 else max(1, int(batches * lim)))
    return math.ceil(batches / cfg.optim.grad_accum_steps)  # Lightning steps on an epoch's last partial group


def load_data(cfg: TrainConfig, data_dir: Path) -> tuple[Any, dict[str, int], int]:
    """(the data module, sequences cut per split, optimizer updates per schedule epoch); checks the tokenizer, the
    split sizes and the warmup against the data."""
    from helm.callbacks import rank
    from helm.data import HelmDataModule

    workers = cfg.run.num_workers if cfg.run.num_workers is not None else (4 if cfg.run.gpu else 0)
    dm = HelmDataModule.from_config(data_dir, cfg, workers)
    check_tokenizer(cfg, dm.tokenizer, data_dir)
    # sequences cut at --max_seq_len: counted per split, printed and kept in metrics.json (never silent)
    truncated = {split: dm.dataset(split).truncated() for split in SPLITS}
    if any(truncated.values()) and rank() == 0:
        counts = ", ".join(f"{split} {n:,} of {len(dm.dataset(split)):,}" for split, n in truncated.items())
        print(f"{PROG}: sequences longer than --max_seq_len {cfg.model.max_seq_len} are cut: {counts}", file=sys.stderr)
    n_train, world = len(dm.dataset("train")), cfg.run.world_size
    if n_train < world:
        raise ValueError(f"{data_dir}: {n_train} training sequences, fewer than the {world} processes")
    updates = updates_per_pass(cfg, n_train)
    if cfg.schedule.epoch_repeats > 0:
        updates = max(1, round(updates * cfg.schedule.epoch_repeats))
    check_warmup(cfg, updates)
    return dm, truncated, updates


# ---------------------------------------------------------------------------- the output directory
# Keys that may change between an interrupted run and its continuation (everything else must match).
RUNTIME_KEYS = {
    "resume", "overwrite", "num_workers", "pin_mem", "no_prefetcher", "progress_bar", "accelerator",
    "log_interval", "num_sanity_val_steps", "output", "data_dir", "train_file", "val_file", "test_file",
    "file_extension", "checkpoint_every_n_steps", "test", "max_steps", "limit_val_batches", "limit_test_batches",
    "val_check_interval", "precision", "compile",
}  # fmt: skip


def prepare_run(cfg: TrainConfig) -> tuple[Path, str | None]:
    """Output directory checks (nothing is deleted here: `--overwrite` clears the old run only once every check
    has passed, in `fit`): refuse a finished run unless --overwrite, find the checkpoint to resume (never an old
    one when overwriting, on any rank)."""
    from helm.callbacks import rank

    out = cfg.output
    if run.is_finished(out) and not cfg.run.overwrite:
        raise FileExistsError(f"--output {out}: holds a finished run (metrics.json); pass --overwrite to replace it")
    ckpt = cfg.run.resume
    if ckpt is None and not cfg.run.overwrite and (last := run.last_checkpoint(out)) is not None:
        old = run.read_config(out) if (out / run.CONFIG_FILE).exists() else {}
        if old.get("val_metric_mode") is None and "eval_metric" in old:  # unset = the metric's own direction
            old["val_metric_mode"] = EVAL_METRICS.get(old["eval_metric"])
        new = cfg.flat() | {"val_metric_mode": cfg.metric_mode}
        changed = sorted(k for k in new if k not in RUNTIME_KEYS and k in old and old[k] != new[k])
        if changed:
            raise ValueError(f"--output {out}: holds an unfinished run with different settings ({', '.join(changed)}); "
                             "use another --output or --overwrite")  # fmt: skip
        ckpt = str(last)
    if ckpt is None and (out / run.CONFIG_FILE).exists() and rank() == 0:  # an earlier start of this --output
        why = "--overwrite" if cfg.run.overwrite else f"no {run.CHECKPOINT_DIR}/{run.LAST_CKPT} to resume"
        print(f"{PROG}: --output {out}: {why}: starting from scratch", file=sys.stderr)
    return out, ckpt


def check_checkpoint(path: Path, vocab_tokens: list[str]) -> int:
    """Refuse a checkpoint trained on another vocabulary before any training starts; returns its update count."""
    try:
        ckpt = run.load_checkpoint(path)
    except (FileNotFoundError, ValueError) as e:  # its messages name the file and the reason
        fix = "--resume another checkpoint, or start over with --overwrite (no --resume)"
        raise type(e)(f"--resume {e}; {fix}") from None
    hp = ckpt.get("hyper_parameters", {})
    if "vocab_tokens" not in hp:
        raise ValueError(f"--resume {path}: not a helm training checkpoint (no vocabulary in its hyper-parameters)")
    if list(hp["vocab_tokens"]) != list(vocab_tokens):
        raise ValueError(f"--resume {path}: trained on a different vocabulary ({len(hp['vocab_tokens'])} tokens, "
                         f"{hp.get('vocab_kind')}) than this run's tokenizer ({len(vocab_tokens)} tokens)")  # fmt: skip
    return int(ckpt.get("global_step", 0))


def trainer_epochs(cfg: TrainConfig, train_epochs: int) -> int:
    """Lightning epochs (passes over the data) of the whole run: with --epoch-repeats, several make one epoch."""
    s = cfg.schedule
    repeats = s.epoch_repeats if s.epoch_repeats > 0 else 1.0
    return max(1, round((train_epochs - (s.start_epoch or 0)) * repeats))


def check_resume_length(cfg: TrainConfig, path: Path, done: int, per_pass: int, train_epochs: int) -> None:
    """Refuse a resume that would train 0 updates although the flags ask for more (or fewer) than the checkpoint
    holds: the run would finish at once while its config.yaml claimed the asked length. A checkpoint that holds
    exactly what is asked (a run killed after its last checkpoint) finishes as it should."""
    max_steps, epochs = cfg.schedule.max_steps, cfg.schedule.epochs
    by_epochs = trainer_epochs(cfg, train_epochs) * per_pass  # what the epochs allow
    if 0 < max_steps < done:
        raise ValueError(f"--max-steps {max_steps}: the checkpoint {path} already holds {done} updates; pass "
                         f"--max-steps {done} or more, or start a new run")  # fmt: skip
    if max_steps > done and by_epochs <= done:
        raise ValueError(f"--max-steps {max_steps}: the checkpoint {path} already holds {done} updates, all that "
                         f"--epochs {epochs} allows ({by_epochs}, {per_pass} per pass over the data); raise --epochs "
                         "to train further")  # fmt: skip


def write_start(cfg: TrainConfig, out: Path, data_dir: Path, dm: Any, module: Any, derived: dict[str, Any]) -> None:
    """config.yaml (flags + tags + derived values) and the tokenizer, before the first step; one line to stderr."""
    n = sum(p.numel() for p in module.model.parameters())
    derived |= {"output": str(out), "prepared_data": str(data_dir), "tokenizer": dm.tokenizer.name,
                "vocab_size": len(dm.vocab), "lr": cfg.lr, "global_batch": cfg.global_batch,
                "world_size": cfg.run.world_size, "precision": cfg.precision(), "num_parameters": n,
                "val_metric_mode": cfg.metric_mode,
                "model": module.hparams.model_config}  # fmt: skip
    run.write_config(out, cfg.flat() | ({TAGS: cfg.tags} if cfg.tags else {}) | {DERIVED_KEY: derived})
    dm.tokenizer.save(out / run.TOKENIZER_DIR)
    print(f"{PROG}: {cfg.model_name} {n:,} parameters, lr {cfg.lr:.3g}, global batch {cfg.global_batch}, "
          f"{len(dm.dataset('train')):,} training sequences -> {out}", file=sys.stderr)  # fmt: skip


# -------------------------------------------------------------------------------------- the trainer
def build_trainer(cfg: TrainConfig, out: Path, callbacks: list[Any], train_epochs: int) -> Any:
    """A Lightning Trainer for `cfg`; hardware or packages this machine lacks are one clear error."""
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import TensorBoardLogger
    from lightning.pytorch.utilities.exceptions import MisconfigurationException

    from helm.callbacks import plugins

    r, s = cfg.run, cfg.schedule
    strategy = "ddp" if r.distributed_backend == "auto" and r.world_size > 1 else r.distributed_backend
    repeats = s.epoch_repeats if s.epoch_repeats > 0 else 1.0
    try:
        return pl.Trainer(
            accelerator=r.accelerator, devices=r.num_devices, num_nodes=r.num_nodes, strategy=strategy,
            precision=cfg.precision(), max_epochs=trainer_epochs(cfg, train_epochs),
            max_steps=-1, accumulate_grad_batches=cfg.optim.grad_accum_steps,  # --max-steps: StopAtMaxSteps
            limit_train_batches=r.limit_train_batches, limit_val_batches=r.limit_val_batches,
            limit_test_batches=r.limit_test_batches, val_check_interval=r.val_check_interval,
            check_val_every_n_epoch=max(1, round(repeats)), num_sanity_val_steps=r.num_sanity_val_steps,
            log_every_n_steps=r.log_interval, enable_progress_bar=r.progress_bar, enable_model_summary=False,
            sync_batchnorm=r.sync_bn,
            use_distributed_sampler=False,  # helm.data's EpochSampler splits by rank and resumes mid-epoch
            logger=TensorBoardLogger(save_dir=str(out), name=run.TB_DIR, version="", default_hp_metric=False),
            callbacks=callbacks, plugins=plugins(), default_root_dir=str(out),
        )  # fmt: skip
    except (MisconfigurationException, ModuleNotFoundError) as e:
        # hardware or an optional package this machine lacks (no GPU, no torch_xla, DeepSpeed, transformer_engine)
        raise ValueError(f"--accelerator {r.accelerator} / --distributed-backend {strategy} / --precision "
                         f"{cfg.precision()}: {e}") from None  # fmt: skip


def evaluate(cfg: TrainConfig, trainer: Any, module: Any, dm: Any, best: str) -> dict[str, float]:
    """Validation and test metrics of the selected weights: the best checkpoint by --eval-metric (its EMA when EMA
    is on), else the last ones."""
    if best and Path(best).exists():
        state = run.load_checkpoint(best)
        module.load_state_dict(state["state_dict"])
        module.on_load_checkpoint(state)
    final: dict[str, float] = {}
    for stage, loader in (("val", dm.val_dataloader), ("test", dm.test_dataloader)):
        if len(dm.dataset(stage)) == 0 or (stage == "test" and not cfg.run.test):
            continue
        results = (trainer.validate if stage == "val" else trainer.test)(module, dataloaders=loader(), verbose=False)
        final.update({k: float(v) for k, v in (results[0] if results else {}).items()})
    return final


def fit(cfg: TrainConfig, command: list[str] | None = None) -> dict[str, Any]:
    """Train per `cfg`, write the run directory, return the final metrics (see helm/run.py for the layout). Rank 0
    holds the run directory's lock throughout (a second `helm train` on it is refused) and first removes what a
    killed writer left there (temporary checkpoint files). ``command``: the command-line arguments, recorded in
    config.yaml (``derived.command``) for the model card."""
    from helm.callbacks import rank

    if rank() != 0:  # started by rank 0 (Lightning) or beside it (srun): rank 0 owns the directory
        return _fit(cfg, command)
    with files.exclusive(cfg.output, PROG):
        files.remove_temporaries(cfg.output, *(cfg.output / d for d in run.RUN_ENTRIES))
        return _fit(cfg, command)


def _fit(cfg: TrainConfig, command: list[str] | None) -> dict[str, Any]:
    t0 = time.time()
    import lightning.pytorch as pl

    from helm.callbacks import callbacks, quiet_lightning, rank
    from helm.module import HelmModule, training_epochs

    quiet_lightning()
    out, ckpt = prepare_run(cfg)
    data_dir = resolve_data(cfg, out)
    pl.seed_everything(cfg.run.seed, workers=cfg.run.worker_seeding == "all", verbose=False)
    dm, truncated, updates_per_epoch = load_data(cfg, data_dir)
    train_epochs = training_epochs(cfg.schedule)  # --epochs + cooldown, further lr cycles, warmup prefix (timm)
    if ckpt:
        done = check_checkpoint(Path(ckpt), list(dm.vocab.tokens))
        check_resume_length(cfg, Path(ckpt), done, updates_per_pass(cfg, len(dm.dataset("train"))), train_epochs)

    module = HelmModule(cfg, dm.vocab, updates_per_epoch)
    if rank() == 0:
        if cfg.run.overwrite:  # every check passed: now remove what the earlier run wrote (nothing else)
            run.clear_run(out, keep=cfg.run.resume)
        derived = {"updates_per_epoch": updates_per_epoch, "train_epochs": train_epochs}
        if command is not None:
            derived["command"] = shlex.join([*PROG.split(), *command])
        write_start(cfg, out, data_dir, dm, module, derived)
        if ckpt:
            print(f"{PROG}: resuming {ckpt}", file=sys.stderr)

    best, clock, cbs = callbacks(cfg, out)
    trainer = build_trainer(cfg, out, cbs, train_epochs)
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt, weights_only=True)  # data, never code (check_checkpoint)
    final = evaluate(cfg, trainer, module, dm, best.best_model_path)
    tokens = clock.train_tokens(trainer, module)  # since the run's first step, over resumes (every rank: a reduce)
    if trainer.global_rank == 0:
        module.eval_model().save_pretrained(out / run.MODEL_DIR)
        seconds = clock.seconds
        final |= {
            "num_parameters": sum(p.numel() for p in module.model.parameters()), "steps": trainer.global_step,
            "epochs": trainer.current_epoch, "train_tokens": float(tokens),
            "tokens_per_s": float(tokens) / seconds if seconds > 0 else None, "train_time_s": seconds,
            "wall_time_s": time.time() - t0, "selected_checkpoint": best.best_model_path or "last",
            **{f"truncated_{split}": n for split, n in truncated.items()}, "ema": cfg.ema.model_ema,
            "resumed_from": ckpt,
        }  # fmt: skip
        run.write_metrics(out, final)
        shown = ", ".join(f"{k} {final[k]:.4g}" for k in ("val_ppl", "val_acc", "val_aa_acc", "test_ppl", "test_acc",
                                                         "test_aa_acc") if isinstance(final.get(k), float))  # fmt: skip
        speed = f"{final['tokens_per_s'] or 0:,.0f} tokens/s"
        print(f"{PROG}: done, {trainer.global_step} updates in {seconds:.0f} s of training ({speed}); {shown} -> "
              f"{out / run.METRICS_FILE}", file=sys.stderr)  # fmt: skip
    return final


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = parse_args(argv)
        with command_errors(PROG):
            fit(cfg, command=list(sys.argv[1:] if argv is None else argv))
    except SystemExit as e:  # a one-line user error (exit 2) or --help (0): the status, as from the shell
        return e.code if isinstance(e.code, int) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
