"""Backbone step times: one training step (forward + backward) of every backbone at the same width and depth.

CPU part (always): 2 threads, batch 8, sequence 444, 4 layers, width 256 (intermediate 1024); prints each
backbone's step time and its ratio to gpt2 side by side, mamba with the compiled CPU scan (helm/models/cpu_scan.py)
and with the PyTorch loop, and one layer's scan alone both ways. Goals: mamba <= 2x gpt2, hyena <= 2x gpt2.
GPU part (only where CUDA is available): mamba_ssm kernels vs our PyTorch scan (max abs difference, speed),
and bf16 training tokens/s of the gpt2-50m preset; on CPU-only machines it says it was skipped.

    .venv/bin/python benchmarks/bench_models.py [--steps 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from helm.models import cpu_scan, create_model
from helm.models.mamba import HAS_MAMBA2_KERNELS, HAS_MAMBA_SSM, SelectiveScan

SHAPE = dict(num_layers=4, hidden_size=256, intermediate_size=1024, num_heads=4, max_seq_len=444)
CASES = [
    ("gpt2", dict()),
    ("gpt2 bidirectional", dict(bidirectional=True)),
    ("mamba", dict()),
    ("mamba (PyTorch scan)", dict()),
    ("mamba (no MLP)", dict(intermediate_size=0)),
    ("mamba Mamba2", dict(ssm_layer="Mamba2")),
    ("hyena", dict()),
    ("hyena bidirectional", dict(bidirectional=True)),
    ("bert", dict(bidirectional=True)),
]


def step_time(model: torch.nn.Module, ids: torch.Tensor, steps: int, sync=lambda: None) -> float:
    """Median seconds of forward + backward (after one warm-up step)."""
    times = []
    for i in range(steps + 1):
        sync()
        start = time.perf_counter()
        model(ids).float().logsumexp(-1).mean().backward()
        sync()
        if i:
            times.append(time.perf_counter() - start)
        model.zero_grad(set_to_none=True)
    return statistics.median(times)


def cpu_part(steps: int) -> None:
    torch.set_num_threads(2)
    ids = torch.randint(6, 70, (8, 444), generator=torch.Generator().manual_seed(0))
    print(f"CPU, {torch.get_num_threads()} threads, batch 8 x 444, 4 layers, width 256, forward + backward:")
    print(f"  {'backbone':<22} {'params':>10} {'step s':>8} {'x gpt2':>7}")
    base = None
    for label, extra in CASES:
        torch.manual_seed(0)
        name = label.split()[0]
        model = create_model(name, **{**SHAPE, **extra}).train()
        for mixer in model.modules():
            if hasattr(mixer, "use_scan_kernels"):
                mixer.use_scan_kernels = "PyTorch scan" not in label
        t = step_time(model, ids, steps)
        base = base or t
        print(f"  {label:<22} {model.num_parameters():>10,} {t:>8.3f} {t / base:>7.2f}")
        del model
    print("  goals: mamba <= 2.00 x gpt2, hyena <= 2.00 x gpt2")
    scan_part(steps)


def scan_part(steps: int) -> None:
    """One mamba layer's selective scan at the shape above (d_inner 512, d_state 16), forward + backward."""
    if not cpu_scan.available():
        print(f"\n  compiled scan unavailable ({cpu_scan.unavailable_reason()}): scan comparison skipped")
        return
    g = torch.Generator().manual_seed(0)
    x, dt = torch.randn(8, 444, 512, generator=g), torch.rand(8, 444, 512, generator=g) / 10
    A, B, C = -torch.rand(512, 16, generator=g) * 16, torch.randn(8, 444, 16, generator=g), torch.randn(8, 444, 16)
    inputs = [t.requires_grad_() for t in (x, dt, A, B, C, torch.ones(512))]
    times = {}
    for label, scan in (("C kernel", cpu_scan.CpuSelectiveScan.apply), ("PyTorch loop", SelectiveScan.apply)):
        runs = []
        for i in range(steps + 1):
            start = time.perf_counter()
            y = scan(*inputs)
            torch.autograd.grad(y, inputs, torch.ones_like(y))
            if i:
                runs.append(time.perf_counter() - start)
        times[label] = statistics.median(runs)
    kernel, loop = times["C kernel"], times["PyTorch loop"]
    print(f"\n  one layer's scan, batch 8 x 444 x 512 x 16, fwd + bwd: C kernel {kernel * 1e3:.1f} ms, "
          f"PyTorch loop {loop * 1e3:.1f} ms ({loop / kernel:.1f}x)")  # fmt: skip


def gpu_part(steps: int) -> None:
    if not torch.cuda.is_available():
        print("\nGPU part skipped: no CUDA device here (mamba_ssm vs PyTorch scan, bf16 gpt2-50m tokens/s).")
        return
    dev = torch.device("cuda")
    sync = torch.cuda.synchronize
    print(f"\nGPU: {torch.cuda.get_device_name(0)}")
    ids = torch.randint(6, 70, (8, 444), device=dev)
    kernels = [layer for layer, ok in (("Mamba", HAS_MAMBA_SSM), ("Mamba2", HAS_MAMBA2_KERNELS)) if ok]
    if kernels:
        for layer in kernels:
            torch.manual_seed(0)
            model = create_model("mamba", **SHAPE, ssm_layer=layer).to(dev)
            mixers = [m for m in model.modules() if hasattr(m, "use_scan_kernels")]
            with torch.no_grad():
                kernel_out = model(ids)
                for m in mixers:
                    m.use_scan_kernels = False
                torch_out = model(ids)
            t_torch = step_time(model, ids, steps, sync)
            for m in mixers:
                m.use_scan_kernels = True
            t_kernel = step_time(model, ids, steps, sync)
            diff = (kernel_out - torch_out).abs().max().item()
            print(f"  {layer}: max |kernels - pytorch| = {diff:.2e}; step {t_kernel * 1e3:.1f} ms (mamba_ssm) vs "
                  f"{t_torch * 1e3:.1f} ms (pytorch), {t_torch / t_kernel:.1f}x")  # fmt: skip
    else:
        print("  mamba_ssm not importable: kernel comparison skipped (pip install helm-mrna[cuda])")
    model = create_model("gpt2-50m").to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = torch.randint(6, 70, (64, 444), device=dev)
    times = []
    for i in range(steps + 2):
        sync()
        start = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(batch[:, :-1]).flatten(0, 1).float(), batch[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        if i >= 2:
            times.append(time.perf_counter() - start)
    print(
        f"  gpt2-50m bf16 training: {batch[:, :-1].numel() / statistics.median(times):,.0f} tokens/s (batch 64 x 443)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per backbone (after one warm-up)")
    args = parser.parse_args()
    cpu_part(args.steps)
    gpu_part(args.steps)


if __name__ == "__main__":
    main()
