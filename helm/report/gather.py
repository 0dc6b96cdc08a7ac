"""Gathering: pretrain run directories and evaluation JSONs -> the long table (one row per run, task, seed, metric).

Inputs (the layout the Snakemake workflow writes, see docs/ARCHITECTURE.md "Workflow"):
- a run directory `<results>/pretrain/<run>/` with `metrics.json`, `config.yaml` (its ``tags`` section: the run's
  grid coordinates, written by the workflow's request; older runs have them in `grid.json`) and `tb/`
  (TensorBoard); `--runs` takes the run directories or any file inside them;
- evaluation JSONs `{"run", "task", "seed", "metrics": {...}, "config": {...}[, "predictions": {...}]}`; under
  `<results>/downstream/<task>/<run>/seed<N>.json` the task id and run are taken from the path;
- Snakemake benchmark TSVs `<results>/benchmarks/...` (wall seconds `s`, peak memory `max_rss` in MB).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from helm.run import CONFIG_FILE, METRICS_FILE, TAGS

if TYPE_CHECKING:  # numpy / pandas load when tables are made (`helm tables --help` is instant)
    import pandas as pd


COORDS = ("grid", "arch", "mode", "size", "preset", "loss_id", "loss", "hxe_alpha", "soft_labels_beta", "hierarchy",
          "tokenizer", "pretrain_seed", "model")  # fmt: skip
KEYS = ("run", "task", "seed", "metric")
BENCH = ("pretrain_s", "pretrain_max_rss_mb", "eval_s", "eval_max_rss_mb")
COLUMNS = (*KEYS, "value", "dataset", "head", *COORDS, *BENCH)

SEED_SUFFIX = re.compile(r"-s\d+$")
GRID_FILE = "grid.json"  # a workflow run's grid coordinates before they became its config.yaml tags (still read)


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
    """A run directory from itself or a file inside it (metrics.json, config.yaml); a path that holds no run is an
    error naming it (a table silently missing a run would be wrong, not short)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"--runs {path}: not found")
    run_dir = path if path.is_dir() else path.parent
    if not any((run_dir / name).is_file() for name in (CONFIG_FILE, METRICS_FILE, GRID_FILE)):
        raise FileNotFoundError(f"--runs {path}: not a run directory (no {CONFIG_FILE}, {METRICS_FILE} or {GRID_FILE})")
    return run_dir


def read_run(run_dir: Path, run_id: str | None = None) -> dict[str, Any]:
    """Grid coordinates, training seed and flattened metrics.json of one pretrain run directory. A workflow run
    names itself in the ``tags`` of its config.yaml (helm.config.TrainConfig.tags; runs made before the workflow
    wrote tags: in grid.json); any other run gets its coordinates from its resolved config.yaml and is called
    ``run_id`` (see ``run_ids``), never only by its folder's name."""
    config = {}
    if (run_dir / CONFIG_FILE).is_file():
        config = yaml.safe_load((run_dir / CONFIG_FILE).read_text()) or {}
    seed = config.get("seed")
    tags = config.get(TAGS) or {}
    if not tags and (run_dir / GRID_FILE).is_file():
        tags = json.loads((run_dir / GRID_FILE).read_text())
    coords = {**coords_from_config(config), "run": run_id or run_dir.name, **tags}
    metrics = {}
    if (run_dir / METRICS_FILE).is_file():
        metrics = flatten(json.loads((run_dir / METRICS_FILE).read_text()))
    run = coords["run"]
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
