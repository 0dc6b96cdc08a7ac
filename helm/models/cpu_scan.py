"""Mamba's selective scan as a compiled CPU kernel (helm/models/csrc/selective_scan.c), built on first use.

The PyTorch loop (``helm.models.mamba.SelectiveScan``) issues a few small ops per time step (~14k per layer
at 444 tokens): more than half of a CPU training step of the mamba backbone. The C kernel runs the same
recurrence with the states of a block of channels in registers, and recomputes the states in the backward
instead of keeping them ([l, b, d, n] floats per layer, 116 MB at batch 8 x 444, width 256).

Build: the system C compiler (``$CC``, else ``cc``) compiles the source once per source version into
``$HELM_CACHE/kernels`` (default ~/.cache/helm-mrna/kernels), with function multi-versioning instead of
``-march=native`` so one build serves every x86-64 generation of a cluster. Without a compiler, or with
``HELM_CPU_SCAN=torch``, the PyTorch loop runs instead (same numbers: tests/models/test_cpu_scan.py).
Threads: the tasks (batch row x block of channels) are split across ``torch.get_num_threads()`` Python
threads; ctypes releases the GIL during each call.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch.autograd.function import once_differentiable

SOURCES = [Path(__file__).parent / "csrc" / name for name in ("selective_scan.c", "selective_scan.h")]
# -ffast-math only while compiling (it lets the exp loop vectorize through glibc's libmvec); linking with it
# would add crtfastmath.o, which switches the whole process to flush-denormals-to-zero on load.
COMPILE_FLAGS = ["-O3", "-ffast-math", "-fopenmp-simd", "-fPIC", "-std=c99"]


class KernelUnavailable(RuntimeError):
    """The C kernel cannot be built or loaded here (the reason is the message)."""


def _compiler() -> str:
    cc = os.environ.get("CC") or "cc"
    if shutil.which(cc) is None:
        raise KernelUnavailable(f"no C compiler ({cc!r} not on PATH; set CC)")
    return cc


def _build(cc: str, target: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="helm-scan-") as tmp:
        obj, lib = Path(tmp) / "scan.o", Path(tmp) / "scan.so"
        for cmd in (
            [cc, *COMPILE_FLAGS, "-c", str(SOURCES[0]), "-o", str(obj)],
            [cc, "-shared", str(obj), "-o", str(lib), "-lm"],
        ):
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode:
                raise KernelUnavailable(f"{' '.join(cmd)} failed: {done.stderr.strip()[-500:]}")
        from helm.run import atomic_path  # one atomic writer; parallel builds (DDP ranks) each rename a whole file

        with atomic_path(target) as out:
            shutil.copyfile(lib, out)


@functools.cache
def _library() -> ctypes.CDLL:
    if os.environ.get("HELM_CPU_SCAN", "").lower() == "torch":
        raise KernelUnavailable("HELM_CPU_SCAN=torch")
    cc = _compiler()
    version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256()
    for part in (*(p.read_bytes() for p in SOURCES), version.encode(), platform.machine().encode()):
        key.update(part)
    from helm.fetch import cache_dir

    target = cache_dir() / "kernels" / f"selective_scan-{key.hexdigest()[:16]}.so"
    if not target.exists():
        _build(cc, target)
    lib = ctypes.CDLL(str(target))
    ptr, i64 = ctypes.c_void_p, ctypes.c_int64
    for suffix in ("f32", "f64"):
        getattr(lib, f"scan_fwd_{suffix}").argtypes = [ptr] * 7 + [i64] * 5 + [ptr]
        getattr(lib, f"scan_bwd_{suffix}").argtypes = [ptr] * 9 + [i64] * 6 + [ptr]
    lib.scan_lanes.restype = i64
    return lib


def available() -> bool:
    """Whether the C kernel is built and loaded (building it on the first call)."""
    return unavailable_reason() is None


def unavailable_reason() -> str | None:
    try:
        _library()
    except (KernelUnavailable, OSError) as err:
        return str(err)
    return None


@functools.cache
def _pool(threads: int, pid: int) -> ThreadPoolExecutor:
    """One pool per thread count and process: a forked child inherits the parent's pool without its threads."""
    return ThreadPoolExecutor(threads, thread_name_prefix="helm-scan")


def _run(fn, args: tuple, tasks: int, work_size: int, like: torch.Tensor) -> torch.Tensor:
    """Call ``fn(*args, task0, task1, work)`` over [0, tasks) split into one contiguous range per thread; each
    thread gets its own zeroed ``work`` row, and the rows are returned ([threads, work_size])."""
    threads = max(1, min(torch.get_num_threads(), tasks))
    bounds = [tasks * i // threads for i in range(threads + 1)]
    work = like.new_zeros(threads, work_size)
    calls = [(*args, bounds[i], bounds[i + 1], work[i].data_ptr()) for i in range(threads)]
    if threads == 1:
        fn(*calls[0])
    else:
        for future in [_pool(threads, os.getpid()).submit(fn, *call) for call in calls]:
            future.result()
    return work


def _suffix(x: torch.Tensor) -> str:
    return {torch.float32: "f32", torch.float64: "f64"}[x.dtype]


class CpuSelectiveScan(torch.autograd.Function):
    """The selective scan through the C kernel; same arguments and results as ``mamba.SelectiveScan``."""

    @staticmethod
    def forward(ctx, x, dt, A, B, C, D):
        x, dt, A, B, C, D = (t.contiguous() for t in (x, dt, A, B, C, D))
        rows, length, d = x.shape
        n, lib = A.shape[1], _library()
        lanes = lib.scan_lanes()
        y = torch.empty_like(x)
        ptrs = tuple(t.data_ptr() for t in (x, dt, A, B, C, D, y))
        fn = getattr(lib, f"scan_fwd_{_suffix(x)}")
        _run(fn, (*ptrs, length, d, n), rows * -(-d // lanes), 2 * n * lanes, x)  # work: A^T and the states
        ctx.save_for_backward(x, dt, A, B, C, D)
        return y

    @staticmethod
    @once_differentiable  # no double backward (second-order optimizers refuse mamba: helm/config.py)
    def backward(ctx, dy):
        x, dt, A, B, C, D = ctx.saved_tensors
        dy = dy.contiguous()
        rows, length, d = x.shape
        n, lib = A.shape[1], _library()
        lanes = lib.scan_lanes()
        gx, gdt = torch.empty_like(x), torch.empty_like(x)
        ptrs = tuple(t.data_ptr() for t in (x, dt, A, B, C, D, dy, gx, gdt))
        fn = getattr(lib, f"scan_bwd_{_suffix(x)}")
        # each thread's work: its sums of the A, B, C gradients, then its scratch (n x lanes each: A^T, its
        # gradient, the adjoint, the next decay, the recomputed states of l + 1 steps and the decays of l steps)
        sums = [d * n, B.numel(), B.numel()]
        scratch = (2 * length + 5) * n * lanes
        work = _run(fn, (*ptrs, rows, length, d, n), rows * -(-d // lanes), sum(sums) + scratch, x)
        gA, gB, gC, _ = work.sum(0).split([*sums, scratch])
        return gx, gdt, gA.view(d, n), gB.view(B.shape), gC.view(B.shape), (dy * x).sum((0, 1))
