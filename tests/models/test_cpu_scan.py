"""The compiled CPU scan (helm/models/cpu_scan.py): float32 against the float64 recurrence, deterministic results,
the PyTorch fallback when there is no compiler (or HELM_CPU_SCAN=torch), and a kernel load that leaves the
process's floating-point mode alone. Exactness against the naive recurrence in float64 is
tests/models/test_mamba.py::test_selective_scan_equals_naive_recurrence."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from helm.models import cpu_scan, create_model
from helm.models.mamba import SelectiveScan, selective_scan
from tests.models.test_mamba import scan_inputs

UNAVAILABLE = "mamba's compiled CPU scan is unavailable, using the PyTorch loop: "
needs_kernel = pytest.mark.skipif(not cpu_scan.available(), reason=f"C kernel: {cpu_scan.unavailable_reason()}")


@pytest.fixture
def fresh_library(monkeypatch, tmp_path):
    """Forget the loaded kernel (so env changes take effect) and build into an empty cache; restored after."""
    monkeypatch.setenv("HELM_CACHE", str(tmp_path))
    cpu_scan._library_or_reason.cache_clear()
    yield tmp_path
    monkeypatch.undo()
    cpu_scan._library_or_reason.cache_clear()


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
def test_non_finite_inputs_stay_non_finite():
    """-ffast-math lets the compiler assume finite numbers; a NaN or inf (a diverging run) must still come out where
    the PyTorch loop puts it, or training's non-finite checks would miss it."""
    x, dt, A, B, C, D = (t.detach().float() for t in scan_inputs(20, d=20, n=16))
    x[0, 3, 5] = float("nan")
    dt[1, 4, :] = float("inf")
    ours, ref = cpu_scan.CpuSelectiveScan.apply(x, dt, A, B, C, D), SelectiveScan.apply(x, dt, A, B, C, D)
    assert ref.isnan().any() and torch.equal(ours.isnan(), ref.isnan()) and torch.equal(ours.isinf(), ref.isinf())
    finite = ref.isfinite()
    torch.testing.assert_close(ours[finite], ref[finite], rtol=1e-4, atol=1e-4)


@needs_kernel
def test_kernel_builds_once_into_the_cache(fresh_library):
    assert cpu_scan.available()
    (built,) = (fresh_library / "kernels").glob("selective_scan-*.so")
    stamp = built.stat().st_mtime_ns
    cpu_scan._library_or_reason.cache_clear()
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
    chosen = "HELM_CPU_SCAN" in env  # the user's choice is not warned about; a failed build is, once
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        assert not cpu_scan.available() and not cpu_scan.available()
    assert [str(w.message) for w in said] == ([] if chosen else [f"{UNAVAILABLE}{cpu_scan.unavailable_reason()}"])
    assert reason in cpu_scan.unavailable_reason()
    inputs = scan_inputs(7, d=5, n=3)
    torch.testing.assert_close(selective_scan(*inputs), SelectiveScan.apply(*inputs), rtol=0, atol=0)
    model = create_model("mamba", preset="mamba-tiny")
    assert model(torch.randint(6, 70, (2, 9))).shape == (2, 9, 70)


def test_a_failed_build_is_tried_once(fresh_library, monkeypatch, tmp_path):
    """Every scan asks whether the kernel is there; a failing compiler must run once per process, not per scan."""
    calls = tmp_path / "calls.txt"
    compiler = tmp_path / "failing-cc"
    compiler.write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexit 1\n')
    compiler.chmod(0o755)
    monkeypatch.setenv("CC", str(compiler))
    inputs = scan_inputs(5, d=4, n=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(3):
            selective_scan(*inputs)
    assert len(calls.read_text().splitlines()) == 2  # `cc --version` and one compile


@needs_kernel
def test_an_unwritable_cache_still_gets_a_kernel(fresh_library, monkeypatch, tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    monkeypatch.setenv("HELM_CACHE", str(blocker))  # <cache>/kernels cannot be created
    assert cpu_scan.available(), cpu_scan.unavailable_reason()


def test_inputs_the_kernel_cannot_read_take_the_pytorch_loop():
    """Broadcast B / C or mixed dtypes: the PyTorch loop broadcasts and promotes; the kernel reads raw buffers."""
    x, dt, A, B, C, D = scan_inputs(6, d=20, n=4)
    f32 = [t.detach().float() for t in (x, dt, A, B, C, D)]
    cases = {
        "broadcast B and C": (*f32[:3], f32[3][:1], f32[4][:1], f32[5]),
        "float64 A": (*f32[:2], A.detach(), *f32[3:]),
    }
    for label, args in cases.items():
        assert not cpu_scan.supports(*args), label
        torch.testing.assert_close(selective_scan(*args), SelectiveScan.apply(*args), rtol=0, atol=0, msg=label)
    assert cpu_scan.supports(*f32) == cpu_scan.available()


@needs_kernel
def test_no_double_backward():
    inputs = scan_inputs(5, d=4, n=2)
    y = cpu_scan.CpuSelectiveScan.apply(*inputs)
    with pytest.raises(RuntimeError, match="no double backward"):
        torch.autograd.grad(y.sum(), inputs[0], create_graph=True)


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
