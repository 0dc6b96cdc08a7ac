"""Figures of the long table (matplotlib, PNG + SVG, reproducible bytes): `learning_curves`, `task_scores`,
`delta_to_xe`, `intrinsic`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from helm.report.tables import INTRINSIC, LOWER_IS_BETTER, headlines, intrinsic, run_info

if TYPE_CHECKING:
    import pandas as pd

FIGURES = ("learning_curves", "task_scores", "delta_to_xe", "intrinsic")  # `helm tables --plots-dir`: <name>.png/.svg


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


def read_published(path: str | Path | None) -> list[dict[str, Any]]:
    """Published values to mark on the task plots (config/published.yaml: each with its source and protocol)."""
    if not path:
        return []
    doc = yaml.safe_load(Path(path).read_text()) or {}
    return list(doc.get("values") or [])
