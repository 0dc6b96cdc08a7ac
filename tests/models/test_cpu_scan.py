"""The compiled CPU scan (helm/models/cpu_scan.py): float32 against the float64 recurrence, deterministic results,
the PyTorch fallback when there is no compiler (or HELM_CPU_SCAN=torch), and a kernel load that leaves the
process's floating-point mode alone. Exactness against the naive recurrence in float64 is
tests/models/test_mamba.py::test_selective_scan_equals_naive_recurrence."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helm.models import cpu_scan, create_model
from helm.models.mamba import SelectiveScan, selective_scan
from tests.models.test_mamba import scan_inputs

needs_kernel = pytest.mark.skipif(not cpu_scan.available(), reason=f"C kernel: {cpu_scan.unavailable_reason()}")


@pytest.fixture
def fresh_library(monkeypatch, tmp_path):
    """Forget the loaded kernel (so env changes take effect) and build into an empty cache; restored after."""
    monkeypatch.setenv("HELM_CACHE", str(tmp_path))
    cpu_scan._library.cache_clear()
    yield tmp_path
    monkeypatch.undo()
    cpu_scan._library.cache_clear()


def grads(scan, inputs):
    y = scan(*inputs)
    return [y, *torch.autograd.grad(y, inputs, torch.cos(torch.arange(y.numel(), dtype=y.dtype)).view_as(y))]


@needs_kernel
def test_float32_kernel_matches_float64_reference():
    ref_inputs = scan_inputs(64, d=40, n=16, rows=3)
    inputs = [t.detach().float().requires_grad_() for t in ref_inputs]
    for ours, ref in zip(grads(cpu_scan.CpuSelectiveScan.apply, inputs), grads(SelectiveScan.apply, ref_inputs)):
        torch.testing.assert_close(ours.double(), ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


@needs_kernel
def test_results_are_deterministic_and_thread_count_only_reorders_sums():
    """Bitwise the same on a rerun; across thread counts only the order in which the per-thread sums of the A, B, C
    gradients are added changes (rounding level)."""
    inputs = scan_inputs(30, d=40, n=16, rows=3)  # 9 tasks: 2 threads split a batch row between them
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = grads(cpu_scan.CpuSelectiveScan.apply, inputs)
        torch.set_num_threads(2)
        two, again = grads(cpu_scan.CpuSelectiveScan.apply, inputs), grads(cpu_scan.CpuSelectiveScan.apply, inputs)
    finally:
        torch.set_num_threads(threads)
    for a, b, c in zip(one, two, again):
        assert torch.equal(b, c)
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@needs_kernel
def test_kernel_builds_once_into_the_cache(fresh_library):
    assert cpu_scan.available()
    (built,) = (fresh_library / "kernels").glob("selective_scan-*.so")
    stamp = built.stat().st_mtime_ns
    cpu_scan._library.cache_clear()
    assert cpu_scan.available() and built.stat().st_mtime_ns == stamp  # reused, not rebuilt


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"HELM_CPU_SCAN": "torch"}, "HELM_CPU_SCAN=torch"),
        ({"CC": "no-such-compiler-here"}, "no C compiler ('no-such-compiler-here' not on PATH; set CC)"),
        ({"CC": "false"}, "failed"),  # a compiler that fails: its command is named
    ],
)
def test_without_the_kernel_the_pytorch_scan_runs(fresh_library, monkeypatch, env, reason):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert not cpu_scan.available()
    assert reason in cpu_scan.unavailable_reason()
    inputs = scan_inputs(7, d=5, n=3)
    torch.testing.assert_close(selective_scan(*inputs), SelectiveScan.apply(*inputs), rtol=0, atol=0)
    model = create_model("mamba", preset="mamba-tiny")
    assert model(torch.randint(6, 70, (2, 9))).shape == (2, 9, 70)


@needs_kernel
def test_loading_the_kernel_keeps_denormals():
    """The kernel is compiled with -ffast-math but linked without it: a library linked with it switches the whole
    process to flush-to-zero on load, which would change every other float computation."""
    code = (
        "import numpy as np; from helm.models import cpu_scan; assert cpu_scan.available();"
        "print(float(np.float32(1e-40) * np.float32(2)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert float(out) > 0


@needs_kernel
def test_a_forked_child_scans_with_its_own_threads():
    """A child forked after the parent used the kernel (fork-started workers) inherits the thread pool object but
    not its threads: without a pool per process its first scan would wait forever."""
    code = """
import os, torch
from helm.models import cpu_scan
from tests.models.test_mamba import scan_inputs
torch.set_num_threads(2)
inputs = [t.detach().float() for t in scan_inputs(20, d=40, n=16)]
parent = cpu_scan.CpuSelectiveScan.apply(*inputs)
pid = os.fork()
if pid == 0:
    os._exit(0 if torch.equal(cpu_scan.CpuSelectiveScan.apply(*inputs), parent) else 3)
_, status = os.waitpid(pid, 0)
raise SystemExit(os.waitstatus_to_exitcode(status))
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, cwd=Path(__file__).parents[2])
