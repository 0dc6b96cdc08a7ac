"""Pads in training batches and training speed: random batches vs `--group-by-length`, side by side in one run.

    .venv/bin/python benchmarks/bench_padding.py [--sequences 4000] [--preset gpt2-1m] [--mode mlm]
        [--batch_size 64] [--max_seq_len 444] [--steps 8] [--rounds 2] [--threads 2]

Real OAS heavy-chain CDS (../shared/data), prepared once into a temporary directory; batches come from
``HelmDataModule`` exactly as `helm train` builds them (defaults: the laptop study's gpt2-1m, MLM, batch 64,
max_seq_len 444). Pad share = pad positions / all positions over one whole epoch of the sample. Speed = real
(non-pad) tokens per second of forward + loss + backward + AdamW, on the first ``--steps`` batches of each
order, in interleaved rounds (fastest round kept) so machine noise hits both alike. A batch without pads runs
attention without a mask (the fused-kernel path on GPU); its share is reported too. ~1 minute on 2 cores.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import torch
from bench_train import corpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=4000, help="OAS sequences in the sample")
    parser.add_argument("--preset", default="gpt2-1m")
    parser.add_argument("--mode", default="mlm", choices=("mlm", "clm"))
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--max_seq_len", type=int, default=444)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per order and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    from timm.optim import create_optimizer_v2

    from helm.data import HelmDataModule
    from helm.losses import build_loss
    from helm.models import create_model

    orders = {"random": False, "grouped": True}
    with tempfile.TemporaryDirectory() as tmp:
        prepared = corpus(args.sequences, Path(tmp))
        stats, batches = {}, {}
        for name, grouped in orders.items():
            dm = HelmDataModule(prepared, args.mode, args.max_seq_len, args.batch_size, group_by_length=grouped)
            epoch = list(dm.train_dataloader())
            masks = [b["attention_mask"] for b in epoch]
            real, total = sum(int(m.sum()) for m in masks), sum(m.numel() for m in masks)
            stats[name] = {"pads": 1 - real / total, "no_pad": sum(bool(m.all()) for m in masks) / len(masks)}
            batches[name] = epoch[: args.steps]
        vocab = dm.vocab

    loss_fn = build_loss("XE", vocab)
    causal = args.mode == "clm"
    base = create_model(args.preset, vocab_size=len(vocab), max_seq_len=args.max_seq_len, bidirectional=not causal)
    models = {name: copy.deepcopy(base) for name in orders}
    optims = {name: create_optimizer_v2(m, opt="adamw", lr=1e-3) for name, m in models.items()}

    def step(name: str, batch: dict) -> None:
        logits = models[name](batch["input_ids"], attention_mask=batch["attention_mask"])
        loss_fn(logits.float(), batch["labels"]).backward()
        optims[name].step()
        optims[name].zero_grad(set_to_none=True)

    for name in orders:  # warm-up (allocator, kernels)
        step(name, batches[name][0])
    best = dict.fromkeys(orders, float("inf"))
    for _ in range(args.rounds):
        for name in orders:
            start = time.perf_counter()
            for batch in batches[name]:
                step(name, batch)
            best[name] = min(best[name], time.perf_counter() - start)
    for name in orders:
        tokens = sum(int(b["attention_mask"].sum()) for b in batches[name])
        stats[name]["tps"] = tokens / best[name]
        stats[name]["ms"] = 1000 * best[name] / len(batches[name])

    print(f"{args.preset} ({base.num_parameters():,} parameters), {args.mode.upper()}, batch {args.batch_size}, "
          f"max_seq_len {args.max_seq_len}, {args.sequences:,} OAS sequences, {args.threads} thread(s), "
          f"{args.steps} steps x {args.rounds} rounds (fastest round)")  # fmt: skip
    print(f"{'batches':<9} {'pad share':>9} {'no-pad batches':>15} {'ms/step':>8} {'real tokens/s':>14}")
    for name, s in stats.items():
        print(f"{name:<9} {s['pads']:>9.2%} {s['no_pad']:>15.1%} {s['ms']:>8.0f} {s['tps']:>14,.0f}")
    print(f"grouped / random real tokens/s: {stats['grouped']['tps'] / stats['random']['tps']:.2f}x")


if __name__ == "__main__":
    main()
