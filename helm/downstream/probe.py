"""`helm probe`: property prediction with a pretrained run on a registry dataset (DESIGN 5).

    helm probe --run RUN_DIR --dataset mrfp --seed 0 --out results/downstream/RUN/mrfp/0.json \
        [--registry config/datasets.yaml] [--mirror DIR] [--head textcnn|linear|mlp] [--finetune none|full|lora]
        [--epochs 100] [--patience 15] [--batch-sizes 16 32] [--lrs 1e-3 1e-4] [--max-train N]

Frozen (``--finetune none``): embeddings are extracted once for the whole dataset, then each grid point
trains only the head. ``full`` / ``lora`` train a fresh copy of the backbone per grid point with its own
learning rate (``--backbone-lr``). The output JSON is described in docs/ARCHITECTURE.md ("Downstream").
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from helm.downstream.datasets import DatasetError, DownstreamData, RegistryError, load_dataset, subsample
from helm.downstream.embed import InputError, check_compatible, embed_tokens, encode, run_mode
from helm.downstream.harness import FitConfig, Split, copy_encoder, sweep
from helm.downstream.heads import HEADS


def add_fit_args(parser: argparse.ArgumentParser, head_default: str = "textcnn") -> None:
    """Flags shared by `helm probe` and `helm baseline`."""
    parser.add_argument("--dataset", required=True, help="registry name (config/datasets.yaml)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="output JSON file")
    parser.add_argument("--registry", default=None, help="dataset registry YAML (default: config/datasets.yaml)")
    parser.add_argument("--mirror", default=None, help="local data mirror searched before the URL")
    parser.add_argument("--data-file", default=None, help="read the dataset from this file instead (no sha256 check)")
    parser.add_argument("--head", choices=HEADS, default=head_default)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--patience", type=int, default=15, help="early-stopping patience (epochs)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 1e-4], help="head learning rates")
    parser.add_argument("--max-train", type=int, default=None, help="subsample the training split (smoke runs)")
    parser.add_argument(
        "--overlong",
        choices=("truncate", "error"),
        default="truncate",
        help="sequences longer than the model's max_seq_len: cut (counted) or refuse",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def load_data(args: argparse.Namespace) -> DownstreamData:
    # the downstream seed also re-draws random/similarity splits (config/datasets.yaml)
    data = load_dataset(args.dataset, registry=args.registry, mirror=args.mirror, path=args.data_file, seed=args.seed)
    return subsample(data, args.max_train, args.seed)


def run_json_command(
    prog: str,
    compute: Callable[[argparse.Namespace], dict[str, Any]],
    args: argparse.Namespace,
    summary: Callable[[dict[str, Any]], str],
    errors: tuple[type[BaseException], ...],
) -> int:
    """Shared tail of the downstream commands: one-line errors (exit 1), the JSON at --out, a summary line."""
    try:
        payload = compute(args)
    except errors as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    write_json(args.out, payload)
    print(f"{summary(payload)} -> {args.out}")
    return 0


def run_regression_command(prog: str, compute: Any, args: argparse.Namespace) -> int:
    """`helm probe` / `helm baseline`: test (and validation) Spearman of the selected configuration."""
    from helm.fetch import FetchError

    def summary(payload: dict[str, Any]) -> str:
        m = payload["metrics"]
        return (
            f"{payload['run']} {payload['task']} seed={args.seed}: test spearman={m['spearman']:.4f} "
            f"(val {m['val_spearman']:.4f})"
        )

    errors = (DatasetError, RegistryError, InputError, FileNotFoundError, FetchError)
    return run_json_command(prog, compute, args, summary, errors)


def write_json(path: str | Path, payload: dict[str, Any]) -> Path:
    from helm.run import _atomic_write, _plain

    return _atomic_write(Path(path), json.dumps(_plain(payload), indent=2, sort_keys=True) + "\n")


def splits_of(data: DownstreamData, x: torch.Tensor, mask: torch.Tensor) -> dict[str, Split]:
    out = {}
    for part in ("train", "val", "test"):
        idx = torch.as_tensor(data.indices(part))
        out[part] = Split(x[idx], mask[idx], data.targets[idx.numpy()])
    return out


def probe(args: argparse.Namespace) -> dict[str, Any]:
    from helm.run import load_run

    t0 = time.time()
    if args.threads:
        torch.set_num_threads(args.threads)
    run = load_run(args.run)
    check_compatible(run.model, run.tokenizer, where=str(args.run))
    data = load_data(args)
    mode = run_mode(run.config)
    max_len = min(int(args.max_len or run.model.config.max_seq_len), int(run.model.config.max_seq_len))
    enc = encode(
        run.tokenizer,
        data.sequences,
        max_len,
        mode=mode,
        codon_frame=data.spec.codon_frame,
        overlong=args.overlong,
        where=f"{data.path}",
    )
    base = FitConfig(
        head=args.head, epochs=args.epochs, patience=args.patience, backbone_lr=args.backbone_lr, seed=args.seed
    )
    dim = int(run.model.config.hidden_size)
    torch.manual_seed(args.seed)
    if args.finetune == "none":
        feats = embed_tokens(
            run.model,
            enc,
            args.embed_batch_size,
            dtype=getattr(torch, args.feature_dtype),
            progress=not args.quiet,
            bf16=args.bf16,
        )
        parts = splits_of(data, feats, enc.mask)
        make_encoder = None
    else:
        parts = splits_of(data, enc.ids, enc.mask)

        def make_encoder():
            return copy_encoder(run.model, args.finetune, args.lora_r, args.lora_alpha)

    t_embed = time.time() - t0
    result = sweep(
        parts["train"],
        parts["val"],
        parts["test"],
        dim,
        base,
        args.batch_sizes,
        args.lrs,
        make_encoder,
        progress=not args.quiet,
    )
    metrics = dict(result["metrics"])
    metrics.update({k: v for k, v in data.stats.items()})
    metrics.update(n_truncated=enc.n_truncated, n_tail_trimmed=enc.n_tail_trimmed)
    return {
        "run": run.run_id,
        "task": data.spec.name,
        "seed": args.seed,
        "metrics": metrics,
        "config": {
            "kind": "probe",
            "run_dir": str(args.run),
            "head": args.head,
            "finetune": args.finetune,
            "batch_sizes": args.batch_sizes,
            "lrs": args.lrs,
            "backbone_lr": args.backbone_lr if args.finetune != "none" else None,
            "epochs": args.epochs,
            "patience": args.patience,
            "max_train": args.max_train,
            "selected": result["selected"],
            "grid": [
                {k: g[k] for k in ("batch_size", "lr", "best_epoch")} | {"val_spearman": g["val"]["spearman"]}
                for g in result["grid"]
            ],
            "dataset_file": str(data.path),
            "sha256": data.spec.sha256,
            "metric": data.spec.metric,
            "mode": mode,
            "tokenizer": getattr(run.tokenizer, "name", None),
            "max_len": max_len,
            "overlong": args.overlong,
            "codon_frame": data.spec.codon_frame,
            "sequence_type": data.spec.sequence_type,
            **data.split_info,  # split kind, split_seed (+ similarity settings, n_clusters)
            "bf16": args.bf16,
            "embed_seconds": round(t_embed, 2),
            "seconds": round(time.time() - t0, 2),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="helm probe", description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="run directory (model/, tokenizer/, config.yaml)")
    add_fit_args(parser)
    parser.add_argument("--finetune", choices=("none", "full", "lora"), default="none")
    parser.add_argument("--backbone-lr", type=float, default=1e-5, help="backbone learning rate when fine-tuning")
    parser.add_argument("--lora-r", type=int, default=8)
    parser.add_argument("--lora-alpha", type=float, default=16.0)
    parser.add_argument("--max-len", type=int, default=None, help="token cap (default and upper bound: max_seq_len)")
    parser.add_argument("--embed-batch-size", type=int, default=64)
    parser.add_argument("--bf16", action="store_true", help="extract frozen embeddings under bfloat16 autocast")
    parser.add_argument(
        "--feature-dtype",
        choices=("float32", "float16", "bfloat16"),
        default="float32",
        help="storage of the frozen embeddings (float16 halves memory on big datasets)",
    )
    args = parser.parse_args(argv)
    return run_regression_command("helm probe", probe, args)


if __name__ == "__main__":
    sys.exit(main())
