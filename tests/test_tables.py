"""helm tables on a small results tree laid out as the workflow writes it (values chosen by hand), checked against
the definitions: means and sds, the difference to XE (bootstrap when predictions exist, else a t interval), the
win counts, the truncation table, the figures and the artifact folder."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats as sps

from helm import stats
from helm.report import cli, gather, tables

approx = pytest.approx

XE, HXE = "gpt2-mlm-tiny-xe-3mer", "gpt2-mlm-tiny-hxe0.4-3mer"
COORDS = {
    f"{XE}-s0": {"model": XE, "loss_id": "xe", "loss": "XE", "hxe_alpha": None, "pretrain_seed": 0},
    f"{XE}-s1": {"model": XE, "loss_id": "xe", "loss": "XE", "hxe_alpha": None, "pretrain_seed": 1},
    f"{HXE}-s0": {"model": HXE, "loss_id": "hxe0.4", "loss": "HXE", "hxe_alpha": 0.4, "pretrain_seed": 0},
}
# (run, seed) -> spearman of the mrfp probe (no predictions saved: the t interval path)
SPEARMAN = {
    (f"{XE}-s0", 0): 0.50, (f"{XE}-s0", 1): 0.40, (f"{XE}-s0", 2): 0.45,
    (f"{XE}-s1", 0): 0.52, (f"{XE}-s1", 1): 0.44, (f"{XE}-s1", 2): 0.41,
    (f"{HXE}-s0", 0): 0.70, (f"{HXE}-s0", 1): 0.60, (f"{HXE}-s0", 2): 0.66,
}  # fmt: skip
INTRINSIC = {f"{XE}-s0": 20.0, f"{XE}-s1": 22.0, f"{HXE}-s0": 21.0}  # test_ppl


def write_tree(root: Path, predictions: bool = False) -> tuple[list[Path], list[Path]]:
    runs, evals = [], []
    rng = np.random.default_rng(0)
    y = {seed: rng.normal(size=60) for seed in range(3)}
    for run, extra in COORDS.items():
        run_dir = root / "pretrain" / run
        run_dir.mkdir(parents=True)
        grid = {"run": run, "grid": "g", "arch": "gpt2", "mode": "mlm", "size": "tiny", "preset": "gpt2-tiny",
                "hierarchy": "true", "soft_labels_beta": None, "tokenizer": "3mer", **extra}  # fmt: skip
        metrics = {"val_loss": 3.5, "test_ppl": INTRINSIC[run], "test_acc": 0.3, "test": {"x": 1}, "note": "x"}
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
        # the grid coordinates are the tags the workflow's request gave the run (helm train copies them here)
        config = {"seed": extra["pretrain_seed"], "loss": "XE", "model_name": "bert", "tags": grid}
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
        bench = root / "benchmarks" / "pretrain" / f"{run}.tsv"
        bench.parent.mkdir(parents=True, exist_ok=True)
        bench.write_text("s\th:m:s\tmax_rss\n12.5\t0:00:12\t300.0\n")
        runs.append(run_dir / "metrics.json")
    for (run, seed), value in SPEARMAN.items():
        path = root / "downstream" / "mRFP" / run / f"seed{seed}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {"run": run, "task": "mrfp", "seed": seed, "config": {"head": "textcnn"},
                  "metrics": {"spearman": value, "pearson": value / 2, "n_truncated": 5, "n_train": 40, "n_val": 10,
                              "n_test": 60}}  # fmt: skip
        if predictions:  # predictions whose test Spearman is about `value`, on the same rows for every run
            noise = np.sqrt(1 / value**2 - 1)
            pred = y[seed] + rng.normal(size=60) * noise
            record["predictions"] = {"test_index": list(range(60)), "test_y": y[seed].tolist(),
                                     "test_pred": pred.tolist()}  # fmt: skip
            record["metrics"]["spearman"] = float(sps.spearmanr(y[seed], pred)[0])
        path.write_text(json.dumps(record))
        bench = root / "benchmarks" / "downstream" / "mRFP" / run / f"seed{seed}.tsv"
        bench.parent.mkdir(parents=True, exist_ok=True)
        bench.write_text(f"s\tmax_rss\n{seed + 1.0}\t100.0\n")
        evals.append(path)
    return runs, evals


def test_long_table_has_one_row_per_run_task_seed_metric(tmp_path: Path) -> None:
    runs, evals = write_tree(tmp_path)
    table = gather.gather(tmp_path, runs, evals)
    # 3 runs x 4 numeric pretrain metrics (the string is skipped) + 9 evaluations x 6 metrics
    assert len(table) == 3 * 4 + 9 * 6
    assert not table.duplicated(["run", "task", "seed", "metric"]).any()
    assert set(gather.COORDS) <= set(table.columns)
    pre = table[table["task"] == "pretrain"]
    assert set(pre["metric"]) == {"val_loss", "test_ppl", "test_acc", "test.x"}
    assert (pre["pretrain_s"] == 12.5).all()
    row = table[(table["task"] == "mRFP") & (table["seed"] == 1) & (table["metric"] == "spearman")]
    row = row[row["run"] == f"{HXE}-s0"].iloc[0]
    assert row["value"] == pytest.approx(0.60) and row["loss"] == "HXE" and row["hxe_alpha"] == 0.4
    assert (row["model"], row["pretrain_seed"], row["dataset"], row["head"]) == (HXE, 0, "mrfp", "textcnn")
    assert row["eval_s"] == 2.0 and row["eval_max_rss_mb"] == 100.0 and row["pretrain_max_rss_mb"] == 300.0


def test_summary_is_one_row_per_run_with_mean_and_sd(tmp_path: Path) -> None:
    table = gather.gather(tmp_path, *write_tree(tmp_path))
    summary = tables.summary(table).set_index("run")
    values = [SPEARMAN[(f"{XE}-s1", s)] for s in range(3)]
    assert summary.loc[f"{XE}-s1", "mRFP (spearman)"] == f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"
    assert summary.loc[f"{XE}-s1", "mRFP mean"] == pytest.approx(np.mean(values))
    assert summary.loc[f"{HXE}-s0", "codon perplexity"] == "21.000"
    assert "val_loss" not in " ".join(summary.columns)  # raw losses are not comparable: not in the summary
    intrinsic = tables.intrinsic(table).set_index("model")
    assert intrinsic.loc[XE, "pretrain seeds"] == 2
    assert intrinsic.loc[XE, "codon perplexity"] == f"21.000 ± {np.std([20.0, 22.0], ddof=1):.3f}"


def _unit(run: str) -> float:
    """A pretraining seed's unit score: its Spearman averaged over the downstream seeds."""
    return float(np.mean([SPEARMAN[(run, s)] for s in range(3)]))


def test_delta_vs_xe_with_one_pretraining_seed_gives_the_difference_and_no_verdict(tmp_path: Path) -> None:
    table = gather.gather(tmp_path, *write_tree(tmp_path))
    row = tables.delta_vs_xe(table, predictions={}).set_index("loss").loc["hxe0.4"]
    assert row["delta"] == pytest.approx(_unit(f"{HXE}-s0") - (_unit(f"{XE}-s0") + _unit(f"{XE}-s1")) / 2)
    assert np.isnan(row["low"]) and np.isnan(row["high"]) and row["verdict"] == "n/a: one pretraining seed"
    assert row["pretrain seeds"] == "1 vs 2" and row["downstream seeds"] == 3 and np.isnan(row["rows low"])
    assert set(tables.delta_vs_xe(table, {})["loss"]) == {"hxe0.4"}  # no XE-against-itself rows any more
    counts = tables.win_counts(tables.delta_vs_xe(table, {})).set_index("loss")
    assert counts.loc["hxe0.4", "mean better than XE"] == 1 and counts.loc["hxe0.4", "better (interval > 0)"] == 0
    assert tables.power_table(table).empty  # no paired seeds: nothing to estimate power from


def test_delta_vs_xe_is_a_paired_t_over_pretraining_seeds(tmp_path: Path) -> None:
    runs, evals = write_tree(tmp_path)
    hxe1 = {(f"{HXE}-s1", 0): 0.55, (f"{HXE}-s1", 1): 0.47, (f"{HXE}-s1", 2): 0.50}
    for (run, seed), value in hxe1.items():  # HXE's second pretraining seed (seed 1), as the workflow lays it out
        path = tmp_path / "downstream" / "mRFP" / run / f"seed{seed}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"run": run, "task": "mrfp", "seed": seed, "config": {"head": "textcnn"},
                                    "metrics": {"spearman": value}}))  # fmt: skip
        evals.append(path)
    run_dir = tmp_path / "pretrain" / f"{HXE}-s1"
    run_dir.mkdir(parents=True)
    grid = yaml.safe_load((tmp_path / "pretrain" / f"{HXE}-s0" / "config.yaml").read_text())["tags"]
    # a run from before the workflow wrote tags: its coordinates in grid.json (still read)
    (run_dir / "grid.json").write_text(json.dumps({**grid, "run": f"{HXE}-s1", "pretrain_seed": 1}))
    (run_dir / "metrics.json").write_text(json.dumps({"test_ppl": 21.5}))
    runs.append(run_dir / "metrics.json")
    table = gather.gather(tmp_path, runs, evals)
    row = tables.delta_vs_xe(table, predictions={}).set_index("loss").loc["hxe0.4"]
    units = {**SPEARMAN, **hxe1}
    d = [np.mean([units[(f"{HXE}-s{p}", s)] - units[(f"{XE}-s{p}", s)] for s in range(3)]) for p in (0, 1)]
    lo, hi = sps.t.interval(0.95, 1, loc=np.mean(d), scale=sps.sem(d))
    assert row["delta"] == pytest.approx(np.mean(d)) and (row["low"], row["high"]) == (approx(lo), approx(hi))
    assert row["method"] == "paired t over 2 pretraining seeds" and row["pretrain seeds"] == "2 vs 2"
    assert row["verdict"] == ("better" if lo > 0 else "no clear difference")
    power = tables.power_table(table).iloc[0]
    sd = np.std(d, ddof=1)
    effect = 0.08 * np.mean([_unit(f"{XE}-s0"), _unit(f"{XE}-s1")])
    assert power["sd of paired differences"] == approx(sd) and power["effect (8% of XE)"] == approx(effect)
    assert power["power now"] == approx(stats.power(effect, sd, 2))
    assert power["seeds for 80% power"] == stats.seeds_for_power(effect, sd)


def test_delta_vs_xe_shows_the_test_row_spread_from_saved_predictions(tmp_path: Path) -> None:
    runs, evals = write_tree(tmp_path, predictions=True)
    table = gather.gather(tmp_path, runs, evals)
    predictions = gather.read_predictions(tmp_path, evals)
    assert len(predictions) == 9
    row = tables.delta_vs_xe(table, predictions, replicates=400).set_index("loss").loc["hxe0.4"]
    sp = table[(table["metric"] == "spearman")].set_index(["run", "seed"])["value"]
    want = np.mean([sp[(f"{HXE}-s0", s)] - (sp[(f"{XE}-s0", s)] + sp[(f"{XE}-s1", s)]) / 2 for s in range(3)])
    assert row["delta"] == pytest.approx(want, abs=1e-9)
    assert row["rows low"] < row["delta"] < row["rows high"] and row["verdict"] == "n/a: one pretraining seed"


def test_truncation_counts_every_embedded_row(tmp_path: Path) -> None:
    table = gather.gather(tmp_path, *write_tree(tmp_path))
    trunc = tables.truncation(table)
    assert len(trunc) == 3 and (trunc["n_truncated"] == 5).all() and (trunc["n_sequences"] == 110).all()


def test_cli_writes_every_table_and_figure(tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    runs, evals = write_tree(tmp_path, predictions=True)
    for i, run in enumerate(COORDS):  # learning curves come from the runs' TensorBoard scalars
        writer = SummaryWriter(str(tmp_path / "pretrain" / run / "tb"))
        for step in (10, 20, 30):
            writer.add_scalar("val_ppl", 40 - step / 2 + i, step)
            writer.add_scalar("val_aa_acc", 0.1 + step / 100, step)
        writer.close()
    published = tmp_path / "published.yaml"
    published.write_text("values:\n  - {dataset: mrfp, label: 'someone (paper X)', value: 0.8}\n")
    out = tmp_path / "out"
    argv = ["--results", str(tmp_path), "--runs", *map(str, runs), "--evals", *map(str, evals),
            "--out", str(out / "tables.csv"), "--tables-dir", str(out / "tables"), "--plots-dir", str(out / "plots"),
            "--published", str(published), "--replicates", "200"]  # fmt: skip
    assert cli.main(argv) == 0
    assert len(pd.read_csv(out / "tables.csv")) == 3 * 4 + 9 * 6
    for name in ("summary", "delta_vs_xe", "win_counts", "intrinsic", "pretrain", "truncation"):
        assert len(pd.read_csv(out / "tables" / f"{name}.csv")) > 0, name
        assert (out / "tables" / f"{name}.md").read_text().count("|") > 10, name
    svgs = {}
    for name in ("learning_curves", "task_scores", "delta_to_xe", "intrinsic"):
        assert (out / "plots" / f"{name}.png").read_bytes()[:4] == b"\x89PNG", name
        svgs[name] = (out / "plots" / f"{name}.svg").read_bytes()
        assert ET.fromstring(svgs[name]).tag.endswith("svg")
    assert b"someone (paper X)" in svgs["task_scores"] and b"one pretraining seed: no interval" in svgs["delta_to_xe"]
    # figures carry no date: the same inputs give the same bytes (committed study figures do not churn)
    assert cli.main(argv) == 0
    assert all((out / "plots" / f"{name}.svg").read_bytes() == svg for name, svg in svgs.items())


def test_artifact_folder_holds_the_context(tmp_path: Path) -> None:
    runs, evals = write_tree(tmp_path)
    argv = ["--results", str(tmp_path), "--runs", *map(str, runs), "--evals", *map(str, evals),
            "--out", str(tmp_path / "tables.csv"), "--tables-dir", str(tmp_path / "tables")]  # fmt: skip
    assert cli.main(argv) == 0
    art = tmp_path / "art"
    config = {"results": "x", "grids": {"g": {"arch": ["gpt2"]}}}
    assert cli.main(["--results", str(tmp_path), "--artifact", str(art), "--workflow-config", json.dumps(config)]) == 0
    assert (art / "tables.csv").read_text() == (tmp_path / "tables.csv").read_text()
    assert (art / "tables" / "summary.md").is_file()

    assert yaml.safe_load((art / "config.yaml").read_text()) == config
    assert "torch " in (art / "versions.txt").read_text() and "git " in (art / "versions.txt").read_text()
    assert json.loads((art / "machine.json").read_text())["logical_cores"] >= 1
    stages = pd.read_csv(art / "stage_times.csv").set_index("stage")
    assert stages.loc["pretrain", "jobs"] == 3 and stages.loc["pretrain", "job_seconds"] == 37.5
    assert stages.loc["downstream", "jobs"] == 9


def test_read_scalars_from_tensorboard(tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path / "run" / "tb"))
    for step, value in enumerate([40.0, 30.0, 25.0]):
        writer.add_scalar("val_ppl", value, step)
    writer.add_scalar("train_loss", 2.8, 2)
    writer.close()
    series = gather.read_scalars(tmp_path / "run" / "tb")
    assert series == {"val_ppl": [(0, 40.0), (1, 30.0), (2, 25.0)]}


def test_runs_made_outside_the_workflow_are_named_by_their_config(tmp_path: Path) -> None:
    """The seed's `--output OUT/gpt2/mlm` and `OUT/mamba/mlm`: two runs (not one called "mlm"), with arch, loss and
    size read off each run's resolved config.yaml; their evaluations find them through config.run_dir."""

    configs = {
        "gpt2/mlm": {"model_name": "gpt2", "mode": "mlm", "loss": "HXE", "hxe_alpha": 0.4, "hierarchy": "random",
                     "seed": 3, "preset": "gpt2-50m", "derived": {"tokenizer": "3mer"}},
        "mamba/mlm": {"model_name": "mamba", "mode": "mlm", "loss": "XE", "hxe_alpha": 0.2, "hierarchy": "true",
                      "seed": 0, "preset": None, "derived": {"tokenizer": "3mer",
                                                               "model": {"num_layers": 20, "hidden_size": 256}}},
    }  # fmt: skip
    runs, evals = [], []
    for name, config in configs.items():
        run_dir = tmp_path / "out" / name
        run_dir.mkdir(parents=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
        (run_dir / "metrics.json").write_text(json.dumps({"test_ppl": 3.0}))
        runs.append(run_dir)
        ev = tmp_path / f"{name.replace('/', '-')}-mrfp.json"
        ev.write_text(json.dumps({"run": "mlm", "task": "mrfp", "seed": 0, "metrics": {"spearman": 0.5},
                                  "config": {"run_dir": str(run_dir)}}))  # fmt: skip
        evals.append(ev)
    table = gather.gather(tmp_path, runs, evals)
    assert sorted(table["run"].unique()) == ["gpt2/mlm", "mamba/mlm"]
    info = table.drop_duplicates("run").set_index("run")
    assert tuple(info.loc["gpt2/mlm", ["arch", "loss_id", "size", "hierarchy", "pretrain_seed"]]) == (
        "gpt2", "hxe0.4rand", "50m", "random", 3)  # fmt: skip
    assert tuple(info.loc["mamba/mlm", ["arch", "loss_id", "size"]]) == ("mamba", "xe", "20x256")
    assert pd.isna(info.loc["mamba/mlm", "hxe_alpha"])  # an XE run has no alpha, whatever its config says
    evals_of = table[table["task"] == "mrfp"].set_index("run")["value"]
    assert sorted(evals_of.index) == ["gpt2/mlm", "mamba/mlm"]
