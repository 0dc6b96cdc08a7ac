"""helm tables on a small results tree laid out as the workflow writes it (values chosen by hand)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import pytest

from helm import tables

COORDS = {
    "gpt2-mlm-tiny-xe-3mer": {"loss_id": "xe", "loss": "XE", "hxe_alpha": None},
    "gpt2-mlm-tiny-hxe0.4-3mer": {"loss_id": "hxe0.4", "loss": "HXE", "hxe_alpha": 0.4},
}
# (run, seed) -> spearman of the mrfp probe
SPEARMAN = {
    ("gpt2-mlm-tiny-xe-3mer", 0): 0.50,
    ("gpt2-mlm-tiny-xe-3mer", 1): 0.40,
    ("gpt2-mlm-tiny-hxe0.4-3mer", 0): 0.70,
    ("gpt2-mlm-tiny-hxe0.4-3mer", 1): 0.60,
}


def write_tree(root: Path) -> tuple[list[Path], list[Path]]:
    runs, evals = [], []
    for run, extra in COORDS.items():
        run_dir = root / "pretrain" / run
        run_dir.mkdir(parents=True)
        grid = {"run": run, "grid": "smoke", "arch": "gpt2", "mode": "mlm", "size": "tiny", "preset": "gpt2-tiny",
                "hierarchy": "true", "soft_labels_beta": None, "tokenizer": "3mer", **extra}  # fmt: skip
        (run_dir / "grid.json").write_text(json.dumps(grid))
        (run_dir / "metrics.json").write_text(json.dumps({"val_loss": 3.5, "test": {"acc": 0.25}, "note": "x"}))
        (run_dir / "config.yaml").write_text("seed: 42\n")
        bench = root / "benchmarks" / "pretrain" / f"{run}.tsv"
        bench.parent.mkdir(parents=True, exist_ok=True)
        bench.write_text("s\th:m:s\tmax_rss\n12.5\t0:00:12\t300.0\n")
        runs.append(run_dir / "metrics.json")
    for (run, seed), value in SPEARMAN.items():
        path = root / "downstream" / "mRFP" / run / f"seed{seed}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"run": run, "task": "mrfp", "seed": seed,
                                    "metrics": {"spearman": value, "pearson": value / 2}, "config": {}}))  # fmt: skip
        bench = root / "benchmarks" / "downstream" / "mRFP" / run / f"seed{seed}.tsv"
        bench.parent.mkdir(parents=True, exist_ok=True)
        bench.write_text(f"s\tmax_rss\n{seed + 1.0}\t100.0\n")
        evals.append(path)
    return runs, evals


def test_long_table_has_one_row_per_run_task_seed_metric(tmp_path: Path) -> None:
    runs, evals = write_tree(tmp_path)
    table = tables.gather(tmp_path, runs, evals)
    # 2 runs x 2 numeric pretrain metrics (the string is skipped) + 4 evaluations x 2 metrics
    assert len(table) == 2 * 2 + 4 * 2
    assert not table.duplicated(["run", "task", "seed", "metric"]).any()
    assert set(tables.COORDS) <= set(table.columns)
    pre = table[table["task"] == "pretrain"]
    assert set(pre["metric"]) == {"val_loss", "test.acc"}
    assert (pre["seed"] == 42).all() and (pre["pretrain_s"] == 12.5).all()
    row = table[(table["task"] == "mRFP") & (table["seed"] == 1) & (table["metric"] == "spearman")]
    row = row[row["run"] == "gpt2-mlm-tiny-hxe0.4-3mer"].iloc[0]
    assert row["value"] == pytest.approx(0.60) and row["loss"] == "HXE" and row["hxe_alpha"] == 0.4
    assert row["eval_s"] == 2.0 and row["eval_max_rss_mb"] == 100.0 and row["pretrain_max_rss_mb"] == 300.0


def test_pivots_and_helm_vs_xe(tmp_path: Path) -> None:
    runs, evals = write_tree(tmp_path)
    table = tables.gather(tmp_path, runs, evals)
    summary = tables.summary(table).set_index("run")
    assert summary.loc["gpt2-mlm-tiny-xe-3mer", "mRFP/spearman"] == pytest.approx(0.45)
    assert summary.loc["gpt2-mlm-tiny-hxe0.4-3mer", "mRFP/spearman n"] == 2
    versus = tables.helm_vs_xe(table)
    sp = versus[versus["metric"] == "spearman"].iloc[0]
    assert sp["loss_id"] == "hxe0.4"
    assert sp["value"] == pytest.approx(0.65) and sp["xe_value"] == pytest.approx(0.45)
    assert sp["delta"] == pytest.approx(0.20)
    pre = tables.pretrain_table(table).set_index("run")
    assert pre.loc["gpt2-mlm-tiny-xe-3mer", "val_loss"] == 3.5


def test_cli_writes_every_output(tmp_path: Path) -> None:
    runs, evals = write_tree(tmp_path)
    out = tmp_path / "out"
    argv = ["--results", str(tmp_path), "--runs", *map(str, runs), "--evals", *map(str, evals),
            "--out", str(out / "tables.csv"), "--summary", str(out / "s.csv"), "--helm-vs-xe", str(out / "h.csv"),
            "--pretrain-table", str(out / "p.csv"), "--loss-curves", str(out / "l.svg"),
            "--task-bars", str(out / "t.svg")]  # fmt: skip
    assert tables.main(argv) == 0
    assert len(pd.read_csv(out / "tables.csv")) == 12
    for svg in ("l.svg", "t.svg"):
        root = ET.parse(out / svg).getroot()
        assert root.tag.endswith("svg")
    bars = (out / "t.svg").read_text()
    assert bars.count("<rect ") >= 1 + 2  # background + one bar per run
    assert "mRFP" in bars


def test_loss_curves_from_tensorboard(tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path / "run" / "tb"))
    for step, value in enumerate([4.0, 3.0, 2.5]):
        writer.add_scalar("train_loss", value, step)
    writer.add_scalar("val_loss", 2.8, 2)
    writer.close()
    series = tables.read_scalars(tmp_path / "run" / "tb")
    assert series["train_loss"] == [(0, 4.0), (1, 3.0), (2, 2.5)]
    assert series["val_loss"] == [(2, pytest.approx(2.8))]
    svg = tables.loss_curves_svg({"run": series})
    assert svg.count("<polyline") == 2
