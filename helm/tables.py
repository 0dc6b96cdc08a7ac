"""`helm tables`: gather pretrain runs and downstream JSONs into results/tables.csv, pivot tables and plots.

    helm tables --results results --runs results/pretrain/*/metrics.json --evals results/downstream/*/*/*.json \
        --out results/tables.csv [--summary S.csv] [--helm-vs-xe H.csv] [--pretrain-table P.csv] \
        [--loss-curves L.svg] [--task-bars T.svg]

Inputs (the layout the Snakemake workflow writes, see docs/ARCHITECTURE.md "Workflow"):
- a run directory `<results>/pretrain/<run>/` with `metrics.json`, `grid.json` (the run's grid coordinates:
  grid block, arch, mode, size, preset, loss id, loss, alpha, beta, hierarchy, tokenizer), `config.yaml` and
  `tb/` (TensorBoard); `--runs` takes the run directories or any file inside them;
- evaluation JSONs `{"run", "task", "seed", "metrics": {...}, "config": {...}}`; under
  `<results>/downstream/<task>/<run>/seed<N>.json` the task and run names are taken from the path;
- Snakemake benchmark TSVs `<results>/benchmarks/pretrain/<run>.tsv` and
  `<results>/benchmarks/downstream/<task>/<run>/seed<N>.tsv` (wall seconds `s`, peak memory `max_rss` in MB).

`tables.csv` has one row per (run, task, seed, metric): the downstream metrics plus the pretraining metrics
of every run (task `pretrain`), every grid coordinate as its own column and the benchmark columns. The plots
are plain SVG (no plotting library needed), for `snakemake --report`.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

COORDS = ("grid", "arch", "mode", "size", "preset", "loss_id", "loss", "hxe_alpha", "soft_labels_beta", "hierarchy",
          "tokenizer")  # fmt: skip
KEYS = ("run", "task", "seed", "metric")
BENCH = ("pretrain_s", "pretrain_max_rss_mb", "eval_s", "eval_max_rss_mb")
COLUMNS = (*KEYS, "value", *COORDS, *BENCH)
# the headline metric of a task, best first (the first one a task reports is used for the bars)
HEADLINE = ("spearman", "test_spearman", "accuracy", "f1", "silhouette", "frechet_distance", "fd", "validity")


def flatten(metrics: Any, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a (nested) metrics mapping as {"a.b": value}; strings, lists and None are skipped."""
    out: dict[str, float] = {}
    if isinstance(metrics, dict):
        for key, value in metrics.items():
            out.update(flatten(value, f"{prefix}{key}."))
    elif isinstance(metrics, bool):
        out[prefix[:-1]] = float(metrics)
    elif isinstance(metrics, (int, float)) and prefix:
        out[prefix[:-1]] = float(metrics)
    return out


def read_benchmark(path: Path) -> tuple[float | None, float | None]:
    """(wall seconds, max RSS in MB) of a Snakemake benchmark TSV; the last repeat wins; (None, None) if absent."""
    if not path.is_file():
        return None, None
    table = pd.read_csv(path, sep="\t")
    if table.empty:
        return None, None
    row = table.iloc[-1]

    def num(col: str) -> float | None:
        value = pd.to_numeric(row.get(col), errors="coerce")
        return None if value is None or pd.isna(value) else float(value)

    return num("s"), num("max_rss")


def run_dir_of(path: str | Path) -> Path:
    """A run directory from itself or a file inside it (metrics.json, grid.json)."""
    path = Path(path)
    return path if path.is_dir() else path.parent


def read_run(run_dir: Path) -> dict[str, Any]:
    """Grid coordinates, training seed and flattened metrics.json of one pretrain run directory."""
    coords: dict[str, Any] = {}
    if (run_dir / "grid.json").is_file():
        coords = json.loads((run_dir / "grid.json").read_text())
    seed = None
    if (run_dir / "config.yaml").is_file():
        seed = (yaml.safe_load((run_dir / "config.yaml").read_text()) or {}).get("seed")
    metrics = {}
    if (run_dir / "metrics.json").is_file():
        metrics = flatten(json.loads((run_dir / "metrics.json").read_text()))
    return {"run": coords.get("run", run_dir.name), "coords": coords, "seed": seed, "metrics": metrics}


def _relative(path: Path, root: Path) -> Path | None:
    try:
        return path.resolve().relative_to(root.resolve())
    except ValueError:
        return None


def gather(results: str | Path, runs: Iterable[str | Path], evals: Iterable[str | Path]) -> pd.DataFrame:
    """The long table: one row per (run, task, seed, metric) with coordinates and benchmark columns."""
    results = Path(results)
    rows: list[dict[str, Any]] = []
    coords_of: dict[str, dict[str, Any]] = {}
    bench_of: dict[str, tuple[float | None, float | None]] = {}
    for path in runs:
        info = read_run(run_dir_of(path))
        run = info["run"]
        coords_of[run] = info["coords"]
        bench_of[run] = read_benchmark(results / "benchmarks" / "pretrain" / f"{run}.tsv")
        for metric, value in info["metrics"].items():
            rows.append({"run": run, "task": "pretrain", "seed": info["seed"], "metric": metric, "value": value})
    for path in evals:
        path = Path(path)
        record = json.loads(path.read_text())
        rel = _relative(path, results / "downstream")
        if rel is not None and len(rel.parts) == 3:
            task, run = rel.parts[0], rel.parts[1]
            bench = read_benchmark(results / "benchmarks" / "downstream" / rel.with_suffix(".tsv"))
        else:
            task, run = str(record.get("task")), Path(str(record.get("run"))).name
            bench = (None, None)
        for metric, value in flatten(record.get("metrics", {})).items():
            rows.append({"run": run, "task": task, "seed": record.get("seed"), "metric": metric, "value": value,
                         "eval_s": bench[0], "eval_max_rss_mb": bench[1]})  # fmt: skip
    table = pd.DataFrame(rows, columns=list(KEYS) + ["value", "eval_s", "eval_max_rss_mb"])
    for col in COORDS:
        table[col] = [coords_of.get(run, {}).get(col) for run in table["run"]]
    table["pretrain_s"] = [bench_of.get(run, (None, None))[0] for run in table["run"]]
    table["pretrain_max_rss_mb"] = [bench_of.get(run, (None, None))[1] for run in table["run"]]
    table["seed"] = pd.array(table["seed"], dtype="Int64")
    return table[list(COLUMNS)].sort_values(["run", "task", "seed", "metric"], kind="stable").reset_index(drop=True)


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Paper-style pivot: one row per run, columns `<task>/<metric>` (mean over seeds), `... sd`, `... n`."""
    evals = table[table["task"] != "pretrain"]
    if evals.empty:
        return pd.DataFrame(columns=["run"])
    stats = evals.groupby(["run", "task", "metric"])["value"].agg(["mean", "std", "count"]).reset_index()
    stats["column"] = stats["task"] + "/" + stats["metric"]
    wide = stats.pivot(index="run", columns="column", values="mean")
    sd = stats.pivot(index="run", columns="column", values="std").add_suffix(" sd")
    n = stats.pivot(index="run", columns="column", values="count").add_suffix(" n")
    wide = pd.concat([wide, sd, n], axis=1)
    wide = wide[sorted(wide.columns)]
    coords = table.drop_duplicates("run").set_index("run")[list(COORDS)]
    return coords.join(wide, how="right").reset_index()


def helm_vs_xe(table: pd.DataFrame) -> pd.DataFrame:
    """Each non-XE loss next to the XE run of the same arch/mode/size/tokenizer: mean per task and metric."""
    cols = ["arch", "mode", "size", "tokenizer", "task", "metric"]
    evals = table[(table["task"] != "pretrain") & table["loss"].notna()]
    out_cols = [*cols, "loss_id", "value", "xe_value", "delta", "n_seeds"]
    if evals.empty:
        return pd.DataFrame(columns=out_cols)
    means = evals.groupby([*cols, "loss_id", "loss", "hierarchy"], dropna=False)["value"].agg(["mean", "count"])
    means = means.reset_index()
    is_xe = (means["loss"] == "XE") & (means["hierarchy"].fillna("true") == "true")
    xe = means[is_xe][[*cols, "mean"]].rename(columns={"mean": "xe_value"})
    other = means[~is_xe].merge(xe, on=cols, how="inner")
    other = other.rename(columns={"mean": "value", "count": "n_seeds"})
    other["delta"] = other["value"] - other["xe_value"]
    return other[out_cols].sort_values(cols + ["loss_id"]).reset_index(drop=True)


def pretrain_table(table: pd.DataFrame) -> pd.DataFrame:
    """One row per pretrain run: coordinates, pretraining metrics and the job's benchmark."""
    pre = table[table["task"] == "pretrain"]
    if pre.empty:
        return pd.DataFrame(columns=["run", *COORDS, "pretrain_s", "pretrain_max_rss_mb"])
    wide = pre.pivot_table(index="run", columns="metric", values="value", aggfunc="first")
    info = pre.drop_duplicates("run").set_index("run")[[*COORDS, "pretrain_s", "pretrain_max_rss_mb"]]
    return info.join(wide).reset_index()


# ------------------------------------------------------------------------------------------- SVG plots
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")  # fmt: skip


def _svg(width: int, height: int, body: list[str]) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'font-family="sans-serif" font-size="11">\n<rect width="100%" height="100%" fill="white"/>\n'
            + "\n".join(body) + "\n</svg>\n")  # fmt: skip


def _text(x: float, y: float, s: str, anchor: str = "start", **kw: Any) -> str:
    extra = " ".join(f'{k.replace("_", "-")}="{v}"' for k, v in kw.items())
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" {extra}>{html.escape(str(s))}</text>'


def read_scalars(tb_dir: Path, tags: Sequence[str] = ("train_loss", "val_loss")) -> dict[str, list[tuple[int, float]]]:
    """(step, value) series of the given TensorBoard scalar tags under a run's tb/ directory."""
    series: dict[str, list[tuple[int, float]]] = {}
    if not tb_dir.is_dir():
        return series
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for events in sorted(tb_dir.rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            if tag in tags:
                series.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return {tag: sorted(dict(points).items()) for tag, points in series.items()}


def loss_curves_svg(curves: dict[str, dict[str, list[tuple[int, float]]]]) -> str:
    """Line chart: validation loss (solid) and training loss (faded) per run against steps."""
    width, height, left, right, top, bottom = 900, 420, 60, 260, 20, 40
    points = [(s, v) for run in curves.values() for ser in run.values() for s, v in ser if math.isfinite(v)]
    body: list[str] = []
    if not points:
        body.append(_text(width / 2, height / 2, "no TensorBoard loss curves found", "middle"))
        return _svg(width, height, body)
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    # losses of different kinds (XE ~ 4, normalized HXE ~ 0.03) share the axis: log scale when all are positive
    log = all(p[1] > 0 for p in points)
    scale = math.log10 if log else (lambda v: v)
    y0, y1 = min(scale(p[1]) for p in points), max(scale(p[1]) for p in points)

    def xy(step: float, value: float) -> str:
        x = left + (step - x0) / (x1 - x0) * (width - left - right)
        y = top + (1 - (scale(value) - y0) / (y1 - y0)) * (height - top - bottom)
        return f"{x:.1f},{y:.1f}"

    body.append(f'<rect x="{left}" y="{top}" width="{width - left - right}" height="{height - top - bottom}" '
                f'fill="none" stroke="#444"/>')  # fmt: skip
    for frac in (0, 0.5, 1):
        tick = y0 + frac * (y1 - y0)
        label = f"{10**tick if log else tick:.3g}"
        body.append(_text(left - 4, top + (1 - frac) * (height - top - bottom) + 4, label, "end"))
        body.append(_text(left + frac * (width - left - right), height - bottom + 14, f"{x0 + frac * (x1 - x0):.0f}",
                          "middle"))  # fmt: skip
    body.append(_text(left + (width - left - right) / 2, height - 6, "optimizer step", "middle"))
    body.append(_text(12, top + (height - top - bottom) / 2, "loss (log scale)" if log else "loss", "middle",
                      transform=f"rotate(-90 12 {top + (height - top - bottom) / 2:.0f})"))  # fmt: skip
    for i, (run, series) in enumerate(sorted(curves.items())):
        color = PALETTE[i % len(PALETTE)]
        for tag, opacity in (("train_loss", 0.35), ("val_loss", 1.0)):
            ser = [(s, v) for s, v in series.get(tag, []) if math.isfinite(v)]
            if ser:
                pts = " ".join(xy(s, v) for s, v in ser)
                body.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-opacity="{opacity}" '
                            f'stroke-width="1.5"/>')  # fmt: skip
        ly = top + 14 * i + 8
        body.append(f'<line x1="{width - right + 10}" y1="{ly - 4}" x2="{width - right + 30}" y2="{ly - 4}" '
                    f'stroke="{color}" stroke-width="2"/>')  # fmt: skip
        body.append(_text(width - right + 34, ly, run))
    return _svg(width, max(height, top + 14 * len(curves) + 20), body)


def headline_metric(metrics: Iterable[str]) -> str | None:
    names = list(metrics)
    for name in HEADLINE:
        if name in names:
            return name
    return sorted(names)[0] if names else None


def task_bars_svg(table: pd.DataFrame) -> str:
    """One panel per task: the headline metric (mean over seeds) per run, XE runs grey, the others coloured."""
    evals = table[table["task"] != "pretrain"]
    tasks = sorted(evals["task"].unique())
    bar_h, gap, label_w, plot_w = 14, 28, 260, 420
    body: list[str] = []
    y = 20
    for task in tasks:
        sub = evals[evals["task"] == task]
        metric = headline_metric(sub["metric"].unique())
        sub = sub[sub["metric"] == metric]
        means = sub.groupby("run")["value"].mean().sort_index()
        loss_of = sub.drop_duplicates("run").set_index("run")["loss"]
        body.append(_text(10, y, f"{task}: {metric} (mean over seeds)", font_weight="bold"))
        y += 8
        finite = [v for v in means if math.isfinite(v)]
        lo, hi = min(0.0, *finite) if finite else 0.0, max(0.0, *finite) if finite else 1.0
        span = (hi - lo) or 1.0
        zero = label_w + (0 - lo) / span * plot_w
        for run, value in means.items():
            color = "#999999" if loss_of.get(run) == "XE" else ("#1f77b4" if pd.notna(loss_of.get(run)) else "#2ca02c")
            body.append(_text(label_w - 6, y + bar_h - 3, run, "end"))
            if math.isfinite(value):
                x = label_w + (min(value, 0) - lo) / span * plot_w
                w = abs(value) / span * plot_w
                body.append(
                    f'<rect x="{x:.1f}" y="{y}" width="{max(w, 0.5):.1f}" height="{bar_h - 2}" fill="{color}"/>'
                )
                body.append(_text(label_w + plot_w + 6, y + bar_h - 3, f"{value:.3f}"))
            y += bar_h
        body.append(f'<line x1="{zero:.1f}" y1="{y - bar_h * len(means)}" x2="{zero:.1f}" y2="{y}" stroke="#444"/>')
        y += gap
    if not tasks:
        body.append(_text(20, 30, "no downstream results"))
        y = 60
    body.append(_text(10, y, "grey: XE, blue: hierarchy-aware losses, green: baselines"))
    return _svg(label_w + plot_w + 80, y + 20, body)


# ------------------------------------------------------------------------------------------------ CLI
def _write_csv(frame: pd.DataFrame, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)


def _write_text(text: str, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="helm tables", description=__doc__.splitlines()[0])
    p.add_argument("--results", default="results", help="results root (benchmarks/ and downstream/ below it)")
    p.add_argument("--runs", nargs="*", default=[], help="pretrain run directories (or a file inside each)")
    p.add_argument("--evals", nargs="*", default=[], help="downstream evaluation JSONs")
    p.add_argument("--out", required=True, help="the long table (tables.csv)")
    p.add_argument("--summary", default=None, help="pivot: run x task/metric, mean over seeds")
    p.add_argument("--helm-vs-xe", default=None, help="each loss next to the matching XE run")
    p.add_argument("--pretrain-table", default=None, help="one row per pretrain run")
    p.add_argument("--loss-curves", default=None, help="SVG of the runs' TensorBoard loss curves")
    p.add_argument("--task-bars", default=None, help="SVG of per-task bars")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    table = gather(args.results, args.runs, args.evals)
    _write_csv(table, args.out)
    if args.summary:
        _write_csv(summary(table), args.summary)
    if args.helm_vs_xe:
        _write_csv(helm_vs_xe(table), args.helm_vs_xe)
    if args.pretrain_table:
        _write_csv(pretrain_table(table), args.pretrain_table)
    if args.loss_curves:
        curves = {read_run(run_dir_of(p))["run"]: read_scalars(run_dir_of(p) / "tb") for p in args.runs}
        _write_text(loss_curves_svg(curves), args.loss_curves)
    if args.task_bars:
        _write_text(task_bars_svg(table), args.task_bars)
    n_runs, n_evals = table["run"].nunique(), len(args.evals)
    print(f"helm tables: {len(table)} rows ({n_runs} runs, {n_evals} evaluations) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
