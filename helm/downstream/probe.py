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

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from helm.args import HelmParser
from helm.downstream.command import (
    Dataset,
    Embedding,
    EvalRecord,
    FromFeatures,
    FromHf,
    FromRun,
    HeadGrid,
    Output,
    Runtime,
    SourceChecked,
    recorded,
    regression_summary,
    run_command,
    settings_parser,
)
from helm.downstream.common import InputError, load_data, ridge_select, set_threads, test_predictions
from helm.downstream.source import load_source

if TYPE_CHECKING:
    import torch

    from helm.downstream.datasets import DownstreamData
    from helm.downstream.harness import Split
    from helm.downstream.saved_head import SavedHead


@dataclass
class ProbeSettings(SourceChecked, FromRun, FromFeatures, FromHf, Dataset, Output, HeadGrid, Embedding, Runtime):
    """Fine-tuning."""

    finetune: Literal["none", "full", "lora"] = "none"
    """none: frozen embeddings; full / lora: train a copy of the backbone per grid point"""
    backbone_lr: float = 1e-5
    """backbone learning rate when fine-tuning"""
    lora_r: int = 8
    """LoRA rank (--finetune lora)"""
    lora_alpha: float = 16.0
    """LoRA scale numerator (--finetune lora)"""
    feature_dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    """storage of the frozen embeddings (float16 halves memory on big datasets)"""
    save_head: Path | None = None
    """also save the selected head of a frozen probe and its run's identity (for helm design's property head;
    helm/downstream/saved_head.py)"""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.features and self.finetune != "none":
            raise ValueError(f"{self.features}: --finetune {self.finetune} needs the model (--run/--hf), not features")
        if self.head == "ridge" and self.finetune != "none":
            raise ValueError(f"--head ridge is a frozen-feature probe; --finetune {self.finetune} needs a trained head")
        if self.save_head and (self.hf or self.finetune != "none"):
            raise ValueError("--save-head keeps the head of a frozen probe of a helm run (--run, or --features of "
                             "one); not of --hf or --finetune")  # fmt: skip


# the settings a probe JSON records (config), and when each applies (else recorded as None)
RECORDED = ("features", "head", "finetune", "batch_sizes", "lrs", "alphas", "backbone_lr", "epochs", "patience",
            "max_train", "max_rows", "overlong", "bf16")  # fmt: skip


def recorded_settings(s: ProbeSettings) -> dict[str, Any]:
    grid, ridge = s.head != "ridge", s.head == "ridge"
    applies = {"batch_sizes": grid, "lrs": grid, "epochs": grid, "patience": grid, "alphas": ridge,
               "backbone_lr": s.finetune != "none"}  # fmt: skip
    return recorded(s, RECORDED, applies)


def ridge_probe(parts: dict[str, Split], alphas: list[float]) -> dict[str, Any]:
    """Closed-form ridge on mean-pooled embeddings (standardised on train), alpha chosen on validation."""
    import numpy as np

    from helm.downstream.heads import masked_mean

    pooled = {p: masked_mean(s.x.float(), s.mask).numpy().astype(np.float64) for p, s in parts.items()}
    mean, std = pooled["train"].mean(0), pooled["train"].std(0) + 1e-8
    mats = {p: (v - mean) / std for p, v in pooled.items()}
    ys = {p: s.y for p, s in parts.items()}
    return {**ridge_select({"mean-pooled": lambda: mats}, ys, alphas), "standardise": (mean, std)}


def selected_head(
    args: ProbeSettings, result: dict[str, Any], inputs: ProbeInputs, metrics: dict[str, Any]
) -> SavedHead:
    """The selected head of a frozen probe as a `SavedHead` (``--save-head``; a ridge probe as its linear head)."""
    from helm.downstream.saved_head import SavedHead, ridge_as_linear, weights_sha256

    meta = inputs.meta
    if meta.get("hf") or not meta.get("run_dir"):
        raise InputError(f"--save-head: {args.features}: these features are not of a helm run")
    if args.head == "ridge":
        ridge, (mu, sd) = result["model"], result["standardise"]
        state, kind, y_mean, y_std = ridge_as_linear(ridge.coef_, ridge.intercept_, mu, sd), "linear", 0.0, 1.0
    else:
        model = result["model"]
        state, kind, y_mean, y_std = model.head.state_dict(), args.head, model.target_mean, model.target_std
    info = {"task": inputs.data.spec.name, "probe_head": args.head, "selected": result["selected"], "seed": args.seed,
            **{k: metrics.get(k) for k in ("spearman", "val_spearman")}}  # fmt: skip
    run_dir = meta["run_dir"]
    return SavedHead(kind, inputs.dim, state, float(y_mean), float(y_std), str(Path(run_dir).resolve()),
                     weights_sha256(run_dir), int(meta["max_len"]), info)  # fmt: skip


@dataclass
class ProbeInputs:
    """What the head grid trains on: the dataset, one row of inputs per sequence and where they come from."""

    data: DownstreamData
    x: torch.Tensor  # frozen embeddings [N, L, D], or token ids [N, L] when fine-tuning
    mask: torch.Tensor
    dim: int
    model: Any  # the backbone (None for a features file)
    run_id: str
    meta: dict[str, Any]  # mode, tokenizer, max_len, run_dir, hf
    n_truncated: int
    n_tail_trimmed: int


def probe_inputs(args: ProbeSettings) -> ProbeInputs:
    """The dataset and its inputs: a features file, or a model's frozen embeddings / token ids (fine-tuning)."""
    import torch

    from helm.downstream.embed import embed_tokens

    if args.features:
        from helm.downstream.features import check_features, load_features

        feats = load_features(args.features)
        data = load_data(args, check=lambda d: check_features(feats, d, str(args.features)))
        meta = feats.meta
        return ProbeInputs(data, feats.x, feats.mask, int(feats.x.shape[-1]), None, meta["run"], meta,
                           meta["n_truncated"], meta["n_tail_trimmed"])  # fmt: skip
    src = load_source(args)  # --run or --hf: the same encoding/embedding interface
    data = load_data(args)
    max_len = src.resolve_max_len(args.max_len)
    enc = src.encode(data.sequences, max_len, codon_frame=data.spec.codon_frame, overlong=args.overlong,
                     where=f"{data.path}")  # fmt: skip
    x = enc.ids
    if args.finetune == "none":
        x = embed_tokens(src.model, enc, args.embed_batch_size, dtype=getattr(torch, args.feature_dtype),
                         progress=not args.quiet, bf16=args.bf16, compile=args.compile)  # fmt: skip
    meta = {**src.meta, "max_len": max_len, "run_dir": src.run_dir}
    return ProbeInputs(data, x, enc.mask, int(src.model.config.hidden_size), src.model, src.run_id, meta,
                       enc.n_truncated, enc.n_tail_trimmed)  # fmt: skip


def fit_heads(args: ProbeSettings, inputs: ProbeInputs) -> dict[str, Any]:
    """The head grid (or the ridge probe) on the train/val/test parts: metrics, selection, grid, test_pred."""
    import torch

    from helm.downstream.harness import FitConfig, copy_encoder, grid_rows, splits_of, sweep

    torch.manual_seed(args.seed)
    parts = splits_of(inputs.data, inputs.x, inputs.mask, by_rows=bool(args.features))
    if args.head == "ridge":
        return ridge_probe(parts, args.alphas)
    make_encoder = None
    if args.finetune != "none":

        def make_encoder():
            return copy_encoder(inputs.model, args.finetune, args.lora_r, args.lora_alpha)

    base = FitConfig(head=args.head, epochs=args.epochs, patience=args.patience, backbone_lr=args.backbone_lr,
                     seed=args.seed)  # fmt: skip
    result = sweep(parts["train"], parts["val"], parts["test"], inputs.dim, base, args.batch_sizes, args.lrs,
                   make_encoder, progress=not args.quiet)  # fmt: skip
    result["grid"] = grid_rows(result["grid"])
    return result


def probe(args: ProbeSettings) -> EvalRecord:
    t0 = time.time()
    set_threads(args.threads)
    inputs = probe_inputs(args)
    t_embed = time.time() - t0
    result = fit_heads(args, inputs)
    data, meta = inputs.data, inputs.meta
    metrics = {**result["metrics"], **data.stats, "n_truncated": inputs.n_truncated,
               "n_tail_trimmed": inputs.n_tail_trimmed}  # fmt: skip
    if args.save_head:
        from helm.downstream.saved_head import save_head

        save_head(args.save_head, selected_head(args, result, inputs, metrics))
    provenance = {
        "kind": "probe", "run_dir": meta.get("run_dir"), "selected": result["selected"], "grid": result["grid"],
        "dataset_file": str(data.path), "sha256": data.spec.sha256, "metric": data.spec.metric,
        "mode": meta.get("mode"), "tokenizer": meta.get("tokenizer"), "max_len": meta.get("max_len"),
        "codon_frame": data.spec.codon_frame, "sequence_type": data.spec.sequence_type,
        **data.split_info,  # split kind, split_seed (+ similarity settings, n_clusters)
        "hf": meta.get("hf"),  # a foreign checkpoint's identity (path, config sha256), else None
        "embed_seconds": round(t_embed, 2), "saved_head": str(args.save_head) if args.save_head else None,
        "seconds": round(time.time() - t0, 2),
    }  # fmt: skip
    return EvalRecord(inputs.run_id, data.spec.name, args.seed, metrics, recorded_settings(args), provenance,
                      test_predictions(data, result["test_pred"]))  # fmt: skip


def build_parser() -> HelmParser:
    return settings_parser("helm probe", __doc__.splitlines()[0], ProbeSettings, ("dataset", "out"))


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), probe, argv, regression_summary)


if __name__ == "__main__":
    sys.exit(main())
