"""Measured goals of `helm prepare` (issues 2 and 7), printed side by side in one run.

    .venv/bin/python benchmarks/bench_prepare.py [--data ../shared/data] [--threads 2] [--skip-400k]

1. `helm prepare` on the 100k OAS file: wall time (goal < 30 s) and rows/s (goal >= 10k/s).
2. Vectorized codon encoding vs a per-sequence Python loop over a codon dict, same sequences (goal >= 10x).
3. Opening the 100k shards memory-mapped and reading 10k random sequences (goal < 1 s).
4. Peak RSS (whole process tree, sampled every 10 ms) on 400k rows (the 100k file 4 times, each copy made
   distinct by a synonymous-free codon prefix so nothing is deduplicated away) vs on 100k (goal <= 1.2x).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
OAS = "pretrain/oas_parameswaran2013_heavy_100k.csv.gz"


def run_prepare(inputs: list[Path], output: Path, threads: int) -> tuple[float, float, str]:
    """Wall seconds and peak RSS (MiB, process + children) of a real `helm prepare` subprocess."""
    cmd = [sys.executable, "-m", "helm.cli", "prepare", "--no_progress", "--force", "--threads", str(threads)]
    cmd += ["--input", *map(str, inputs), "--output", str(output)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ps, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            rss = ps.memory_info().rss + sum(c.memory_info().rss for c in ps.children(recursive=True))
            peak = max(peak, rss)
        except psutil.Error:
            pass
        time.sleep(0.01)
    wall = time.perf_counter() - t0
    out, err = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"prepare failed: {err}")
    return wall, peak / 2**20, out.strip()


def make_400k(src: Path, dest: Path) -> None:
    """4 copies; copy c gets c extra GCT codons (Ala) at the start of the alignment's reading frame and 'A' * c
    in front of its translation, plus a distinct Run id, so every row stays valid and distinct."""
    from helm.io import OasRow, oas_cds

    with gzip.open(src, "rt", newline="") as fin, gzip.open(dest, "wt", compresslevel=1, newline="") as fout:
        reader = csv.DictReader(fin)
        rows = list(reader)
        writer = csv.DictWriter(fout, fieldnames=reader.fieldnames)
        writer.writeheader()
        for c in range(4):
            for row in rows:
                row = dict(row)
                row["Run"] = f"{row['Run']}_copy{c}"
                cds, reason, frame = oas_cds(OasRow(*(row[f] for f in OasRow._fields)))
                if c and reason is None and "-" not in row["sequence_alignment"][:frame]:
                    seq = row["sequence_alignment"]  # insert the codons at the reading frame
                    row["sequence_alignment"] = seq[:frame] + "GCT" * c + seq[frame:]
                    row["sequence_alignment_aa"] = "A" * c + row["sequence_alignment_aa"]
                writer.writerow(row)


def bench_encoding(src: Path) -> tuple[float, float, float, int]:
    """Best-of-3 seconds of the naive loop, of encode_batch (list of int32 arrays, like the loop) and of
    encode_flat (one flat array + bounds: the form shards store, used by prepare), same sequences."""
    from helm.codons import CODONS, SPECIALS, UNK_ID
    from helm.io import oas_cds, read_records
    from helm.tokenizers import create_tokenizer

    seqs = [cds for _, row in read_records(src) if not (r := oas_cds(row))[1] for cds in [r[0]]]
    table = {c: len(SPECIALS) + i for i, c in enumerate(CODONS)}
    tok = create_tokenizer("3mer")

    def naive_loop():
        return [np.array([table.get(s[i : i + 3], UNK_ID) for i in range(0, len(s) - 2, 3)], np.int32) for s in seqs]

    def best(fn):
        times, result = [], None
        for _ in range(3):
            t0 = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - t0)
        return min(times), result

    t_naive, naive = best(naive_loop)
    t_batch, batch = best(lambda: tok.encode_batch(seqs))
    t_flat, (flat, bounds) = best(lambda: tok.encode_flat(seqs))
    assert all(np.array_equal(a, b) for a, b in zip(naive, batch)), "vectorized encoding differs from the loop"
    assert np.array_equal(np.concatenate(naive), flat) and bounds[-1] == len(flat)
    return t_naive, t_batch, t_flat, len(seqs)


def bench_load(prepared: Path) -> tuple[float, int]:
    from helm.shards import TokenShards

    t0 = time.perf_counter()
    shards = TokenShards(prepared / "train")
    lengths = shards.lengths()
    rng = np.random.default_rng(0)
    total = sum(int(shards[int(i)].sum()) for i in rng.integers(0, len(shards), 10_000))
    elapsed = time.perf_counter() - t0
    assert total > 0 and len(lengths) == len(shards)
    return elapsed, len(shards)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--skip-400k", action="store_true")
    args = p.parse_args()
    src = Path(args.data) / OAS
    rows: list[tuple[str, str, str, str]] = []

    def report(name: str, value: str, goal: str, ok: bool) -> None:
        rows.append((name, value, goal, "PASS" if ok else "FAIL"))
        print(f"  {name}: {value}  (goal {goal})", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print("prepare 100k (1 thread) ...", flush=True)
        wall1, rss100, line = run_prepare([src], tmp / "p1", 1)
        print("   ", line)
        report("prepare 100k, 1 thread, wall", f"{wall1:.1f} s", "< 30 s", wall1 < 30)
        report("throughput, 1 thread", f"{100_000 / wall1:,.0f} rows/s", ">= 10,000", 100_000 / wall1 >= 10_000)
        print(f"prepare 100k ({args.threads} threads) ...", flush=True)
        wall2, rss100t, _ = run_prepare([src], tmp / "p2", args.threads)
        report(f"prepare 100k, {args.threads} threads, wall", f"{wall2:.1f} s", "< 30 s", wall2 < 30)
        report(
            f"throughput, {args.threads} threads",
            f"{100_000 / wall2:,.0f} rows/s",
            ">= 10,000",
            100_000 / wall2 >= 10_000,
        )
        same = all(
            (tmp / "p1" / f.relative_to(tmp / "p1")).read_bytes()
            == (tmp / "p2" / f.relative_to(tmp / "p1")).read_bytes()
            for f in (tmp / "p1").rglob("shard-*")
        )
        report("threads change no shard byte", str(same), "True", same)

        print("encoding: naive dict loop vs vectorized ...", flush=True)
        t_naive, t_batch, t_flat, n = bench_encoding(src)
        report(
            f"encode {n:,} seqs: loop {t_naive:.2f} s / encode_flat {t_flat:.3f} s (prepare's path)",
            f"{t_naive / t_flat:.1f}x",
            ">= 10x",
            t_naive / t_flat >= 10,
        )
        report(
            f"encode {n:,} seqs: loop {t_naive:.2f} s / encode_batch {t_batch:.3f} s (list of arrays)",
            f"{t_naive / t_batch:.1f}x",
            ">= 10x",
            t_naive / t_batch >= 10,
        )
        t_load, n_train = bench_load(tmp / "p1")
        report(f"open {n_train:,} train seqs memory-mapped + 10k random reads", f"{t_load:.3f} s", "< 1 s", t_load < 1)

        if not args.skip_400k:
            print("building the 400k file ...", flush=True)
            big = tmp / "oas_400k.csv.gz"
            make_400k(src, big)
            print("prepare 400k (1 thread) ...", flush=True)
            wall4, rss400, line = run_prepare([big], tmp / "p4", 1)
            print("   ", line)
            report(
                "throughput 400k, 1 thread", f"{400_000 / wall4:,.0f} rows/s", ">= 10,000", 400_000 / wall4 >= 10_000
            )
            ratio = rss400 / rss100
            report(f"peak RSS 400k / 100k ({rss400:.0f} / {rss100:.0f} MiB)", f"{ratio:.2f}x", "<= 1.2x", ratio <= 1.2)

    width = max(len(r[0]) for r in rows)
    print("\n" + f"{'measure':<{width}}  {'value':>14}  {'goal':>9}  result")
    for name, value, goal, ok in rows:
        print(f"{name:<{width}}  {value:>14}  {goal:>9}  {ok}")


if __name__ == "__main__":
    main()
