"""Run directories: what a training run leaves behind and how downstream commands load it.

Layout of ``<output>/`` (written by ``helm.train``)::

    config.yaml        resolved training configuration (every flag, after --config and command line)
    tokenizer/         tokenizer.json
    checkpoints/       Lightning checkpoints: top-k by the eval metric + last.ckpt
    model/             config.json + model.safetensors of the selected (best or EMA) weights
    metrics.json       final val/test metrics, parameter count, tokens/s, steps, wall time
    tb/                TensorBoard logs
    data/              the prepared corpus, when ``helm train`` prepared raw files itself

The names above are defined once here (``CONFIG_FILE`` ... ``PREPARED_DIR``); every module uses these constants.
Its files are written with the ground floor's atomic writer (helm/files.py), which also holds the output lock.

Heavy imports (torch, the model registry) happen inside functions so this module imports instantly.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from helm.files import atomic_write, plain, write_json

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
MODEL_DIR = "model"
TOKENIZER_DIR = "tokenizer"
CHECKPOINT_DIR = "checkpoints"
TB_DIR = "tb"
LAST_CKPT = "last.ckpt"
PREPARED_DIR = "data"  # raw files given to `helm train` are prepared here (kept: a rerun reuses them)
TAGS = "tags"  # the section of config.yaml (and of a --config file) holding the run's labels (TrainConfig.tags)
# what a run writes into its directory (`clear_run` removes exactly these; anything else there is the user's)
RUN_ENTRIES = (CONFIG_FILE, TOKENIZER_DIR, CHECKPOINT_DIR, MODEL_DIR, METRICS_FILE, TB_DIR)


@dataclass
class Run:
    """A finished (or at least exported) training run, ready for downstream use."""

    run_id: str
    path: Path
    model: Any  # a helm.models backbone (torch.nn.Module)
    tokenizer: Any  # a helm.tokenizers tokenizer
    config: dict[str, Any]
    metrics: dict[str, Any] | None = None


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a Lightning checkpoint as data, never as code.

    ``torch.load(weights_only=True)`` unpickles only tensors, containers and primitive types (our checkpoints hold
    nothing else), so a tampered or foreign ``.ckpt`` cannot run code on load: it is refused with one line instead.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    check_archive(path)
    try:  # list what unpickling would import, without unpickling anything
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception as e:  # a truncated or non-checkpoint file
        raise ValueError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from None
    if unsafe:
        raise ValueError(f"{path}: refusing to load a checkpoint that holds more than weights and plain data "
                         f"(it would import {', '.join(unsafe)}); helm checkpoints never do, so the file is "
                         "foreign or tampered")  # fmt: skip
    return torch.load(path, map_location="cpu", weights_only=True)


def check_archive(path: Path) -> None:
    """A torch checkpoint is a zip archive with a CRC-32 per member: a file damaged in place (bad disk, a partial
    copy, a stray write) fails it, while ``torch.load`` would read the damaged tensors silently."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise ValueError(f"{path}: damaged checkpoint (not a readable zip archive: {e})") from None
    if bad is not None:
        raise ValueError(f"{path}: damaged checkpoint ({bad} fails its CRC check)")


def load_run(run_dir: str | os.PathLike, device: str = "cpu") -> Run:
    """Load model, tokenizer and resolved config of a run directory (the model in eval mode)."""
    from helm.models import load_pretrained
    from helm.tokenizers import load_tokenizer

    path = Path(run_dir)
    for required in (MODEL_DIR, TOKENIZER_DIR, CONFIG_FILE):
        if not (path / required).exists():
            raise FileNotFoundError(
                f"{path}: not a finished run directory ({required} is missing; was training completed?)"
            )
    model = load_pretrained(path / MODEL_DIR)
    model.to(device).eval()
    tokenizer = load_tokenizer(path / TOKENIZER_DIR)
    metrics = read_metrics(path) if (path / METRICS_FILE).exists() else None
    return Run(
        run_id=path.resolve().name,
        path=path,
        model=model,
        tokenizer=tokenizer,
        config=read_config(path),
        metrics=metrics,
    )


def read_config(run_dir: str | os.PathLike) -> dict[str, Any]:
    file = Path(run_dir) / CONFIG_FILE
    with open(file) as f:
        config = yaml.safe_load(f) or {}
    if not isinstance(config, dict):
        raise ValueError(f"{file}: expected a mapping of flag -> value, got {type(config).__name__}")
    return config


def write_config(run_dir: str | os.PathLike, config: dict[str, Any]) -> Path:
    """Write the resolved config atomically (a crash never leaves half a file)."""
    return atomic_write(Path(run_dir) / CONFIG_FILE, yaml.safe_dump(plain(config), sort_keys=True))


def read_metrics(run_dir: str | os.PathLike) -> dict[str, Any]:
    with open(Path(run_dir) / METRICS_FILE) as f:
        return json.load(f)


def write_metrics(run_dir: str | os.PathLike, metrics: dict[str, Any]) -> Path:
    """Write metrics.json; its presence marks the run as finished (see `is_finished`)."""
    return write_json(Path(run_dir) / METRICS_FILE, metrics)


def is_finished(run_dir: str | os.PathLike) -> bool:
    path = Path(run_dir)
    return (path / METRICS_FILE).exists() and (path / MODEL_DIR).exists()


def clear_run(run_dir: str | os.PathLike, keep: str | os.PathLike | None = None) -> None:
    """Remove what an earlier run wrote into `run_dir` (`RUN_ENTRIES`, nothing else). `keep`: a checkpoint to
    resume from inside this run (extending a finished run in place): it and the checkpoints beside it stay."""
    import shutil

    out = Path(run_dir)
    source = Path(keep).resolve() if keep else None
    for entry in RUN_ENTRIES:
        target = out / entry
        if source is not None and (source == target.resolve() or target.resolve() in source.parents):
            continue
        shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)


def last_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    ckpt = Path(run_dir) / CHECKPOINT_DIR / LAST_CKPT
    return ckpt if ckpt.exists() else None
