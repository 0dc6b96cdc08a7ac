"""Helpers for the training tests: a few hundred real OAS heavy-chain CDS, prepared once per session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OAS = "pretrain/oas_parameswaran2013_heavy_100k.csv.gz"


def write_oas_txt(shared_data: Path, path: Path, n: int = 300) -> Path:
    """The first `n` OAS rows that yield an in-frame CDS, one per line (the seed's sequences_codonized.txt)."""
    from helm.io import oas_cds, read_records

    seqs = []
    for _, row in read_records(shared_data / OAS):
        seq, reason, _ = oas_cds(row)
        if reason is None:
            seqs.append(seq)
        if len(seqs) == n:
            break
    path.write_text("\n".join(seqs) + "\n")
    return path


def tiny_args(data_dir: Path, output: Path, *extra: str) -> list[str]:
    """A tiny, fast CPU run: gpt2 2 x 32, short sequences, a few steps, no progress bar."""
    return [
        "--data_dir", str(data_dir), "--output", str(output), "--model_name", "gpt2", "--num_layers", "2",
        "--hidden_size", "32", "--num_heads", "2", "--intermediate_size", "64", "--max_seq_len", "48",
        "--batch_size", "16", "--accelerator", "cpu", "--num_workers", "0", "--no-progress-bar", "--lr", "1e-3",
        "--warmup-epochs", "0", *extra,
    ]  # fmt: skip


def run_train(args: list[str], timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    """`python train.py ...` as a real subprocess (the seed's entry point)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, str(REPO / "train.py"), *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, **kw,
    )  # fmt: skip
