"""`helm tables`: gather pretrain runs and evaluation JSONs into results/tables.csv, summary tables and figures.

    helm tables --results results --runs results/pretrain/*/metrics.json --evals results/downstream/*/*/*.json \
        --out results/tables.csv [--tables-dir results/tables] [--plots-dir results/plots] \
        [--published config/published.yaml] [--replicates 2000]
    helm tables --results results --artifact docs/results/study --workflow-config JSON

`tables.csv` (long: one row per run, task, seed, metric, with every grid coordinate as a column) holds everything,
raw training losses included (helm/report/gather.py); the tables (helm/report/tables.py) and figures
(helm/report/figures.py) compare runs on loss-independent numbers only; `--artifact` copies them with the run's
context (helm/report/artifact.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from helm.args import HelmParser, command_errors
from helm.files import atomic_write
from helm.report.artifact import collect_artifact
from helm.report.figures import (
    FIGURES,
    delta_figure,
    intrinsic_figure,
    learning_curves_figure,
    read_published,
    task_scores_figure,
)
from helm.report.gather import gather, read_predictions, read_run, read_scalars, run_dir_of, run_ids
from helm.report.tables import (
    PAPER_EFFECT,
    POWER_NOTE,
    TABLES,
    delta_vs_xe,
    intrinsic,
    markdown,
    power_table,
    pretrain_table,
    summary,
    truncation,
    win_counts,
    write_table,
)
from helm.run import TB_DIR

if TYPE_CHECKING:
    import pandas as pd


def write_outputs(args: argparse.Namespace) -> pd.DataFrame:
    """tables.csv, then the tables (--tables-dir) and figures (--plots-dir) made from it."""
    table = gather(args.results, args.runs, args.evals)
    atomic_write(args.out, table.to_csv(index=False))
    delta = None
    if args.tables_dir:
        delta = write_tables(table, args)
    if args.plots_dir:
        if delta is None:
            delta = delta_vs_xe(table, read_predictions(args.results, args.evals, args.runs), args.replicates)
        write_figures(table, delta, args)
    return table


def write_tables(table: pd.DataFrame, args: argparse.Namespace) -> pd.DataFrame:
    """Every table of `TABLES` (CSV + Markdown) into --tables-dir; returns delta_vs_xe for the figures."""
    predictions = read_predictions(args.results, args.evals, args.runs)
    delta = delta_vs_xe(table, predictions, replicates=args.replicates)
    counts, power = win_counts(delta), power_table(table)
    frames = {
        "summary": summary(table),
        "delta_vs_xe": delta,
        "win_counts": counts,
        "power": power,
        "intrinsic": intrinsic(table),
        "pretrain": pretrain_table(table),
        "truncation": truncation(table),
    }
    notes = {"delta_vs_xe": markdown(counts), "power": POWER_NOTE}
    for name, title in TABLES.items():
        write_table(frames[name], Path(args.tables_dir) / name, title, notes.get(name, ""))
    if len(power):
        print(f"helm tables: pretraining seeds per loss for 80 % power (paired t, effect "
              f"{PAPER_EFFECT:.0%} of XE):\n{markdown(power)}")  # fmt: skip
    return delta


def write_figures(table: pd.DataFrame, delta: pd.DataFrame, args: argparse.Namespace) -> None:
    """Every figure of `FIGURES` (PNG + SVG) into --plots-dir; the learning curves from the runs' TensorBoard."""
    pdir = Path(args.plots_dir)
    dirs = [run_dir_of(p) for p in args.runs]
    ids = run_ids(dirs)
    info = {read_run(d, ids[str(d.resolve())])["run"]: d for d in dirs}
    curves = {run: read_scalars(path / TB_DIR) for run, path in info.items()}
    loss_of = {run: read_run(path, run)["coords"].get("loss_id") for run, path in info.items()}
    drawn = {
        "learning_curves": lambda stem: learning_curves_figure(curves, loss_of, stem),
        "task_scores": lambda stem: task_scores_figure(table, read_published(args.published), stem),
        "delta_to_xe": lambda stem: delta_figure(delta, stem),
        "intrinsic": lambda stem: intrinsic_figure(table, stem),
    }
    for name in FIGURES:
        drawn[name](pdir / name)


def build_parser() -> argparse.ArgumentParser:
    p = HelmParser("helm tables", __doc__.splitlines()[0])
    p.add_argument("--results", default="results", help="results root (benchmarks/ and downstream/ below it)")
    p.add_argument("--runs", nargs="*", default=[], help="pretrain run directories (or a file inside each)")
    p.add_argument("--evals", nargs="*", default=[], help="downstream evaluation JSONs")
    p.add_argument("--out", "--output", dest="out", default=None, help="the long table (tables.csv)")
    p.add_argument("--tables-dir", default=None, help="summary, delta_vs_xe, intrinsic, pretrain, truncation tables")
    p.add_argument("--plots-dir", default=None, help="figures (PNG + SVG)")
    p.add_argument("--published", default=None, help="published values to mark on the task plots (YAML)")
    p.add_argument("--replicates", type=int, default=2000, help="bootstrap replicates for the intervals")
    p.add_argument("--artifact", default=None, help="copy the outputs under --results into this folder, with the "
                   "run's context (versions, machine, wall time per stage); needs no --out")  # fmt: skip
    p.add_argument("--workflow-config", default=None, help="the resolved workflow config (JSON) for --artifact")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.artifact and not args.out:
        parser.error("--out is required (or --artifact)")
    with command_errors("helm tables"):
        if args.artifact:
            try:
                config = json.loads(args.workflow_config) if args.workflow_config else None
            except json.JSONDecodeError as e:
                raise ValueError(f"--workflow-config: not JSON ({e})") from None
            out = collect_artifact(args.results, args.artifact, config)
            print(f"helm tables: artifact -> {out}")
            return 0
        table = write_outputs(args)
    n_runs, n_evals = table["run"].nunique(), len(args.evals)
    print(f"helm tables: {len(table)} rows ({n_runs} runs, {n_evals} evaluations) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
