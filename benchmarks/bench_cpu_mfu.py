"""CPU model-FLOPs utilisation of a gpt2 training step, fp32 and bf16 autocast (`helm train --amp` on CPU), each
against this machine's own matmul peak for that precision, measured in the same run.

- peak: the best of ``--rounds`` square matmuls (``--peak-size``, default 2048) per precision, 2 threads;
- step: forward + backward of gpt2 (``--layers`` x ``--width``, MLM, batch ``--batch`` x ``--seq``), the median of
  ``--steps`` steps after one warm-up; FLOPs = 6 x (parameters in matmuls) x tokens + 12 x layers x width x seq x
  tokens (attention scores and values, forward and backward), the usual count (embeddings' lookups excluded).

Prints both precisions side by side: GFLOP/s, peak GFLOP/s, MFU, and bf16 / fp32 step speed-up.

    .venv/bin/python benchmarks/bench_cpu_mfu.py [--threads 2] [--layers 4] [--width 512] [--batch 8] [--seq 444]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from helm.models import create_model


def matmul_peak(dtype: torch.dtype, size: int, rounds: int) -> float:
    """GFLOP/s of the best of `rounds` [size, size] @ [size, size] products."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    a @ b  # warm-up (oneDNN picks its kernel)
    best = min(_seconds(lambda: a @ b) for _ in range(rounds))
    return 2 * size**3 / best / 1e9


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def step_flops(model: torch.nn.Module, tokens: int, layers: int, width: int, seq: int) -> float:
    """Training FLOPs of one step: 6 per matmul weight per token + attention (see the module docstring)."""
    matmul_params = sum(p.numel() for name, p in model.named_parameters() if p.ndim == 2 and "wte" not in name
                        and "wpe" not in name)  # fmt: skip
    return 6.0 * matmul_params * tokens + 12.0 * layers * width * seq * tokens


def step_seconds(model: torch.nn.Module, ids: torch.Tensor, steps: int, bf16: bool) -> float:
    times = []
    for i in range(steps + 1):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(ids)
        logits.float().logsumexp(-1).mean().backward()
        model.zero_grad(set_to_none=True)
        if i:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=444)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per precision (after one warm-up)")
    parser.add_argument("--peak-size", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=5, help="matmuls timed for each peak")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    shape = dict(num_layers=args.layers, hidden_size=args.width, intermediate_size=4 * args.width,
                 num_heads=max(1, args.width // 64), max_seq_len=args.seq, bidirectional=True)  # fmt: skip
    model = create_model("gpt2", **shape).train()
    ids = torch.randint(6, 70, (args.batch, args.seq), generator=torch.Generator().manual_seed(0))
    flops = step_flops(model, ids.numel(), args.layers, args.width, args.seq)
    print(f"CPU, {args.threads} threads; gpt2 {args.layers} x {args.width}, batch {args.batch} x {args.seq}, "
          f"{flops / 1e9:.1f} GFLOP per training step")  # fmt: skip
    print(f"  {'precision':<16} {'step s':>8} {'GFLOP/s':>9} {'peak GFLOP/s':>13} {'MFU':>6}")
    results = {}
    for label, dtype, bf16 in (("fp32", torch.float32, False), ("bf16 autocast", torch.bfloat16, True)):
        peak = matmul_peak(dtype, args.peak_size, args.rounds)
        seconds = step_seconds(model, ids, args.steps, bf16)
        results[label] = seconds
        rate = flops / seconds / 1e9
        print(f"  {label:<16} {seconds:>8.3f} {rate:>9.1f} {peak:>13.1f} {100 * rate / peak:>5.1f}%")
    print(f"  bf16 / fp32 step speed-up: {results['fp32'] / results['bf16 autocast']:.2f}x (goal: bf16 MFU >= 60%)")


if __name__ == "__main__":
    main()
