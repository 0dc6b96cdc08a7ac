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
`atomic_write` is the project's one atomic file writer (`atomic_path` for files written by other code);
`exclusive` is the one lock that keeps two writers off one output (`helm train` and `helm prepare` take it), and
`remove_temporaries` clears what a killed writer left. What each fault does: docs/ARCHITECTURE.md ("Faults").

Heavy imports (torch, the model registry) happen inside functions so this module imports instantly.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
MODEL_DIR = "model"
TOKENIZER_DIR = "tokenizer"
CHECKPOINT_DIR = "checkpoints"
TB_DIR = "tb"
LAST_CKPT = "last.ckpt"
PREPARED_DIR = "data"  # raw files given to `helm train` are prepared here (kept: a rerun reuses them)
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
    return atomic_write(Path(run_dir) / CONFIG_FILE, yaml.safe_dump(_plain(config), sort_keys=True))


def read_metrics(run_dir: str | os.PathLike) -> dict[str, Any]:
    with open(Path(run_dir) / METRICS_FILE) as f:
        return json.load(f)


def write_metrics(run_dir: str | os.PathLike, metrics: dict[str, Any]) -> Path:
    """Write metrics.json; its presence marks the run as finished (see `is_finished`)."""
    return write_json(Path(run_dir) / METRICS_FILE, metrics)


def write_json(file: str | os.PathLike, payload: Any) -> Path:
    """``payload`` as indented JSON with sorted keys, written atomically (tensors / numpy to builtins, NaN -> null)."""
    return atomic_write(file, json.dumps(_plain(payload), indent=2, sort_keys=True) + "\n")


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


def _holder(lock: Path) -> str:
    try:
        return lock.read_text().strip() or "another process"
    except OSError:
        return "another process"


@contextlib.contextmanager
def exclusive(target: str | os.PathLike, who: str) -> Iterator[None]:
    """Hold the write lock of ``target`` (a run directory, a prepared output) for the block; `who` names this
    command in the lock. A second writer is refused at once with one line naming the holder (pid, host, start),
    never left to delete the first one's files. The lock is ``flock`` on ``.<name>.lock`` beside ``target`` (the
    kernel drops it when its holder dies, also on SIGKILL; NFS v4 supports it) and is removed on release."""
    import fcntl

    target = Path(target)
    lock = target.with_name(f".{target.name}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise FileExistsError(f"--output {target}: {_holder(lock)} is writing it; wait for it to finish or use "
                                  "another --output") from None  # fmt: skip
        try:  # the holder before us may have removed the file between our open and our lock: lock the new one
            if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
        os.write(fd, f"{who} (pid {os.getpid()} on {socket.gethostname()}, started {started})".encode())
        yield
    finally:
        lock.unlink(missing_ok=True)  # while still held: nobody can lock a file that is about to disappear
        os.close(fd)


def _temporary_name(file: Path) -> Path:
    # unique per call: processes on hosts sharing a filesystem can have the same pid, threads share theirs
    return file.with_name(f".{file.name}.tmp{os.getpid()}-{secrets.token_hex(4)}")


_TEMPORARY = re.compile(r"\..+\.tmp\d+-[0-9a-f]{8}")  # the names `_temporary_name` gives


def remove_temporaries(*directories: str | os.PathLike) -> list[Path]:
    """Remove the `atomic_path` files a killed writer left in ``directories`` (not below them; call it holding
    `exclusive`, so no live writer's file is taken); returns them."""
    found = [f for d in map(Path, directories) if d.is_dir() for f in d.iterdir() if _TEMPORARY.fullmatch(f.name)]
    for file in found:
        file.unlink(missing_ok=True)
    return found


@contextlib.contextmanager
def atomic_path(file: str | os.PathLike) -> Iterator[Path]:
    """A temporary name beside ``file`` to write (by any means: a stream, a copy, a library's ``save``); renamed
    onto ``file`` when the block ends, removed if it raises. A killed job never leaves half a file."""
    file = Path(file)
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_name(file)
    try:
        yield tmp
        os.replace(tmp, file)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(file: str | os.PathLike, content: str | bytes) -> Path:
    """Write ``content`` (text or bytes) to ``file`` atomically: all of it or, after a crash, nothing new."""
    with atomic_path(file) as tmp:
        tmp.write_bytes(content) if isinstance(content, bytes) else tmp.write_text(content)
    return Path(file)


def _plain(obj: Any) -> Any:
    """Turn tensors / numpy scalars / paths / tuples into YAML- and JSON-safe builtins (NaN -> None)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):  # torch / numpy scalars
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
