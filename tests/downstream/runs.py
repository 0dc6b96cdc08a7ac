"""Tiny run directories built with the real public APIs (create_model + save_pretrained, tokenizer.save,
write_config)."""

from __future__ import annotations

from pathlib import Path

import torch


def make_run(root: Path, name: str, mode: str, tokenizer: str = "3mer", max_seq_len: int = 256, seed: int = 0) -> Path:
    from helm.models import create_model
    from helm.run import MODEL_DIR, TOKENIZER_DIR, write_config
    from helm.tokenizers import create_tokenizer

    run = root / name
    tok = create_tokenizer(tokenizer)
    torch.manual_seed(seed)
    model = create_model(
        "gpt2",
        vocab_size=len(tok),
        num_layers=2,
        hidden_size=32,
        num_heads=2,
        intermediate_size=64,
        max_seq_len=max_seq_len,
        bidirectional=(mode == "mlm"),
    )
    model.save_pretrained(run / MODEL_DIR)
    tok.save(run / TOKENIZER_DIR)
    write_config(run, {"model_name": "gpt2", "mode": mode, "tokenizer": tokenizer, "max_seq_len": max_seq_len})
    return run


def train_tiny(shared_data: Path, root: Path, mode: str = "clm") -> tuple[Path, Path]:
    """A really (briefly) trained run from a real `train.py` subprocess on 300 OAS CDS: (run dir, prepared dir)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from train_utils import run_train, tiny_args, write_oas_txt

    from helm.prepare import prepare

    prepared = root / "prep"
    if not (prepared / "summary.json").exists():
        prepare(train_files=[write_oas_txt(shared_data, root / "seqs.txt", n=300)], output=prepared, progress=False)
    run = root / f"oas-{mode}"
    args = tiny_args(prepared, run, "--mode", mode, "--max_seq_len", "160", "--epochs", "1", "--max-steps", "20")
    res = run_train([*args, "--seed", "0"])
    if res.returncode != 0:
        raise RuntimeError(f"helm train failed:\n{res.stderr[-3000:]}")
    return run, prepared
