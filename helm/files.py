"""The ground floor: how helm writes files. Imports nothing from helm, so every module can use it.

- `atomic_write` / `atomic_path`: the project's one atomic file writer (`atomic_path` for files written by other
  code): a killed job never leaves half a file; `remove_temporaries` clears what a killed writer left;
- `exclusive`: the one lock that keeps two writers off one output (`helm train` and `helm prepare` take it);
- `write_json` and `plain`: JSON and YAML of tensors, numpy scalars and paths as builtins (NaN -> null);
- `cache_dir`: where downloads and compiled kernels are kept.

What each fault does: docs/ARCHITECTURE.md ("Faults").
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
from pathlib import Path
from typing import Any


def cache_dir() -> Path:
    """Where downloads without an explicit destination land (``$HELM_CACHE``, else ~/.cache/helm-mrna)."""
    return Path(os.environ.get("HELM_CACHE") or Path.home() / ".cache" / "helm-mrna")


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


def write_json(file: str | os.PathLike, payload: Any) -> Path:
    """``payload`` as indented JSON with sorted keys, written atomically (tensors / numpy to builtins, NaN -> null)."""
    return atomic_write(file, json.dumps(plain(payload), indent=2, sort_keys=True) + "\n")


def plain(obj: Any) -> Any:
    """Turn tensors / numpy scalars / paths / tuples into YAML- and JSON-safe builtins (NaN -> None)."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):  # torch / numpy scalars
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
