"""`--compile` vs eager: training-step time of the same model on the same batches, side by side in one run.

    .venv/bin/python benchmarks/bench_compile.py [--preset gpt2-tiny] [--steps 20] [--rounds 3] [--threads 2]

Real OAS heavy-chain CDS (../shared/data), MLM framing as in training, HXE loss, AdamW. The compiled model is
``torch.compile(model)`` as `helm train --compile` builds it (inductor); its compile time (the warm-up over every
batch shape used) is reported on its own and left out of the step times. Rounds interleave eager and compiled so
machine noise hits both alike; the ratio uses the fastest round of each.
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
    parser.add_argument("--preset", default="gpt2-tiny")
    parser.add_argument("--sequences", type=int, default=1000)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_seq_len", type=int, default=160)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    from timm.optim import create_optimizer_v2

    from helm.data import HelmDataModule
    from helm.losses import build_loss
    from helm.models import create_model

    with tempfile.TemporaryDirectory() as tmp:
        dm = HelmDataModule(corpus(args.sequences, Path(tmp)), mode="mlm", max_seq_len=args.max_seq_len,
                            batch_size=args.batch_size)  # fmt: skip
        dm.setup("fit")
        batches = [b for _, b in zip(range(args.steps), dm.train_dataloader())]
        loss_fn = build_loss("HXE", dm.vocab, hxe_alpha=0.4)
        eager = create_model(args.preset, vocab_size=len(dm.vocab), max_seq_len=args.max_seq_len, bidirectional=True)
        models = {"eager": eager, "compiled": torch.compile(copy.deepcopy(eager))}
        optims = {name: create_optimizer_v2(m, opt="adamw", lr=1e-3) for name, m in models.items()}

        def step(name: str, batch: dict) -> float:
            logits = models[name](batch["input_ids"], attention_mask=batch["attention_mask"])
            loss = loss_fn(logits.float(), batch["labels"])
            loss.backward()
            optims[name].step()
            optims[name].zero_grad(set_to_none=True)
            return float(loss.detach())

        warmup = {}
        for name in models:  # compiles every batch shape once (and warms the eager allocator)
            start = time.perf_counter()
            for batch in batches:
                step(name, batch)
            warmup[name] = time.perf_counter() - start
        best = dict.fromkeys(models, float("inf"))
        for _ in range(args.rounds):
            for name in models:
                start = time.perf_counter()
                for batch in batches:
                    step(name, batch)
                best[name] = min(best[name], time.perf_counter() - start)

    params = sum(p.numel() for p in eager.parameters())
    print(f"{args.preset} ({params:,} parameters), MLM + HXE, batch {args.batch_size}, max_seq_len {args.max_seq_len}, "
          f"{args.threads} thread(s), {len(batches)} steps x {args.rounds} rounds (fastest round)")  # fmt: skip
    print(f"{'variant':<10} {'ms/step':>9} {'first pass s':>13}")
    for name in models:
        print(f"{name:<10} {1000 * best[name] / len(batches):>9.1f} {warmup[name]:>13.1f}")
    print(f"compiled / eager step time: {best['compiled'] / best['eager']:.3f}x")


if __name__ == "__main__":
    main()
