"""What the downstream commands share (`helm embed | probe | baseline | annotate | generate | cluster`).

- data: `load_data` (the dataset as the flags ask), `test_predictions`;
- the closed-form `ridge_select` behind `helm probe --head ridge` and the ridge baselines;
- `InputError`: sequences or a checkpoint that cannot be evaluated as asked (a user error).

The commands' settings, flags, record and tail are in helm/downstream/command.py. Nothing heavy is imported at
module level (torch, numpy, sklearn only inside functions), so a command answers ``--help`` at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from helm.downstream.datasets import DownstreamData

HEADS = ("textcnn", "linear", "mlp")  # trained heads (helm.downstream.heads.build_head)
PROBE_HEADS = (*HEADS, "ridge")  # ridge: closed-form, on mean-pooled embeddings (a fast linear probe)
DEFAULT_ALPHAS = [0.01, 0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0]


class InputError(ValueError):
    """Sequences or a checkpoint that cannot be evaluated as asked."""


def set_threads(threads: int | None) -> None:
    """``--threads``: torch's CPU threads (unset: torch's default)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


# -------------------------------------------------------------------------------------------------- data
def load_data(args: Any, check: Callable[[DownstreamData], None] | None = None) -> DownstreamData:
    """The dataset as the flags ask: the seed's split, --max-rows, then --max-train. ``check(data)`` sees the
    rows before --max-train (what a features file must match)."""
    from helm.downstream.datasets import load_dataset, subsample

    # the downstream seed also re-draws random/similarity splits (config/datasets.yaml)
    data = load_dataset(args.dataset, registry=args.registry, mirror=args.mirror, path=args.data_file, seed=args.seed,
                        max_rows=args.max_rows)  # fmt: skip
    if check is not None:
        check(data)
    return subsample(data, args.max_train, args.seed)


def test_predictions(data: DownstreamData, pred) -> dict[str, list]:
    """The selected model's test predictions with their rows, so tables can bootstrap paired differences."""
    idx = data.indices("test")
    return {"test_index": data.rows[idx].tolist(), "test_y": data.targets[idx].tolist(),
            "test_pred": [float(v) for v in pred]}  # fmt: skip


test_predictions.__test__ = False  # not a pytest test, whatever imports it


def ridge_select(features: dict[str, Any], y: dict[str, Any], alphas: list[float]) -> dict[str, Any]:
    """Ridge regression over feature options x penalties, selected on validation Spearman; test scored once.

    ``features``: option label -> callable() -> {"train"|"val"|"test": matrix}; ``y``: part -> targets."""
    from sklearn.linear_model import Ridge

    from helm.downstream.metrics import regression_metrics

    grid, best = [], None
    for label, build in features.items():
        mats = build()
        for alpha in alphas:
            model = Ridge(alpha=alpha).fit(mats["train"], y["train"])
            val = regression_metrics(y["val"], model.predict(mats["val"]))
            score = val["spearman"] if math.isfinite(val["spearman"]) else -math.inf
            grid.append({"features": label, "alpha": alpha, "val_spearman": val["spearman"]})
            if best is None or score > best[0]:
                best = (score, label, alpha, model, mats, val)
    _, label, alpha, model, mats, val = best
    pred = model.predict(mats["test"])
    test = regression_metrics(y["test"], pred)
    return {
        "metrics": {**test, **{f"val_{k}": v for k, v in val.items()}},
        "selected": {"features": label, "alpha": alpha},
        "grid": grid,
        "test_pred": pred,
        "model": model,  # the selected fit (helm probe --save-head keeps it)
    }
