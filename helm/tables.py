"""`helm tables`: gather pretrain runs and evaluation JSONs into results/tables.csv, summary tables and figures.

    helm tables --results results --runs results/pretrain/*/metrics.json --evals results/downstream/*/*/*.json \
        --out results/tables.csv [--tables-dir results/tables] [--plots-dir results/plots] \
        [--published config/published.yaml] [--replicates 2000]

Inputs (the layout the Snakemake workflow writes, see docs/ARCHITECTURE.md "Workflow"):
- a run directory `<results>/pretrain/<run>/` with `metrics.json`, `grid.json` (the run's grid coordinates),
  `config.yaml` and `tb/` (TensorBoard); `--runs` takes the run directories or any file inside them;
- evaluation JSONs `{"run", "task", "seed", "metrics": {...}, "config": {...}[, "predictions": {...}]}`; under
  `<results>/downstream/<task>/<run>/seed<N>.json` the task id and run are taken from the path;
- Snakemake benchmark TSVs `<results>/benchmarks/...` (wall seconds `s`, peak memory `max_rss` in MB).

Outputs. `tables.csv` (long: one row per run, task, seed, metric, with every grid coordinate as a column) holds
everything, raw training losses included. Every comparison (summary, difference to XE, figures) uses only
loss-independent numbers -- codon perplexity and accuracy, amino-acid accuracy and mistake severity on the true
tree, downstream scores -- because loss values of XE, HXE, soft labels and the aa losses are on different scales
(docs/PROTOCOL.md "Comparable metrics"). Tables: `summary` (one row per run, one column per task's headline
metric as mean ± sd over downstream seeds), `delta_vs_xe` (each loss minus XE with a 95 % interval over
pretraining seeds from helm.stats, and the count of tasks it wins), `power` (pretraining seeds an effect of the
paper's size needs), `intrinsic`, `pretrain` (per-run details), `truncation` (sequences cut per run and task); CSV
and Markdown. Figures (matplotlib, PNG + SVG): `learning_curves`, `task_scores`,
`delta_to_xe`, `intrinsic`.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from helm.args import HelmParser, command_errors
from helm.files import atomic_write
from helm.run import CONFIG_FILE, METRICS_FILE, TB_DIR

if TYPE_CHECKING:  # numpy / pandas load when tables are made (`helm tables --help` is instant)
    import pandas as pd

COORDS = ("grid", "arch", "mode", "size", "preset", "loss_id", "loss", "hxe_alpha", "soft_labels_beta", "hierarchy",
          "tokenizer", "pretrain_seed", "model")  # fmt: skip
KEYS = ("run", "task", "seed", "metric")
BENCH = ("pretrain_s", "pretrain_max_rss_mb", "eval_s", "eval_max_rss_mb")
COLUMNS = (*KEYS, "value", "dataset", "head", *COORDS, *BENCH)
# the headline metric of a task, best first; generation metrics carry their embedding space ("...@space")
HEADLINE = ("spearman", "accuracy", "silhouette_cosine", "silhouette_euclidean", "frechet_distance")
# loss-independent pretraining metrics (test split), in the order tables and figures show them
INTRINSIC = {
    "test_ppl": "codon perplexity",
    "test_acc": "codon accuracy",
    "test_aa_acc": "amino-acid accuracy",
    "test_mistake_severity": "mistake severity (true tree)",
}
LOWER_IS_BETTER = ("ppl", "mistake_severity", "frechet_distance")
SEED_SUFFIX = re.compile(r"-s\d+$")


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
    import pandas as pd

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
    """A run directory from itself or a file inside it (metrics.json, grid.json); a path that holds no run is an
    error naming it (a table silently missing a run would be wrong, not short)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"--runs {path}: not found")
    run_dir = path if path.is_dir() else path.parent
    if not any((run_dir / name).is_file() for name in (CONFIG_FILE, METRICS_FILE, "grid.json")):
        raise FileNotFoundError(f"--runs {path}: not a run directory (no {CONFIG_FILE}, {METRICS_FILE} or grid.json)")
    return run_dir


def read_run(run_dir: Path, run_id: str | None = None) -> dict[str, Any]:
    """Grid coordinates, training seed and flattened metrics.json of one pretrain run directory. A workflow run
    names itself in grid.json; any other run gets its coordinates from its resolved config.yaml and is called
    ``run_id`` (see ``run_ids``), never only by its folder's name."""
    config = {}
    if (run_dir / CONFIG_FILE).is_file():
        config = yaml.safe_load((run_dir / CONFIG_FILE).read_text()) or {}
    seed = config.get("seed")
    if (run_dir / "grid.json").is_file():
        coords = json.loads((run_dir / "grid.json").read_text())
    else:
        coords = {**coords_from_config(config), "run": run_id or run_dir.name}
    metrics = {}
    if (run_dir / METRICS_FILE).is_file():
        metrics = flatten(json.loads((run_dir / METRICS_FILE).read_text()))
    run = coords.get("run", run_id or run_dir.name)
    coords = {**coords, "pretrain_seed": coords.get("pretrain_seed", seed), "model": model_of(run, coords)}
    return {"run": run, "coords": coords, "seed": seed, "metrics": metrics}


def coords_from_config(config: dict[str, Any]) -> dict[str, Any]:
    """Grid coordinates of a run made outside the workflow, read off its resolved config.yaml (``helm train``)."""
    if not config:
        return {}
    loss, hierarchy = config.get("loss"), config.get("hierarchy", "true")
    alpha, beta = config.get("hxe_alpha"), config.get("soft_labels_beta")
    loss_id = {"XE": "xe", "HXE": f"hxe{alpha:g}" if alpha is not None else "hxe", "aa_loss_add": "aaadd",
               "aa_loss_only": "aaonly",
               "soft_labels": f"soft{beta:g}" if beta is not None else "soft"}.get(loss)  # fmt: skip
    if loss_id and hierarchy != "true" and loss not in ("XE", "aa_loss_add", "aa_loss_only"):
        loss_id += "rand"
    model = (config.get("derived") or {}).get("model") or {}
    preset = config.get("preset")
    size = preset.split("-", 1)[1] if preset and "-" in preset else None
    if size is None and model:
        size = f"{model.get('num_layers')}x{model.get('hidden_size')}"
    mode = "mlm" if config.get("mode") == "mlm" else "clm"
    return {"grid": None, "arch": config.get("model_name"), "mode": mode, "size": size, "preset": preset,
            "loss_id": loss_id, "loss": loss, "hxe_alpha": alpha if loss == "HXE" else None,
            "soft_labels_beta": beta if loss == "soft_labels" else None, "hierarchy": hierarchy,
            "tokenizer": (config.get("derived") or {}).get("tokenizer") or config.get("tokenizer")}  # fmt: skip


def run_ids(run_dirs: Sequence[Path]) -> dict[str, str]:
    """Resolved run directory -> run id: the folder name where names are unique; else the path below the
    folders' common parent (the seed's `--output OUT/gpt2/mlm` and `OUT/mamba/mlm` -> gpt2/mlm, mamba/mlm)."""
    import os

    resolved = [Path(d).resolve() for d in run_dirs]
    names = [d.name for d in resolved]
    if len(set(names)) == len(names) or len(resolved) < 2:
        return {str(d): d.name for d in resolved}
    root = Path(os.path.commonpath(resolved))
    return {str(d): d.relative_to(root).as_posix() for d in resolved}


def model_of(run: str, coords: dict[str, Any] | None = None) -> str:
    """The run without its pretraining seed: the unit that seeds are aggregated over."""
    if coords and coords.get("model"):
        return str(coords["model"])
    return SEED_SUFFIX.sub("", run)


def _relative(path: Path, root: Path) -> Path | None:
    try:
        return path.resolve().relative_to(root.resolve())
    except ValueError:
        return None


def _eval_identity(
    path: Path, record: dict[str, Any], results: Path, ids: dict[str, str] | None = None
) -> tuple[str, str, Path | None]:
    """(task id, run, benchmark file) of an evaluation JSON: from the workflow's path, else from the record (its
    run directory, when that is one of the runs, gives the run id ``run_ids`` chose)."""
    rel = _relative(path, results / "downstream")
    if rel is not None and len(rel.parts) == 3:
        return rel.parts[0], rel.parts[1], results / "benchmarks" / "downstream" / rel.with_suffix(".tsv")
    run_dir = (record.get("config") or {}).get("run_dir")
    if run_dir and ids and str(Path(run_dir).resolve()) in ids:
        return str(record.get("task")), ids[str(Path(run_dir).resolve())], None
    return str(record.get("task")), Path(str(record.get("run"))).name, None


def head_of(record: dict[str, Any]) -> str | None:
    """What produced the scores: the probe head (textcnn, ridge ...) or the baseline's kind."""
    config = record.get("config") or {}
    return config.get("baseline") or config.get("head")


def gather(results: str | Path, runs: Iterable[str | Path], evals: Iterable[str | Path]) -> pd.DataFrame:
    """The long table: one row per (run, task, seed, metric) with coordinates and benchmark columns."""
    import pandas as pd

    results = Path(results)
    rows: list[dict[str, Any]] = []
    coords_of: dict[str, dict[str, Any]] = {}
    bench_of: dict[str, tuple[float | None, float | None]] = {}
    runs = [run_dir_of(p) for p in runs]
    ids = run_ids(runs)
    for path in runs:
        info = read_run(path, ids[str(path.resolve())])
        run = info["run"]
        coords_of[run] = info["coords"]
        bench_of[run] = read_benchmark(results / "benchmarks" / "pretrain" / f"{run}.tsv")
        for metric, value in info["metrics"].items():
            rows.append({"run": run, "task": "pretrain", "seed": info["seed"], "metric": metric, "value": value})
    for path in evals:
        path = Path(path)
        record = json.loads(path.read_text())
        task, run, bench_file = _eval_identity(path, record, results, ids)
        bench = read_benchmark(bench_file) if bench_file else (None, None)
        if (record.get("config") or {}).get("hf"):  # a foreign checkpoint (--hf): no grid coordinates, no loss
            coords_of.setdefault(run, {"arch": "external", "model": run})
        for metric, value in flatten(record.get("metrics", {})).items():
            rows.append({"run": run, "task": task, "seed": record.get("seed"), "metric": metric, "value": value,
                         "dataset": record.get("task"), "head": head_of(record), "eval_s": bench[0],
                         "eval_max_rss_mb": bench[1]})  # fmt: skip
    table = pd.DataFrame(rows, columns=[*KEYS, "value", "dataset", "head", "eval_s", "eval_max_rss_mb"])
    for col in COORDS:
        table[col] = [coords_of.get(run, {}).get(col) for run in table["run"]]
    table["model"] = [m if isinstance(m, str) else model_of(r) for r, m in zip(table["run"], table["model"])]
    table["pretrain_s"] = [bench_of.get(run, (None, None))[0] for run in table["run"]]
    table["pretrain_max_rss_mb"] = [bench_of.get(run, (None, None))[1] for run in table["run"]]
    table["seed"] = pd.array(table["seed"], dtype="Int64")
    return table[list(COLUMNS)].sort_values(["run", "task", "seed", "metric"], kind="stable").reset_index(drop=True)


def read_predictions(
    results: str | Path, evals: Iterable[str | Path], runs: Sequence[str | Path] = ()
) -> dict[tuple[str, str, int], dict]:
    """(task id, run, seed) -> {"index", "y", "pred"} (test rows) of the evaluations that saved predictions."""
    import numpy as np

    out = {}
    ids = run_ids([run_dir_of(p) for p in runs])
    for path in evals:
        path = Path(path)
        record = json.loads(path.read_text())
        pred = record.get("predictions") or {}
        if {"test_index", "test_y", "test_pred"} <= set(pred):
            task, run, _ = _eval_identity(path, record, Path(results), ids)
            out[(task, run, int(record["seed"]))] = {
                "index": np.asarray(pred["test_index"]),
                "y": np.asarray(pred["test_y"], np.float64),
                "pred": np.asarray(pred["test_pred"], np.float64),
            }
    return out


# ----------------------------------------------------------------------------------------------- tables
def headline_metric(metrics: Iterable[str]) -> str | None:
    """The metric a task is judged by (HEADLINE order); generation: the Fréchet distance of its space."""
    names = list(metrics)
    for name in HEADLINE:
        if name in names:
            return name
        spaced = sorted(n for n in names if n.startswith(name + "@"))
        if spaced:
            return spaced[0]
    return None


def headlines(table: pd.DataFrame) -> dict[str, str]:
    """task id -> its headline metric (tasks without one are left out)."""
    evals = table[table["task"] != "pretrain"]
    out = {}
    for task, sub in evals.groupby("task"):
        metric = headline_metric(sub["metric"].unique())
        if metric is not None:
            out[str(task)] = metric
    return out


def _task_order(table: pd.DataFrame) -> list[str]:
    return sorted(headlines(table))


def run_info(table: pd.DataFrame) -> pd.DataFrame:
    """One row per run: its coordinates (baselines: only the run name)."""
    info = table.drop_duplicates("run").set_index("run")[list(COORDS)]
    info = info.assign(_base=info["loss_id"] != "xe")  # XE, the reference, first
    info = info.sort_values(["_base", "model", "pretrain_seed"], na_position="last", kind="stable")
    return info.drop(columns="_base")


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """One row per run: each task's headline metric as 'mean ± sd' over downstream seeds, then the intrinsic
    metrics; numeric `<task> mean/sd/n` columns follow for machines."""
    import pandas as pd

    from helm import stats

    heads = headlines(table)
    info = run_info(table)
    out = pd.DataFrame(index=info.index)
    out["loss"] = info["loss_id"]
    out["pretrain seed"] = pd.array(info["pretrain_seed"], dtype="Int64")
    numeric = {}
    for task in sorted(heads):
        sub = table[(table["task"] == task) & (table["metric"] == heads[task])]
        cells = {}
        for run, vals in sub.groupby("run")["value"]:
            mean, sd, n = stats.mean_sd(vals.tolist())
            cells[run] = stats.format_mean_sd(mean, sd)
            numeric[(run, f"{task} mean")], numeric[(run, f"{task} sd")], numeric[(run, f"{task} n")] = mean, sd, n
        out[f"{task} ({heads[task]})"] = pd.Series(cells)
    pre = table[table["task"] == "pretrain"]
    for metric, label in INTRINSIC.items():
        vals = pre[pre["metric"] == metric].set_index("run")["value"]
        if len(vals):
            out[label] = vals.map(lambda v: f"{v:.3f}")
    for (run, col), value in numeric.items():
        out.loc[run, col] = value
    keep = [r for r in out.index if out.loc[r].drop(["loss", "pretrain seed"]).notna().any()]
    return out.loc[keep].reset_index().rename(columns={"index": "run"})


def intrinsic(table: pd.DataFrame) -> pd.DataFrame:
    """Per model (pretraining seeds pooled): mean ± sd of the intrinsic metrics and of synonymous clustering; then
    per loss, its difference to XE with the interval of helm.stats.loss_effect."""
    import pandas as pd

    from helm import stats

    pre = table[(table["task"] == "pretrain") & table["metric"].isin(list(INTRINSIC))]
    clustering = table[table["metric"] == "silhouette_cosine"]
    rows = []
    info = run_info(table)
    order = list(dict.fromkeys(info["model"]))  # XE first
    for model, sub in sorted(pre.groupby("model"), key=lambda item: order.index(item[0])):
        row = {"model": model, "loss": sub["loss_id"].iloc[0], "pretrain seeds": sub["run"].nunique()}
        for metric, label in INTRINSIC.items():
            mean, sd, _ = stats.mean_sd(sub[sub["metric"] == metric]["value"].tolist())
            row[label] = stats.format_mean_sd(mean, sd)
            row[f"{metric} mean"], row[f"{metric} sd"] = mean, sd
        sil = clustering[clustering["model"] == model]
        if len(sil):
            # one value per run: downstream seeds of clustering only resample proteins, pool them per run first
            per_run = sil.groupby("run")["value"].mean().tolist()
            mean, sd, _ = stats.mean_sd(per_run)
            row["synonymous clustering (silhouette)"] = stats.format_mean_sd(mean, sd)
            row["silhouette_cosine mean"], row["silhouette_cosine sd"] = mean, sd
        rows.append(row)
    for model, xe in _xe_partner(info).items():  # each loss minus XE, the pretraining seed as the unit
        row = {"model": f"{model} - {xe}", "loss": f"{info[info['model'] == model]['loss_id'].iloc[0]} - xe"}
        for metric, label in INTRINSIC.items():
            sub = pre[pre["metric"] == metric]
            row[label] = _effect_cell(
                *(sub[sub["model"] == m].groupby("pretrain_seed")["value"].mean() for m in (model, xe))
            )
        rows.append(row)
    return pd.DataFrame(rows)


def _effect_cell(a: pd.Series, b: pd.Series) -> str:
    """'+0.048 [-0.006, +0.103] (paired t over 4 pretraining seeds)'; without an interval, the reason."""
    from helm import stats

    if a.empty or b.empty:
        return ""
    d = stats.loss_effect(a.to_dict(), b.to_dict())
    if not d.has_interval:
        return f"{d.estimate:+.3f} ({d.method})"
    return f"{d.estimate:+.3f} [{d.low:+.3f}, {d.high:+.3f}] ({d.method})"


def _xe_partner(info: pd.DataFrame) -> dict[str, str]:
    """model -> the XE model (true tree) of the same arch, mode, size and tokenizer, for every non-XE model."""
    models = info.drop_duplicates("model").set_index("model")
    models = models[models["loss"].notna()]
    key = ["arch", "mode", "size", "tokenizer"]
    xe = models[
        (models["loss"] == "XE") & (models["hierarchy"].fillna("true").astype(str).str.lower() == "true")
    ]  # CSV: True
    out = {}
    for model, row in models.drop(xe.index).iterrows():
        match = xe[(xe[key] == row[key]).all(axis=1)]
        if len(match):
            out[str(model)] = str(match.index[0])
    return out


def comparisons(table: pd.DataFrame) -> Iterator[Comparison]:
    """Every non-XE model against its XE partner on every task, with one unit score per pretraining seed: the
    task's headline metric averaged over the downstream seeds both models were evaluated with."""
    heads = headlines(table)
    info = run_info(table)
    runs_of = {m: sorted(sub.index, key=lambda r: _pretrain_seed(info, r)) for m, sub in info.groupby("model")}
    for task, metric in sorted(heads.items()):
        values = table[(table["task"] == task) & (table["metric"] == metric)].groupby(["run", "seed"])["value"].mean()
        for model, xe in _xe_partner(info).items():
            a_runs, b_runs = runs_of[model], runs_of[xe]
            seeds = _common_seeds(values, [*a_runs, *b_runs])
            if seeds:
                a, b = ({_pretrain_seed(info, r): float(values.loc[r].loc[seeds].mean()) for r in runs}
                        for runs in (a_runs, b_runs))  # fmt: skip
                loss = str(info.loc[a_runs[0], "loss_id"])
                yield Comparison(task, metric, loss, model, xe, a_runs, b_runs, seeds, a, b)


@dataclass
class Comparison:
    task: str
    metric: str
    loss: str
    model: str
    xe: str
    a_runs: list[str]
    b_runs: list[str]
    seeds: list[int]  # downstream seeds averaged into each unit
    a: dict[int, float]  # pretraining seed -> unit score of the loss under test
    b: dict[int, float]  # ... of XE

    @property
    def higher_is_better(self) -> bool:
        return not any(self.metric.startswith(m) for m in LOWER_IS_BETTER)


def delta_vs_xe(
    table: pd.DataFrame, predictions: dict[tuple[str, str, int], dict], replicates: int = 2000
) -> pd.DataFrame:
    """Each loss minus XE per task (headline metric): the loss effect with the pretraining seed as the unit (a
    paired t or Welch interval, helm.stats.loss_effect; none with one seed a side) and, where the test predictions
    were saved, the spread that test rows and downstream seeds alone give (helm.stats.row_spread)."""
    import pandas as pd

    from helm import stats

    rows = []
    for c in comparisons(table):
        diff = stats.loss_effect(c.a, c.b)
        spread = _row_spread(predictions, c, replicates) if c.metric == "spearman" else None
        rows.append({
            "task": c.task, "metric": c.metric, "loss": c.loss, "model": c.model, "xe model": c.xe,
            "loss score": stats.format_mean_sd(*stats.mean_sd(list(c.a.values()))[:2]),
            "xe score": stats.format_mean_sd(*stats.mean_sd(list(c.b.values()))[:2]),
            "delta": diff.estimate, "low": diff.low, "high": diff.high,
            "verdict": stats.verdict(diff, c.higher_is_better), "method": diff.method,
            "pretrain seeds": f"{len(c.a)} vs {len(c.b)}", "downstream seeds": len(c.seeds),
            "rows low": spread[0] if spread else math.nan, "rows high": spread[1] if spread else math.nan,
        })  # fmt: skip
    return pd.DataFrame(rows, columns=DELTA_COLUMNS)


# `loss score`/`xe score`: mean ± sd over pretraining seeds of the unit scores; `low`/`high`: the loss effect's
# interval; `rows low`/`rows high`: test rows and downstream seeds alone
DELTA_COLUMNS = ["task", "metric", "loss", "model", "xe model", "loss score", "xe score", "delta", "low", "high",
                 "verdict", "method", "pretrain seeds", "downstream seeds", "rows low", "rows high"]  # fmt: skip
POWER_NOTE = (
    "Power of the 95 % paired t interval over pretraining seeds to exclude 0 when the true difference is "
    "the paper's ~8 % of XE's score, from the sd of this grid's paired differences (noncentral t; "
    "helm.stats.power). Estimated from few seeds: a rough guide, not a guarantee."
)
# The effect the HELM paper reports (abstract): about 8 % better than XE on average, read as relative to XE's score.
PAPER_EFFECT = 0.08


def power_table(table: pd.DataFrame, effect: float = PAPER_EFFECT, target: float = 0.8) -> pd.DataFrame:
    """Per task and loss with paired pretraining seeds: the sd of the paired unit differences, the power the
    grid has for a true difference of ``effect`` x |XE's mean| and the pretraining seeds per loss that reach
    ``target`` power (helm.stats.power, paired t at 95 %)."""
    import numpy as np
    import pandas as pd

    from helm import stats

    rows = []
    for c in comparisons(table):
        paired = sorted(c.a.keys() & c.b.keys())
        if len(paired) < 2:
            continue
        sd = float(np.std([c.a[s] - c.b[s] for s in paired], ddof=1))
        delta = effect * abs(float(np.mean(list(c.b.values()))))
        rows.append({"task": c.task, "metric": c.metric, "loss": c.loss, "pretrain seeds": len(paired),
                     "sd of paired differences": sd, f"effect ({effect:.0%} of XE)": delta,
                     "power now": stats.power(delta, sd, len(paired)),
                     f"seeds for {target:.0%} power": stats.seeds_for_power(delta, sd, target)})  # fmt: skip
    return pd.DataFrame(rows)


def _pretrain_seed(info: pd.DataFrame, run: str) -> int:
    seed = info.loc[run, "pretrain_seed"]
    return 0 if seed is None or seed != seed else int(seed)  # a block without a seed axis: seed 0


def _common_seeds(values: pd.Series, runs: Sequence[str]) -> list[int]:
    """Downstream seeds every one of ``runs`` was evaluated with (a unit averages over the same seeds)."""
    have = [set(values.loc[run].dropna().index) if run in values.index.get_level_values(0) else set() for run in runs]
    return sorted(set.intersection(*have)) if have else []


def _row_spread(predictions, c: Comparison, replicates: int) -> tuple[float, float] | None:
    """helm.stats.row_spread when every evaluation saved its test predictions, on the same rows per seed."""
    import numpy as np

    from helm import stats

    per_seed = {}
    for seed in c.seeds:
        got = [predictions.get((c.task, run, int(seed))) for run in (*c.a_runs, *c.b_runs)]
        if any(g is None for g in got) or any(not np.array_equal(g["index"], got[0]["index"]) for g in got):
            return None
        preds = [g["pred"] for g in got]
        k = len(c.a_runs)
        per_seed[int(seed)] = stats.SeedPredictions(got[0]["y"], preds[:k], preds[k:], np.asarray(got[0]["index"]))
    return stats.row_spread(per_seed, replicates=replicates)


def win_counts(delta: pd.DataFrame) -> pd.DataFrame:
    """Per loss: on how many tasks its mean beats XE, and on how many the 95 % interval says so."""
    import numpy as np
    import pandas as pd

    rows = []
    for loss, sub in delta.groupby("loss", sort=False):
        orient = np.where(sub["metric"].str.startswith(LOWER_IS_BETTER), -1, 1)
        higher = int((orient * sub["delta"] > 0).sum())
        rows.append({"loss": loss, "tasks": len(sub), "mean better than XE": higher,
                     "better (interval > 0)": int((sub["verdict"] == "better").sum()),
                     "worse (interval < 0)": int((sub["verdict"] == "worse").sum())})  # fmt: skip
    return pd.DataFrame(rows)


def pretrain_table(table: pd.DataFrame) -> pd.DataFrame:
    """One row per pretrain run: coordinates, pretraining metrics (raw losses included) and the job's benchmark."""
    import pandas as pd

    pre = table[table["task"] == "pretrain"]
    if pre.empty:
        return pd.DataFrame(columns=["run", *COORDS, "pretrain_s", "pretrain_max_rss_mb"])
    wide = pre.pivot_table(index="run", columns="metric", values="value", aggfunc="first")
    info = pre.drop_duplicates("run").set_index("run")[[*COORDS, "pretrain_s", "pretrain_max_rss_mb"]]
    return info.join(wide).reset_index()


def truncation(table: pd.DataFrame) -> pd.DataFrame:
    """Per run and task: sequences cut at the model's max_seq_len (first seed; the count does not vary)."""
    import pandas as pd

    cut = table[table["metric"] == "n_truncated"]
    # the rows a probe embeds: every row of the dataset as loaded (--max-train subsamples only the head's train)
    sizes = table[table["metric"].isin(["n_train_full", "n_train", "n_val", "n_test"])]
    rows = []
    for (run, task), sub in cut.groupby(["run", "task"]):
        seed = sub["seed"].min()
        n = sizes[(sizes["run"] == run) & (sizes["task"] == task) & (sizes["seed"] == seed)].set_index("metric")
        if n.empty:
            continue
        size = n["value"].get("n_train_full", n["value"].get("n_train", 0)) + n["value"].get("n_val", 0)
        size += n["value"].get("n_test", 0)
        rows.append({"run": run, "task": task, "n_truncated": int(sub["value"].iloc[0]), "n_sequences": int(size)})
    return pd.DataFrame(rows, columns=["run", "task", "n_truncated", "n_sequences"])


# ----------------------------------------------------------------------------------------------- figures
def read_scalars(tb_dir: Path, tags: Sequence[str] = ("val_ppl", "val_aa_acc")) -> dict[str, list[tuple[int, float]]]:
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


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 110, "savefig.dpi": 150, "font.size": 9, "axes.spines.top": False,
                         "axes.spines.right": False, "svg.hashsalt": "helm", "svg.fonttype": "none"})  # fmt: skip
    return plt


def _save(fig, stem: Path) -> list[Path]:
    """PNG and SVG of one figure (SVG without a date, so reruns give the same bytes)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    fig.savefig(out[0], bbox_inches="tight", metadata={"Software": None})
    fig.savefig(out[1], bbox_inches="tight", metadata={"Date": None, "Creator": None})
    import matplotlib.pyplot as plt

    plt.close(fig)
    return out


def _colors(labels: Sequence[str]) -> dict[str, Any]:
    """A fixed colour per loss id: XE grey, the others from a qualitative map in a stable order."""
    plt = _pyplot()
    cmap = plt.get_cmap("tab10")
    others = [lab for lab in sorted(set(labels), key=str) if lab not in ("xe", None)]
    colors = {lab: cmap(i % 10) for i, lab in enumerate(others)}
    colors["xe"] = "#555555"
    return colors


def learning_curves_figure(curves: dict[str, dict[str, list[tuple[int, float]]]], loss_of: dict[str, str], stem: Path):
    """Validation codon perplexity and amino-acid accuracy against optimizer steps, one line per run."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    colors = _colors(list(loss_of.values()))
    styles = ["-", "--", ":", "-."]
    seen_seed: dict[str, int] = {}
    for run in sorted(curves):
        loss = loss_of.get(run)
        style = styles[seen_seed.setdefault(loss, 0) % len(styles)]
        seen_seed[loss] += 1
        for ax, tag in zip(axes, ("val_ppl", "val_aa_acc")):
            points = [(s, v) for s, v in curves[run].get(tag, []) if math.isfinite(v)]
            if points:
                steps, values = zip(*points)
                ax.plot(steps, values, style, color=colors.get(loss, "#1f77b4"), label=run, lw=1.4, marker=".", ms=4)
    axes[0].set(xlabel="optimizer step", ylabel="validation codon perplexity (lower is better)")
    axes[1].set(xlabel="optimizer step", ylabel="validation amino-acid accuracy (higher is better)")
    if not any(curves.values()):
        for ax in axes:
            ax.text(0.5, 0.5, "no validation curves logged", ha="center", transform=ax.transAxes)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, fontsize=8)
    fig.suptitle("Pretraining: loss-independent validation metrics (the training losses are on different scales)")
    fig.tight_layout()
    return _save(fig, stem)


def task_scores_figure(table: pd.DataFrame, published: list[dict[str, Any]], stem: Path):
    """Per task: each model's headline score (mean ± sd over all its seeds), baselines as dashed lines and
    published values as stars (their protocol differs: labelled in the legend)."""
    import numpy as np
    import pandas as pd

    from helm import stats

    plt = _pyplot()
    heads = headlines(table)
    tasks = sorted(heads)
    ncols = min(3, max(1, len(tasks)))
    nrows = max(1, math.ceil(len(tasks) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 4.6 * nrows), squeeze=False)
    info = run_info(table)
    colors = _colors(list(info["loss_id"]))
    for ax, task in zip(axes.ravel(), tasks):
        sub = table[(table["task"] == task) & (table["metric"] == heads[task])]
        models = [m for m in dict.fromkeys(info["model"]) if m in set(sub["model"])]
        pretrained = [m for m in models if pd.notna(info[info["model"] == m]["loss_id"].iloc[0])]
        for i, model in enumerate(pretrained):
            vals = sub[sub["model"] == model]["value"]
            mean, sd, n = stats.mean_sd(vals.tolist())
            loss = info[info["model"] == model]["loss_id"].iloc[0]
            ax.errorbar(i, mean, yerr=0 if not math.isfinite(sd) else sd, fmt="o", color=colors.get(loss), capsize=3)
            ax.plot(np.full(len(vals), i) + 0.18, vals, ".", color=colors.get(loss), alpha=0.45, ms=4)
        for j, model in enumerate(m for m in models if m not in pretrained):
            mean = sub[sub["model"] == model]["value"].mean()
            ax.axhline(mean, ls="--", lw=1, color=plt.get_cmap("Dark2")(j % 8), label=f"{model} {mean:.2f}")
        dataset = sub["dataset"].dropna().iloc[0] if sub["dataset"].notna().any() else task
        for k, pub in enumerate(p for p in published if p.get("dataset") == dataset):
            ax.plot(len(pretrained) - 0.5 + 0.25 * k, pub["value"], "*", ms=10, color=plt.get_cmap("Set1")(k % 9),
                    label=f"published: {pub['label']} {pub['value']:.2f}")  # fmt: skip
        ax.set_xticks(range(len(pretrained)))
        ax.set_xticklabels([info[info["model"] == m]["loss_id"].iloc[0] for m in pretrained], rotation=45, ha="right")
        ax.set_title(f"{task}", fontsize=10)
        ax.set_ylabel(heads[task])
        ax.grid(axis="y", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6.5, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.32), ncol=1)
    for ax in axes.ravel()[len(tasks) :]:
        ax.axis("off")
    fig.suptitle("Downstream test scores: mean ± sd over seeds (dots: single seeds); dashed: baselines through "
                 "the same harness; stars: published values (other protocol and scale)", fontsize=9)  # fmt: skip
    fig.tight_layout()
    return _save(fig, stem)


def delta_figure(delta: pd.DataFrame, stem: Path):
    """Difference to XE per task: the loss effect's 95 % interval (thick; an open marker where there is none, one
    pretraining seed a side) and, thin and grey behind it, the range test rows and downstream seeds alone give."""
    plt = _pyplot()
    tasks = list(dict.fromkeys(delta["task"])) if len(delta) else []
    losses = list(dict.fromkeys(delta["loss"])) if len(delta) else []
    fig, ax = plt.subplots(figsize=(8, 0.45 * max(1, len(tasks)) * max(1, len(losses)) ** 0.5 + 1.6))
    colors = _colors(losses)
    step = 0.8 / max(1, len(losses))
    for j, loss in enumerate(losses):
        sub = delta[delta["loss"] == loss].set_index("task")
        y = [tasks.index(t) - 0.4 + step * (j + 0.5) for t in sub.index]
        ax.hlines(y, sub["rows low"], sub["rows high"], color="#bbbbbb", lw=5, zorder=1)
        has = sub["low"].notna().to_numpy()
        low = (sub["delta"] - sub["low"]).fillna(0).clip(lower=0)
        high = (sub["high"] - sub["delta"]).fillna(0).clip(lower=0)
        ax.errorbar(sub["delta"][has], [v for v, h in zip(y, has) if h], xerr=[low[has], high[has]], fmt="o",
                    color=colors.get(loss), capsize=2.5, ms=4, lw=1.5, zorder=2, label=loss)  # fmt: skip
        label = f"{loss} (one pretraining seed: no interval)" if (~has).any() else None
        ax.plot(sub["delta"][~has], [v for v, h in zip(y, has) if not h], "o", mfc="none", color=colors.get(loss),
                ms=5, zorder=2, label=label)  # fmt: skip
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(range(len(tasks)))
    ax.set_yticklabels(tasks)
    ax.invert_yaxis()
    ax.set_xlabel("difference to XE in the task's headline metric (95 % interval over pretraining seeds; grey: "
                  "test rows and downstream seeds alone); > 0: better than XE", fontsize=8)  # fmt: skip
    if losses:
        ax.legend(fontsize=7.5, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))
    else:
        ax.text(0.5, 0.5, "no XE partner runs to compare", ha="center", transform=ax.transAxes)
    ax.set_title("Hierarchy-aware losses minus cross-entropy, per task", fontsize=10)
    fig.tight_layout()
    return _save(fig, stem)


def intrinsic_figure(table: pd.DataFrame, stem: Path):
    """Intrinsic metrics per model on held-out sequences (true tree): mean ± sd over pretraining seeds, and each
    seed as a small dot (points, not bars: the differences are small next to the values)."""
    import numpy as np
    import pandas as pd

    plt = _pyplot()
    frame = intrinsic(table)
    frame = frame[frame["pretrain seeds"].notna()]  # the models, not their differences to XE
    pre = table[table["task"] == "pretrain"]
    metrics = list(INTRINSIC.items())
    per_run = {m: pre[pre["metric"] == m].groupby("model")["value"].apply(list) for m, _ in metrics}
    if "silhouette_cosine mean" in frame:
        metrics.append(("silhouette_cosine", "synonymous clustering (silhouette)"))
        sil = table[table["metric"] == "silhouette_cosine"]
        per_run["silhouette_cosine"] = sil.groupby(["model", "run"])["value"].mean().groupby("model").apply(list)
    fig, axes = plt.subplots(1, len(metrics), figsize=(2.9 * len(metrics), 3.4), squeeze=False)
    colors = _colors(list(frame["loss"]) if len(frame) else [])
    for ax, (metric, label) in zip(axes.ravel(), metrics):
        if f"{metric} mean" not in frame:
            ax.axis("off")
            continue
        for i, row in frame.reset_index(drop=True).iterrows():
            color = colors.get(row["loss"])
            sd = row[f"{metric} sd"]
            ax.errorbar(i, row[f"{metric} mean"], yerr=0 if pd.isna(sd) else sd, fmt="o", color=color, capsize=3)
            seeds = per_run[metric].get(row["model"], [])
            ax.plot(np.full(len(seeds), i) + 0.15, seeds, ".", color=color, alpha=0.5, ms=4)
        ax.set_xticks(range(len(frame)))
        ax.set_xticklabels(frame["loss"], rotation=45, ha="right")
        ax.set_xlim(-0.5, len(frame) - 0.5)
        better = "lower" if any(k in metric for k in LOWER_IS_BETTER) else "higher"
        ax.set_title(f"{label}\n({better} is better)", fontsize=8.5)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Held-out OAS sequences: intrinsic metrics on the true codon tree (mean ± sd over pretraining "
                 "seeds; dots: single seeds)", fontsize=9)  # fmt: skip
    fig.tight_layout()
    return _save(fig, stem)


# ------------------------------------------------------------------------------------------------- CLI
def write_table(frame: pd.DataFrame, stem: Path, title: str = "", note: str = "") -> None:
    """CSV (every column) and Markdown (the human columns: numeric helper columns are left out)."""
    atomic_write(stem.with_suffix(".csv"), frame.to_csv(index=False))
    human = frame[[c for c in frame.columns if not re.search(r" (mean|sd|n)$", str(c))]]
    text = (f"# {title}\n\n" if title else "") + _markdown(human) + (f"\n{note}\n" if note else "")
    atomic_write(stem.with_suffix(".md"), text)


def _markdown(frame: pd.DataFrame) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "" if not math.isfinite(v) else f"{v:.4g}"
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v).replace("|", "/")

    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(cell(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def read_published(path: str | Path | None) -> list[dict[str, Any]]:
    """Published values to mark on the task plots (config/published.yaml: each with its source and protocol)."""
    if not path:
        return []
    doc = yaml.safe_load(Path(path).read_text()) or {}
    return list(doc.get("values") or [])


def write_outputs(args: argparse.Namespace) -> pd.DataFrame:
    table = gather(args.results, args.runs, args.evals)
    atomic_write(args.out, table.to_csv(index=False))
    if args.tables_dir:
        tdir = Path(args.tables_dir)
        predictions = read_predictions(args.results, args.evals, args.runs)
        delta = delta_vs_xe(table, predictions, replicates=args.replicates)
        write_table(summary(table), tdir / "summary", "Summary: headline metric per task (mean ± sd over seeds)")
        counts = win_counts(delta)
        write_table(
            delta, tdir / "delta_vs_xe", "Each loss minus XE (95 % interval over pretraining seeds)", _markdown(counts)
        )
        write_table(counts, tdir / "win_counts", "Tasks on which each loss beats XE")
        power = power_table(table)
        write_table(power, tdir / "power", "Power for an effect of the paper's size (paired t over pretraining seeds)",
                    POWER_NOTE)  # fmt: skip
        if len(power):
            print(f"helm tables: pretraining seeds per loss for 80 % power (paired t, effect "
                  f"{PAPER_EFFECT:.0%} of XE):\n{_markdown(power)}")  # fmt: skip
        write_table(intrinsic(table), tdir / "intrinsic", "Intrinsic metrics on held-out sequences (true tree)")
        write_table(pretrain_table(table), tdir / "pretrain", "Pretraining runs")
        write_table(truncation(table), tdir / "truncation", "Sequences cut at the model's max_seq_len")
    if args.plots_dir:
        pdir = Path(args.plots_dir)
        dirs = [run_dir_of(p) for p in args.runs]
        ids = run_ids(dirs)
        info = {read_run(d, ids[str(d.resolve())])["run"]: d for d in dirs}
        curves = {run: read_scalars(path / TB_DIR) for run, path in info.items()}
        loss_of = {run: read_run(path, run)["coords"].get("loss_id") for run, path in info.items()}
        learning_curves_figure(curves, loss_of, pdir / "learning_curves")
        task_scores_figure(table, read_published(args.published), pdir / "task_scores")
        delta_figure(delta_vs_xe(table, read_predictions(args.results, args.evals, args.runs), args.replicates)
                     if not args.tables_dir else delta, pdir / "delta_to_xe")  # fmt: skip
        intrinsic_figure(table, pdir / "intrinsic")
    return table


# ---------------------------------------------------------------------------------------------- artifact
STAGES = {"data": "prepare + merge", "pretrain": "pretraining", "embed": "frozen embeddings",
          "downstream": "downstream heads, baselines, clustering"}  # fmt: skip


def stage_times(results: Path) -> pd.DataFrame:
    """Per stage (benchmarks/<stage>/...): jobs, summed job seconds, wall span (first start to last end, from
    each benchmark file's time of writing minus its seconds) and the largest peak memory."""
    import pandas as pd

    rows = []
    for stage, label in STAGES.items():
        files = sorted((results / "benchmarks" / stage).rglob("*.tsv"))
        spans, seconds, rss = [], 0.0, []
        for f in files:
            s, m = read_benchmark(f)
            if s is None:
                continue
            end = f.stat().st_mtime
            spans.append((end - s, end))
            seconds += s
            rss.append(m or 0.0)
        if spans:
            wall = max(e for _, e in spans) - min(b for b, _ in spans)
            rows.append({"stage": stage, "what": label, "jobs": len(spans), "job_seconds": round(seconds, 1),
                         "wall_seconds": round(wall, 1), "max_rss_mb": round(max(rss), 1)})  # fmt: skip
    return pd.DataFrame(rows, columns=["stage", "what", "jobs", "job_seconds", "wall_seconds", "max_rss_mb"])


def versions() -> str:
    """Python, platform, the packages that decide the numbers, and the code's git commit."""
    import platform
    import subprocess
    from importlib import metadata

    lines = [f"python {platform.python_version()}", f"platform {platform.platform()}"]
    for pkg in ("helm-mrna", "torch", "lightning", "timm", "transformers", "tokenizers", "torchmetrics", "numpy",
                "scipy", "scikit-learn", "pandas", "matplotlib", "snakemake"):  # fmt: skip
        try:
            lines.append(f"{pkg} {metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            lines.append(f"{pkg} (not installed)")
    repo = Path(__file__).resolve().parents[1]
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True)  # fmt: skip
    if commit.returncode == 0:
        lines.append(f"git {commit.stdout.strip()}" + (" (uncommitted changes)" if dirty.stdout.strip() else ""))
    return "\n".join(lines) + "\n"


def machine() -> dict[str, Any]:
    """What the numbers were measured on: CPU model, cores, memory, OS, torch threads."""
    import os
    import platform

    import psutil
    import torch

    cpu = platform.processor()
    if Path("/proc/cpuinfo").is_file():
        names = [ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                 if ln.startswith("model name")]  # fmt: skip
        cpu = names[0] if names else cpu
    return {"cpu": cpu, "logical_cores": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "os": platform.platform(), "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}  # fmt: skip


def collect_artifact(results: str | Path, artifact: str | Path, workflow_config: dict[str, Any] | None) -> Path:
    """Copy tables.csv, tables/ and plots/ of ``results`` into ``artifact`` (tables/, figures/) with the resolved
    workflow config, versions.txt, machine.json and stage_times.csv."""
    import shutil

    results, artifact = Path(results), Path(artifact)
    artifact.mkdir(parents=True, exist_ok=True)
    shutil.copy2(results / "tables.csv", artifact / "tables.csv")
    for src, dst in (("tables", "tables"), ("plots", "figures")):
        if (results / src).is_dir():
            shutil.copytree(results / src, artifact / dst, dirs_exist_ok=True)
    # the workflow's resolved config (the artifact's own file, not a run's CONFIG_FILE)
    atomic_write(artifact / "config.yaml", yaml.safe_dump(workflow_config or {}, sort_keys=False))
    atomic_write(artifact / "versions.txt", versions())
    atomic_write(artifact / "machine.json", json.dumps(machine(), indent=2) + "\n")
    atomic_write(artifact / "stage_times.csv", stage_times(results).to_csv(index=False))
    return artifact


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
