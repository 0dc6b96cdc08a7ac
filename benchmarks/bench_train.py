"""Training-step throughput by loss (XE vs HXE vs soft labels) and dataloader throughput vs what a step eats.

    .venv/bin/python benchmarks/bench_train.py [--sequences 2000] [--steps 30] [--batch_size 32]

Real OAS heavy-chain CDS (../shared/data) are prepared once into a temporary directory; the model is the
gpt2-tiny preset in MLM mode. A "step" is forward + loss + backward + AdamW update, exactly what the
LightningModule does per batch (without Lightning's bookkeeping, which is the same for every loss). Losses are
timed in interleaved rounds so machine noise hits them alike. Goals: HXE / XE <= 1.10; loader >= 10x a step.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
OAS = REPO.parent / "shared" / "data" / "pretrain" / "oas_parameswaran2013_heavy_100k.csv.gz"


def corpus(n: int, directory: Path) -> Path:
    from helm.io import oas_cds, read_records
    from helm.prepare import prepare

    seqs = []
    for _, row in read_records(OAS):
        seq, reason, _ = oas_cds(row)
        if reason is None:
            seqs.append(seq)
        if len(seqs) == n:
            break
    raw = directory / "seqs.txt"
    raw.write_text("\n".join(seqs) + "\n")
    prepare(train_files=[raw], output=directory / "prep", progress=False)
    return directory / "prep"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per loss and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_seq_len", type=int, default=160)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    from timm.optim import create_optimizer_v2

    from helm.data import HelmDataModule
    from helm.losses import build_loss
    from helm.models import create_model

    with tempfile.TemporaryDirectory() as tmp:
        prepared = corpus(args.sequences, Path(tmp))
        dm = HelmDataModule(prepared, mode="mlm", max_seq_len=args.max_seq_len, batch_size=args.batch_size)
        dm.setup("fit")
        vocab = dm.vocab

        # dataloader alone: one full pass, tokens (real, non-pad) per second
        loader = dm.train_dataloader()
        start, tokens, batches = time.perf_counter(), 0, []
        for batch in loader:
            tokens += int(batch["attention_mask"].sum())
            batches.append(batch)
        loader_tps = tokens / (time.perf_counter() - start)

        losses = {name: build_loss(name, vocab, hxe_alpha=0.4) for name in ("XE", "HXE", "soft_labels")}
        models = {name: create_model("gpt2", preset="gpt2-tiny", vocab_size=len(vocab), max_seq_len=args.max_seq_len,
                                     bidirectional=True) for name in losses}  # fmt: skip
        optims = {name: create_optimizer_v2(m, opt="adamw", lr=1e-3) for name, m in models.items()}

        def step(name: str, batch: dict) -> None:
            logits = models[name](batch["input_ids"], attention_mask=batch["attention_mask"])
            loss = losses[name](logits.float(), batch["labels"])
            loss.backward()
            optims[name].step()
            optims[name].zero_grad(set_to_none=True)

        for name in losses:  # warm-up
            for batch in batches[:3]:
                step(name, batch)
        seconds = dict.fromkeys(losses, 0.0)
        counted = dict.fromkeys(losses, 0)
        for r in range(args.rounds):
            for name in losses:
                chosen = [batches[(r * args.steps + i) % len(batches)] for i in range(args.steps)]
                start = time.perf_counter()
                for batch in chosen:
                    step(name, batch)
                seconds[name] += time.perf_counter() - start
                counted[name] += sum(int(b["attention_mask"].sum()) for b in chosen)
        tps = {name: counted[name] / seconds[name] for name in losses}

    params = sum(p.numel() for p in models["XE"].parameters())
    print(f"gpt2-tiny ({params:,} parameters), MLM, batch {args.batch_size}, max_seq_len {args.max_seq_len}, "
          f"{args.threads} thread(s), {args.rounds} x {args.steps} steps per loss")  # fmt: skip
    print(f"{'loss':<12} {'tokens/s':>10} {'vs XE':>7}")
    for name, value in tps.items():
        print(f"{name:<12} {value:>10.0f} {tps['XE'] / value:>6.3f}x")
    print(f"HXE / XE step time ratio: {tps['XE'] / tps['HXE']:.3f} (goal <= 1.10)")
    slowest = min(tps.values())
    print(f"dataloader: {loader_tps:,.0f} tokens/s (num_workers 0) = {loader_tps / slowest:.1f}x the training step's "
          "consumption (goal >= 10x)")  # fmt: skip


if __name__ == "__main__":
    main()
