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


def run_train(
    args: list[str], timeout: float = 300, env: dict[str, str] | None = None, **kw
) -> subprocess.CompletedProcess:
    """`python train.py ...` as a real subprocess (the seed's entry point); `env`: variables to add."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", **(env or {}))
    return subprocess.run(
        [sys.executable, str(REPO / "train.py"), *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, **kw,
    )  # fmt: skip


# SIGKILLs the training process itself just before the update after `step`, so last.ckpt holds `step`: with
# --checkpoint-every-n-steps 1 mid-epoch, and on an epoch boundary the one saved after validation (--checkpoint-hist
# keeps every epoch among the best, and Lightning refreshes last.ckpt at epoch end only when it saves a best one).
KILL_AT = """
import os, signal, sys
from helm.module import HelmModule
from helm.train import main

def on_train_batch_start(self, batch, batch_idx):
    if self.global_step == int(sys.argv[1]):
        os.kill(os.getpid(), signal.SIGKILL)

HelmModule.on_train_batch_start = on_train_batch_start
sys.exit(main(sys.argv[2:]))
"""
