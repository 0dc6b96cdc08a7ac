"""Tables of the long table (helm/report/gather.py), CSV and Markdown: `summary` (one row per run, one column per
task's headline metric as mean ± sd over downstream seeds), `delta_vs_xe` (each loss minus XE with a 95 % interval
over pretraining seeds from helm.stats, and the count of tasks it wins), `power` (pretraining seeds an effect of
the paper's size needs), `intrinsic`, `pretrain` (per-run details), `truncation` (sequences cut per run and task).

Every comparison uses only loss-independent numbers -- codon perplexity and accuracy, amino-acid accuracy and
mistake severity on the true tree, downstream scores -- because loss values of XE, HXE, soft labels and the aa
losses are on different scales (docs/PROTOCOL.md "Comparable metrics").
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from helm.files import atomic_write
from helm.report.gather import COORDS

if TYPE_CHECKING:
    import pandas as pd

# what `helm tables --tables-dir` writes (<name>.csv and <name>.md), with the Markdown title of each
TABLES = {
    "summary": "Summary: headline metric per task (mean ± sd over seeds)",
    "delta_vs_xe": "Each loss minus XE (95 % interval over pretraining seeds)",
    "win_counts": "Tasks on which each loss beats XE",
    "power": "Power for an effect of the paper's size (paired t over pretraining seeds)",
    "intrinsic": "Intrinsic metrics on held-out sequences (true tree)",
    "pretrain": "Pretraining runs",
    "truncation": "Sequences cut at the model's max_seq_len",
}

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


def write_table(frame: pd.DataFrame, stem: Path, title: str = "", note: str = "") -> None:
    """CSV (every column) and Markdown (the human columns: numeric helper columns are left out)."""
    atomic_write(stem.with_suffix(".csv"), frame.to_csv(index=False))
    human = frame[[c for c in frame.columns if not re.search(r" (mean|sd|n)$", str(c))]]
    text = (f"# {title}\n\n" if title else "") + markdown(human) + (f"\n{note}\n" if note else "")
    atomic_write(stem.with_suffix(".md"), text)


def markdown(frame: pd.DataFrame) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "" if not math.isfinite(v) else f"{v:.4g}"
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v).replace("|", "/")

    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(cell(v) for v in row) + " |")
    return "\n".join(lines) + "\n"
