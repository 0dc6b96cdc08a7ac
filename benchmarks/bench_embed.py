"""Embedding extraction speed: all 1,459 mRFP sequences through a 4-layer, width-256 model on CPU.

Goal: under 20 s on 2 cores, batched with masked pads. Prints the batched time, the throughput,
and the ratio against a one-sequence-at-a-time loop (timed on a subset, extrapolated).

    .venv/bin/python benchmarks/bench_embed.py [--mirror ../shared/data] [--threads 2] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from helm.downstream.datasets import load_dataset
from helm.downstream.embed import embed_tokens, encode
from helm.models import create_model
from helm.tokenizers import create_tokenizer

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mirror", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--model", default="gpt2")
    parser.add_argument("--loop-subset", type=int, default=30, help="sequences timed one at a time")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = load_dataset("mrfp", mirror=args.mirror)
    tok = create_tokenizer("3mer")
    torch.manual_seed(0)
    model = create_model(args.model, vocab_size=len(tok), num_layers=4, hidden_size=256, num_heads=4,
                         intermediate_size=1024, max_seq_len=256, bidirectional=True).eval()  # fmt: skip
    print(f"model: {args.model} 4 x 256, {model.num_parameters():,} parameters; threads={torch.get_num_threads()}")

    t0 = time.perf_counter()
    enc = encode(tok, data.sequences, 256, mode="mlm")
    t_enc = time.perf_counter() - t0
    n_tok = int(enc.mask.sum())
    print(f"sequences: {len(enc)}, tokens: {n_tok:,} (incl. specials); tokenize+frame: {t_enc:.2f} s")
    times = {}
    for bf16 in (False, True):
        embed_tokens(model, enc.subset(range(8)), args.batch_size, progress=False, bf16=bf16)  # warm-up
        t0, c0 = time.perf_counter(), time.process_time()
        feats = embed_tokens(model, enc, args.batch_size, progress=False, bf16=bf16)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        times[bf16] = wall
        # CPU seconds / threads ~ the wall time on uncontended cores (the machine is shared; wall is noisy)
        ideal = cpu / torch.get_num_threads()
        print(
            f"batched embedding, {'bf16 autocast' if bf16 else 'fp32'} (batch {args.batch_size}): wall {wall:.2f} s, "
            f"cpu {cpu:.1f} s (= {ideal:.1f} s on {torch.get_num_threads()} free cores), {len(enc) / wall:.0f} seq/s, "
            f"features {tuple(feats.shape)}; goal < 20 s: wall {'met' if wall + t_enc < 20 else 'NOT met'}, "
            f"cpu/threads {'met' if ideal + t_enc < 20 else 'NOT met'}"
        )
    t_emb = times[False]

    sub = min(args.loop_subset, len(enc))
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(sub):
            n = int(enc.mask[i].sum())
            model.embed(enc.ids[i : i + 1, :n])
    t_loop = (time.perf_counter() - t0) / sub * len(enc)
    print(
        f"per-sequence loop: {t_loop:.2f} s (extrapolated from {sub} sequences); "
        f"batched fp32 speed-up {t_loop / t_emb:.1f}x"
    )


if __name__ == "__main__":
    main()
