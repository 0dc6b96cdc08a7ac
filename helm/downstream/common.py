"""What the downstream commands share (`helm embed | probe | baseline | annotate | generate | cluster`).

- flags: `add_data_args` (dataset, output, registry/mirror/file, subset, threads) and `add_fit_args` (those plus
  the seed, head and grid of `helm probe` / `helm baseline`), written with helm.args' convention;
- data: `load_data` (the dataset as the flags ask), `splits_of` (train/val/test parts), `test_predictions`;
- the closed-form `ridge_select` behind `helm probe --head ridge` and the ridge baselines;
- the tail of a command: `run_json_command` (user errors -> one line, exit 2; else the JSON at ``--out``) and
  `run_regression_command` (its summary line for the Spearman tasks);
- `InputError`: sequences or a checkpoint that cannot be evaluated as asked (a user error).

Nothing heavy is imported at module level (torch, numpy, sklearn only inside functions), so a command builds its
parser and answers ``--help`` at once.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from helm.args import command_errors

if TYPE_CHECKING:
    import torch

    from helm.downstream.datasets import DownstreamData
    from helm.downstream.harness import Split

HEADS = ("textcnn", "linear", "mlp")  # trained heads (helm.downstream.heads.build_head)
PROBE_HEADS = (*HEADS, "ridge")  # ridge: closed-form, on mean-pooled embeddings (a fast linear probe)
DEFAULT_ALPHAS = [0.01, 0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0]


class InputError(ValueError):
    """Sequences or a checkpoint that cannot be evaluated as asked."""


# ------------------------------------------------------------------------------------------------- flags
def add_data_args(parser: argparse.ArgumentParser, out_help: str = "output JSON file") -> None:
    """The dataset and output flags of `helm embed`, `helm probe` and `helm baseline`."""
    parser.add_argument("--dataset", required=True, help="registry name (config/datasets.yaml)")
    parser.add_argument("--out", "--output", dest="out", required=True, help=out_help)
    parser.add_argument("--registry", default=None, help="dataset registry YAML (unset: config/datasets.yaml)")
    parser.add_argument("--mirror", default=None, help="local data mirror searched before the URL")
    parser.add_argument(
        "--data-file",
        "--data",
        dest="data_file",
        default=None,
        help="read the dataset from this file instead (no sha256 check)",
    )
    parser.add_argument(
        "--max-rows",
        type=int,
        default=None,
        help="a fixed random subset of the dataset's rows, the same for every seed (large sets)",
    )
    parser.add_argument(
        "--overlong",
        choices=("truncate", "error"),
        default="truncate",
        help="sequences longer than the model's max_seq_len: cut (counted) or refuse",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (unset: torch's default)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def add_reference_args(parser: argparse.ArgumentParser) -> None:
    """The held-out sequences of `helm generate` and `helm cluster`."""
    parser.add_argument(
        "--reference",
        "--data",
        dest="reference",
        required=True,
        help="held-out sequences: a prepared directory (its test split) or a sequence file",
    )


def add_fit_args(parser: argparse.ArgumentParser, head_default: str = "textcnn") -> None:
    """Flags shared by `helm probe` and `helm baseline`: `add_data_args`, the seed, the head and its grid."""
    add_data_args(parser)
    parser.add_argument("--seed", type=int, default=0, help="downstream seed (also re-draws random splits)")
    parser.add_argument(
        "--head",
        choices=PROBE_HEADS,
        default=head_default,
        help="textcnn (the paper's), linear/mlp on pooled embeddings, ridge (closed form, pooled)",
    )
    parser.add_argument("--epochs", type=int, default=100, help="most epochs per grid point")
    parser.add_argument("--patience", type=int, default=15, help="early-stopping patience (epochs)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 32], help="head batch sizes tried")
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 1e-4], help="head learning rates")
    parser.add_argument("--max-train", type=int, default=None, help="subsample the training split (smoke runs)")
    parser.add_argument(
        "--alphas",
        type=float,
        nargs="+",
        default=DEFAULT_ALPHAS,
        help="ridge penalties tried (chosen on validation Spearman)",
    )


def set_threads(threads: int | None) -> None:
    """``--threads``: torch's CPU threads (unset: torch's default)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


# -------------------------------------------------------------------------------------------------- data
def load_data(args: argparse.Namespace, check: Callable[[DownstreamData], None] | None = None) -> DownstreamData:
    """The dataset as the flags ask: the seed's split, --max-rows, then --max-train. ``check(data)`` sees the
    rows before --max-train (what a features file must match)."""
    from helm.downstream.datasets import load_dataset, subsample

    # the downstream seed also re-draws random/similarity splits (config/datasets.yaml)
    data = load_dataset(args.dataset, registry=args.registry, mirror=args.mirror, path=args.data_file, seed=args.seed,
                        max_rows=args.max_rows)  # fmt: skip
    if check is not None:
        check(data)
    return subsample(data, args.max_train, args.seed)


def splits_of(data: DownstreamData, x: torch.Tensor, mask: torch.Tensor, by_rows: bool = False) -> dict[str, Split]:
    """train/val/test parts. ``x``/``mask`` hold one row per kept sequence of ``data``, or, with ``by_rows``, one
    per row of the dataset as loaded (a features file, indexed through ``data.rows``)."""
    import torch

    from helm.downstream.harness import Split

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


# ----------------------------------------------------------------------------------------------- the tail
def run_json_command(
    prog: str,
    compute: Callable[[argparse.Namespace], dict[str, Any]],
    args: argparse.Namespace,
    summary: Callable[[dict[str, Any]], str],
) -> int:
    """Shared tail of the downstream commands: the JSON at --out and a summary line; a user error (bad input, a
    missing file: helm.args.command_errors) ends the command with one line, exit 2, and no JSON."""
    from helm.run import write_json

    with command_errors(prog):
        payload = compute(args)
        write_json(args.out, payload)
    print(f"{summary(payload)} -> {args.out}")
    return 0


def run_regression_command(prog: str, compute: Callable[[argparse.Namespace], dict[str, Any]],
                           args: argparse.Namespace) -> int:  # fmt: skip
    """`helm probe` / `helm baseline`: test (and validation) Spearman of the selected configuration."""

    def summary(payload: dict[str, Any]) -> str:
        m = payload["metrics"]
        return (
            f"{payload['run']} {payload['task']} seed={args.seed}: test spearman={m['spearman']:.4f} "
            f"(val {m['val_spearman']:.4f})"
        )

    return run_json_command(prog, compute, args, summary)
