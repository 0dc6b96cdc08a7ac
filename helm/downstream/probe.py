"""`helm probe`: property prediction with a pretrained run on a registry dataset.

    helm probe (--run RUN_DIR | --hf HF_DIR [--hf-* ...] | --features F) --dataset mrfp --seed 0 \
        --out results/downstream/RUN/mrfp/0.json [--registry config/datasets.yaml] [--mirror DIR | --data-file F]
        [--head textcnn|linear|mlp|ridge] [--finetune none|full|lora]
        [--epochs 100] [--patience 15] [--batch-sizes 16 32] [--lrs 1e-3 1e-4] [--max-train N]

Frozen (``--finetune none``): embeddings are extracted once for the whole dataset, then each grid point
trains only the head. ``full`` / ``lora`` train a fresh copy of the backbone per grid point with its own
learning rate (``--backbone-lr``). ``--hf DIR`` probes any local Hugging Face checkpoint the same way
(helm.downstream.source). The output JSON is described in docs/ARCHITECTURE.md ("Downstream").
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from helm.args import HelmParser
from helm.downstream.common import (
    InputError,
    add_fit_args,
    load_data,
    ridge_select,
    run_regression_command,
    set_threads,
    splits_of,
    test_predictions,
)
from helm.downstream.source import add_source_args, load_source, source_error

if TYPE_CHECKING:
    from helm.downstream.harness import Split
    from helm.downstream.saved_head import SavedHead


def ridge_probe(parts: dict[str, Split], alphas: list[float]) -> dict[str, Any]:
    """Closed-form ridge on mean-pooled embeddings (standardised on train), alpha chosen on validation."""
    import numpy as np

    from helm.downstream.heads import masked_mean

    pooled = {p: masked_mean(s.x.float(), s.mask).numpy().astype(np.float64) for p, s in parts.items()}
    mean, std = pooled["train"].mean(0), pooled["train"].std(0) + 1e-8
    mats = {p: (v - mean) / std for p, v in pooled.items()}
    ys = {p: s.y for p, s in parts.items()}
    return {**ridge_select({"mean-pooled": lambda: mats}, ys, alphas), "standardise": (mean, std)}


def selected_head(args: argparse.Namespace, result: dict[str, Any], dim: int, run_dir: str, max_len: int,
                  metrics: dict[str, Any], task: str) -> SavedHead:  # fmt: skip
    """The selected head of a frozen probe as a `SavedHead` (``--save-head``; a ridge probe as its linear head)."""
    from helm.downstream.saved_head import SavedHead, ridge_as_linear, weights_sha256

    if args.head == "ridge":
        ridge, (mu, sd) = result["model"], result["standardise"]
        state, kind, y_mean, y_std = ridge_as_linear(ridge.coef_, ridge.intercept_, mu, sd), "linear", 0.0, 1.0
    else:
        model = result["model"]
        state, kind, y_mean, y_std = model.head.state_dict(), args.head, model.target_mean, model.target_std
    info = {"task": task, "probe_head": args.head, "selected": result["selected"], "seed": args.seed,
            **{k: metrics.get(k) for k in ("spearman", "val_spearman")}}  # fmt: skip
    return SavedHead(kind, dim, state, float(y_mean), float(y_std), str(Path(run_dir).resolve()),
                     weights_sha256(run_dir), int(max_len), info)  # fmt: skip


def probe(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from helm.downstream.embed import embed_tokens
    from helm.downstream.harness import FitConfig, copy_encoder, sweep

    t0 = time.time()
    set_threads(args.threads)
    if args.save_head and (getattr(args, "hf", None) or args.finetune != "none"):
        raise InputError("--save-head keeps the head of a frozen probe of a helm run (--run, or --features of one); "
                         "not of --hf or --finetune")  # fmt: skip
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
    if args.save_head:
        from helm.downstream.saved_head import save_head

        if meta.get("hf") or not meta.get("run_dir"):
            raise InputError(f"--save-head: {args.features}: these features are not of a helm run")
        max_len = int(meta["max_len"])
        save_head(args.save_head, selected_head(args, result, dim, meta["run_dir"], max_len, metrics, data.spec.name))
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
            "saved_head": str(args.save_head) if args.save_head else None,
            "seconds": round(time.time() - t0, 2),
        },
    }


def build_parser() -> HelmParser:
    from helm.downstream.features import add_embed_args

    parser = HelmParser("helm probe", __doc__.splitlines()[0])
    add_source_args(parser, features=True)
    add_fit_args(parser)
    parser.add_argument(
        "--finetune",
        choices=("none", "full", "lora"),
        default="none",
        help="none: frozen embeddings; full / lora: train a copy of the backbone per grid point",
    )
    parser.add_argument("--backbone-lr", type=float, default=1e-5, help="backbone learning rate when fine-tuning")
    parser.add_argument("--lora-r", type=int, default=8, help="LoRA rank (--finetune lora)")
    parser.add_argument("--lora-alpha", type=float, default=16.0, help="LoRA scale numerator (--finetune lora)")
    parser.add_argument(
        "--save-head",
        "--save_head",
        default=None,
        metavar="FILE",
        help="also save the selected head of a frozen probe and its run's identity (for helm design's property head; "
        "helm/downstream/saved_head.py)",
    )
    add_embed_args(parser)
    parser.add_argument(
        "--feature-dtype",
        choices=("float32", "float16", "bfloat16"),
        default="float32",
        help="storage of the frozen embeddings (float16 halves memory on big datasets)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if err := source_error(args):
        parser.error(err)
    return run_regression_command("helm probe", probe, args)


if __name__ == "__main__":
    sys.exit(main())
