"""Mamba's selective scan as a compiled CPU kernel (helm/models/csrc/selective_scan.c), built on first use.

The PyTorch loop (``helm.models.mamba.SelectiveScan``) issues a few small ops per time step (~14k per layer
at 444 tokens): more than half of a CPU training step of the mamba backbone. The C kernel runs the same
recurrence with the states of a block of channels in registers, and recomputes the states in the backward
instead of keeping them ([l, b, d, n] floats per layer, 116 MB at batch 8 x 444, width 256).

Build: the system C compiler (``$CC``, else ``cc``) compiles the source once per source version into
``$HELM_CACHE/kernels`` (default ~/.cache/helm-mrna/kernels); with GCC on x86-64, function multi-versioning
instead of ``-march=native`` lets one build serve every CPU generation of a cluster (other compilers: a baseline
build). Without a compiler, or with ``HELM_CPU_SCAN=torch``, the PyTorch loop runs instead (the same recurrence,
equal to float rounding: tests/models/test_cpu_scan.py; a failed build is said once, as a warning).

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
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from helm.files import atomic_path, cache_dir

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


def _build(cc: str, target: Path) -> Path:
    """Compile into ``target``; where the cache cannot be written, into a directory of this process instead."""
    with tempfile.TemporaryDirectory(prefix="helm-scan-") as tmp:
        obj, lib = Path(tmp) / "scan.o", Path(tmp) / "scan.so"
        for cmd in (
            [cc, *COMPILE_FLAGS, "-c", str(SOURCES[0]), "-o", str(obj)],
            [cc, "-shared", str(obj), "-o", str(lib), "-lm"],
        ):
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode:
                raise KernelUnavailable(f"{' '.join(cmd)} failed: {done.stderr.strip()[-500:]}")
        try:
            with atomic_path(target) as out:  # parallel builds (DDP ranks) each rename a whole file
                shutil.copyfile(lib, out)
        except OSError:  # read-only cache: keep this process's build
            target = Path(tempfile.mkdtemp(prefix="helm-scan-")) / target.name
            shutil.copyfile(lib, target)
    return target


def _load() -> ctypes.CDLL:
    cc = _compiler()
    version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256()
    for part in (*(p.read_bytes() for p in SOURCES), version, " ".join(COMPILE_FLAGS), platform.machine()):
        key.update(part if isinstance(part, bytes) else part.encode())
    target = cache_dir() / "kernels" / f"selective_scan-{key.hexdigest()[:16]}.so"
    lib = ctypes.CDLL(str(target if target.exists() else _build(cc, target)))
    ptr, i64 = ctypes.c_void_p, ctypes.c_int64
    for suffix in ("f32", "f64"):
        getattr(lib, f"scan_fwd_{suffix}").argtypes = [ptr] * 7 + [i64] * 5 + [ptr]
        getattr(lib, f"scan_bwd_{suffix}").argtypes = [ptr] * 9 + [i64] * 6 + [ptr]
    lib.scan_lanes.restype = i64
    return lib


@functools.cache
def _library_or_reason() -> ctypes.CDLL | str:
    """Built and loaded once per process; a failure too is decided once (and said once), not on every scan. The
    user's choice (HELM_CPU_SCAN=torch) is not warned about."""
    if os.environ.get("HELM_CPU_SCAN", "").lower() == "torch":
        return "HELM_CPU_SCAN=torch"
    try:
        return _load()
    except (KernelUnavailable, OSError) as err:
        warnings.warn(f"mamba's compiled CPU scan is unavailable, using the PyTorch loop: {err}", stacklevel=3)
        return str(err)


def _library() -> ctypes.CDLL:
    lib = _library_or_reason()
    if isinstance(lib, str):
        raise KernelUnavailable(lib)
    return lib


def available() -> bool:
    """Whether the C kernel is built and loaded (building it on the first call)."""
    return unavailable_reason() is None


def unavailable_reason() -> str | None:
    lib = _library_or_reason()
    return lib if isinstance(lib, str) else None


def supports(
    x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, D: torch.Tensor
) -> bool:
    """Whether these scan inputs can go to the kernel: built, all on the CPU in one float dtype, exact shapes (the
    PyTorch loop broadcasts and promotes; the kernel reads raw buffers)."""
    tensors = (x, dt, A, B, C, D)
    if any(t.device.type != "cpu" or t.dtype != x.dtype for t in tensors) or x.dtype not in _SUFFIX or x.ndim != 3:
        return False
    (rows, length, d), n = x.shape, A.shape[-1]
    shapes_ok = dt.shape == x.shape and A.shape == (d, n) and B.shape == C.shape == (rows, length, n)
    return shapes_ok and D.shape == (d,) and available()


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


_SUFFIX = {torch.float32: "f32", torch.float64: "f64"}


class CpuSelectiveScan(torch.autograd.Function):
    """The selective scan through the C kernel; same arguments as ``mamba.SelectiveScan`` (checked by
    ``supports``), same results up to float rounding."""

    @staticmethod
    def forward(ctx, x, dt, A, B, C, D):
        x, dt, A, B, C, D = (t.contiguous() for t in (x, dt, A, B, C, D))
        rows, length, d = x.shape
        n, lib = A.shape[1], _library()
        lanes = lib.scan_lanes()
        y = torch.empty_like(x)
        ptrs = tuple(t.data_ptr() for t in (x, dt, A, B, C, D, y))
        fn = getattr(lib, f"scan_fwd_{_SUFFIX[x.dtype]}")
        _run(fn, (*ptrs, length, d, n), rows * -(-d // lanes), 2 * n * lanes, x)  # work: A^T and the states
        ctx.save_for_backward(x, dt, A, B, C, D)
        return y

    @staticmethod
    def backward(ctx, dy):
        if torch.is_grad_enabled():  # create_graph: second-order optimizers refuse mamba (helm/config.py)
            raise RuntimeError("mamba's compiled CPU scan has no double backward")
        x, dt, A, B, C, D = ctx.saved_tensors
        dy = dy.contiguous()
        rows, length, d = x.shape
        n, lib = A.shape[1], _library()
        lanes = lib.scan_lanes()
        gx, gdt = torch.empty_like(x), torch.empty_like(x)
        ptrs = tuple(t.data_ptr() for t in (x, dt, A, B, C, D, dy, gx, gdt))
        fn = getattr(lib, f"scan_bwd_{_SUFFIX[x.dtype]}")
        # each thread's work: its sums of the A, B, C gradients, then its scratch (n x lanes each: A^T, its
        # gradient, the adjoint, the next decay, the recomputed states of l + 1 steps and the decays of l steps)
        sums = [d * n, B.numel(), B.numel()]
        scratch = (2 * length + 5) * n * lanes
        work = _run(fn, (*ptrs, rows, length, d, n), rows * -(-d // lanes), sum(sums) + scratch, x)
        gA, gB, gC = work[:, : sum(sums)].sum(0).split(sums)
        return gx, gdt, gA.view(d, n), gB.view(B.shape), gC.view(B.shape), (dy * x).sum((0, 1))
