"""`helm probe`: property prediction with a pretrained run on a registry dataset (DESIGN 5).

    helm probe (--run RUN_DIR | --hf HF_DIR [--hf-* ...] | --features F) --dataset mrfp --seed 0 \
        --out results/downstream/RUN/mrfp/0.json [--registry config/datasets.yaml] [--mirror DIR]
        [--head textcnn|linear|mlp] [--finetune none|full|lora]
        [--epochs 100] [--patience 15] [--batch-sizes 16 32] [--lrs 1e-3 1e-4] [--max-train N]

Frozen (``--finetune none``): embeddings are extracted once for the whole dataset, then each grid point
trains only the head. ``full`` / ``lora`` train a fresh copy of the backbone per grid point with its own
learning rate (``--backbone-lr``). ``--hf DIR`` probes any local Hugging Face checkpoint the same way
(helm.downstream.source). The output JSON is described in docs/ARCHITECTURE.md ("Downstream").
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from helm.downstream.datasets import DatasetError, DownstreamData, RegistryError, load_dataset, subsample
from helm.downstream.embed import InputError, embed_tokens
from helm.downstream.harness import FitConfig, Split, copy_encoder, sweep
from helm.downstream.heads import HEADS
from helm.downstream.source import add_source_args, load_source, source_error

PROBE_HEADS = (*HEADS, "ridge")  # ridge: closed-form, on mean-pooled embeddings (a fast linear probe)


def add_fit_args(parser: argparse.ArgumentParser, head_default: str = "textcnn") -> None:
    """Flags shared by `helm probe` and `helm baseline`."""
    parser.add_argument("--dataset", required=True, help="registry name (config/datasets.yaml)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="output JSON file")
    parser.add_argument("--registry", default=None, help="dataset registry YAML (default: config/datasets.yaml)")
    parser.add_argument("--mirror", default=None, help="local data mirror searched before the URL")
    parser.add_argument("--data-file", default=None, help="read the dataset from this file instead (no sha256 check)")
    parser.add_argument(
        "--head",
        choices=PROBE_HEADS,
        default=head_default,
        help="textcnn (the paper's), linear/mlp on pooled embeddings, ridge (closed form, pooled)",
    )
    parser.add_argument(
        "--max-rows",
        type=int,
        default=None,
        help="a fixed random subset of the dataset's rows, the same for every seed (large sets)",
    )
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--patience", type=int, default=15, help="early-stopping patience (epochs)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 1e-4], help="head learning rates")
    parser.add_argument("--max-train", type=int, default=None, help="subsample the training split (smoke runs)")
    parser.add_argument(
        "--alphas",
        type=float,
        nargs="+",
        default=[0.01, 0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0],
        help="ridge penalties tried (chosen on validation Spearman)",
    )
    parser.add_argument(
        "--overlong",
        choices=("truncate", "error"),
        default="truncate",
        help="sequences longer than the model's max_seq_len: cut (counted) or refuse",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def load_data(args: argparse.Namespace, check=None) -> DownstreamData:
    """The dataset as the flags ask: the seed's split, --max-rows, then --max-train. ``check(data)`` sees the
    rows before --max-train (what a features file must match)."""
    # the downstream seed also re-draws random/similarity splits (config/datasets.yaml)
    data = load_dataset(args.dataset, registry=args.registry, mirror=args.mirror, path=args.data_file, seed=args.seed,
                        max_rows=args.max_rows)  # fmt: skip
    if check is not None:
        check(data)
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


def splits_of(data: DownstreamData, x: torch.Tensor, mask: torch.Tensor, by_rows: bool = False) -> dict[str, Split]:
    """train/val/test parts. ``x``/``mask`` hold one row per kept sequence of ``data``, or, with ``by_rows``, one
    per row of the dataset as loaded (a features file, indexed through ``data.rows``)."""
    out = {}
    for part in ("train", "val", "test"):
        idx = data.indices(part)
        rows = torch.as_tensor(data.rows[idx] if by_rows else idx)
        out[part] = Split(x[rows], mask[rows], data.targets[idx])
    return out


def test_predictions(data: DownstreamData, pred) -> dict[str, list]:
    """The selected model's test predictions with their rows, so tables can bootstrap paired differences."""
    idx = data.indices("test")
    return {"test_index": data.rows[idx].tolist(), "test_y": data.targets[idx].tolist(),
            "test_pred": [float(v) for v in pred]}  # fmt: skip


def ridge_probe(parts: dict[str, Split], alphas: list[float]) -> dict[str, Any]:
    """Closed-form ridge on mean-pooled embeddings (standardised on train), alpha chosen on validation."""

    from helm.downstream.baselines import ridge_select  # baselines imports this module: import here
    from helm.downstream.heads import masked_mean

    pooled = {p: masked_mean(s.x.float(), s.mask).numpy().astype(np.float64) for p, s in parts.items()}
    mean, std = pooled["train"].mean(0), pooled["train"].std(0) + 1e-8
    mats = {p: (v - mean) / std for p, v in pooled.items()}
    ys = {p: s.y for p, s in parts.items()}
    return ridge_select({"mean-pooled": lambda: mats}, ys, alphas)


def probe(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.time()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.features:
        from helm.downstream.features import check_features, load_features

        feats = load_features(args.features)
        data = load_data(args, check=lambda d: check_features(feats, d, str(args.features)))
        run_id, meta, model = feats.meta["run"], feats.meta, None
        x, mask, dim = feats.x, feats.mask, int(feats.x.shape[-1])
        n_truncated, n_tail = meta["n_truncated"], meta["n_tail_trimmed"]
    else:
        src = load_source(args)  # --run or --hf: the same encoding/embedding interface
        data = load_data(args)
        max_len = src.resolve_max_len(args.max_len)
        enc = src.encode(data.sequences, max_len, codon_frame=data.spec.codon_frame, overlong=args.overlong,
                         where=f"{data.path}")  # fmt: skip
        run_id, model, dim = src.run_id, src.model, int(src.model.config.hidden_size)
        meta = {**src.meta, "max_len": max_len, "run_dir": src.run_dir}
        n_truncated, n_tail = enc.n_truncated, enc.n_tail_trimmed
        x, mask = enc.ids, enc.mask
        if args.finetune == "none":
            x = embed_tokens(model, enc, args.embed_batch_size, dtype=getattr(torch, args.feature_dtype),
                             progress=not args.quiet, bf16=args.bf16, compile=args.compile)  # fmt: skip
    if args.features and args.finetune != "none":
        raise InputError(f"{args.features}: --finetune {args.finetune} needs the model (--run/--hf), not features")
    if args.head == "ridge" and args.finetune != "none":
        raise InputError(f"--head ridge is a frozen-feature probe; --finetune {args.finetune} needs a trained head")
    base = FitConfig(
        head=args.head, epochs=args.epochs, patience=args.patience, backbone_lr=args.backbone_lr, seed=args.seed
    )
    torch.manual_seed(args.seed)
    parts = splits_of(data, x, mask, by_rows=bool(args.features))
    make_encoder = None
    if args.finetune != "none":

        def make_encoder():
            return copy_encoder(model, args.finetune, args.lora_r, args.lora_alpha)

    t_embed = time.time() - t0
    if args.head == "ridge":
        result = ridge_probe(parts, args.alphas)
        grid = result["grid"]
    else:
        result = sweep(parts["train"], parts["val"], parts["test"], dim, base, args.batch_sizes, args.lrs,
                       make_encoder, progress=not args.quiet)  # fmt: skip
        grid = [
            {k: g[k] for k in ("batch_size", "lr", "best_epoch")} | {"val_spearman": g["val"]["spearman"]}
            for g in result["grid"]
        ]
    metrics = dict(result["metrics"])
    metrics.update({k: v for k, v in data.stats.items()})
    metrics.update(n_truncated=n_truncated, n_tail_trimmed=n_tail)
    return {
        "run": run_id,
        "task": data.spec.name,
        "seed": args.seed,
        "metrics": metrics,
        "predictions": test_predictions(data, result["test_pred"]),
        "config": {
            "kind": "probe",
            "run_dir": meta.get("run_dir"),
            "features": str(args.features) if args.features else None,
            "head": args.head,
            "finetune": args.finetune,
            "batch_sizes": args.batch_sizes if args.head != "ridge" else None,
            "lrs": args.lrs if args.head != "ridge" else None,
            "alphas": args.alphas if args.head == "ridge" else None,
            "backbone_lr": args.backbone_lr if args.finetune != "none" else None,
            "epochs": args.epochs if args.head != "ridge" else None,
            "patience": args.patience if args.head != "ridge" else None,
            "max_train": args.max_train,
            "max_rows": args.max_rows,
            "selected": result["selected"],
            "grid": grid,
            "dataset_file": str(data.path),
            "sha256": data.spec.sha256,
            "metric": data.spec.metric,
            "mode": meta.get("mode"),
            "tokenizer": meta.get("tokenizer"),
            "max_len": meta.get("max_len"),
            "overlong": args.overlong,
            "codon_frame": data.spec.codon_frame,
            "sequence_type": data.spec.sequence_type,
            **data.split_info,  # split kind, split_seed (+ similarity settings, n_clusters)
            "bf16": args.bf16,
            "hf": meta.get("hf"),  # a foreign checkpoint's identity (path, config sha256), else None
            "embed_seconds": round(t_embed, 2),
            "seconds": round(time.time() - t0, 2),
        },
    }


def main(argv: list[str] | None = None) -> int:
    from helm.downstream.features import add_embed_args

    parser = argparse.ArgumentParser(prog="helm probe", description=__doc__.splitlines()[0])
    add_source_args(parser, features=True)
    add_fit_args(parser)
    parser.add_argument("--finetune", choices=("none", "full", "lora"), default="none")
    parser.add_argument("--backbone-lr", type=float, default=1e-5, help="backbone learning rate when fine-tuning")
    parser.add_argument("--lora-r", type=int, default=8)
    parser.add_argument("--lora-alpha", type=float, default=16.0)
    add_embed_args(parser)
    parser.add_argument(
        "--feature-dtype",
        choices=("float32", "float16", "bfloat16"),
        default="float32",
        help="storage of the frozen embeddings (float16 halves memory on big datasets)",
    )
    args = parser.parse_args(argv)
    if err := source_error(args):
        print(f"helm probe: error: {err}", file=sys.stderr)
        return 2
    return run_regression_command("helm probe", probe, args)


if __name__ == "__main__":
    sys.exit(main())
