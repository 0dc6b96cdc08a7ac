"""The laptop study's configuration: the full config plans what its header promises (dry run), the GPU scale-up
plans too, and a miniature of it (same blocks, tasks, heads, statistics and artifact; tiny models, few steps) runs
end to end twice: the second run must give the same tables (single-threaded CPU jobs are deterministic)."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import yaml
from wf_utils import REPO, job_counts, load_config, snakemake, snakemake_env

PROFILE = str(REPO / "workflow/profiles/default")
TIMING = ("time", "per_s", "seconds", "max_rss")


def test_study_config_plans_the_preregistered_study():
    proc = snakemake(REPO, "-n", "--quiet", "rules", config="config/study.yaml")
    counts = job_counts(proc.stdout + proc.stderr)
    config = load_config("config/study.yaml")
    runs = sum(len(b["loss"]) * len(b["seed"]) for b in config["grids"].values())
    assert runs == 8 and counts["pretrain"] == runs
    tasks = config["downstream"]["tasks"]
    seeds = len(config["downstream"]["seeds"])
    probes = [t for t in tasks.values() if t["command"] == "probe"]
    assert counts["probe"] == len(probes) * runs * seeds
    assert counts["embed"] == len({t["dataset"] for t in probes}) * runs  # once per run and dataset
    assert {t["dataset"] for t in probes if t["args"]["head"] == "ridge"} == {
        "mrfp", "tc_riboswitch", "cov_degradation", "icodon"}  # fmt: skip
    # the pre-registered design (docs/PROTOCOL.md "Study"): the headline pair, paired pretraining seeds 0-3
    assert config["grids"]["paired"]["loss"] == ["xe", "hxe0.2"] and config["grids"]["paired"]["seed"] == [0, 1, 2, 3]
    assert {t["dataset"] for t in probes if t["args"]["head"] == "textcnn"} == {"mrfp", "tc_riboswitch",
                                                                               "cov_degradation"}  # fmt: skip
    assert counts["artifact"] == 1 and config["report"]["artifact"] == "docs/results/study"


def test_gpu_study_config_plans_the_same_study_at_scale():
    proc = snakemake(REPO, "-n", "--quiet", "rules", config="config/study-gpu.yaml")
    counts = job_counts(proc.stdout + proc.stderr)
    gpu, cpu = load_config("config/study-gpu.yaml"), load_config("config/study.yaml")
    assert counts["pretrain"] == 8 and gpu["pretrain"]["args"]["max_seq_len"] == 444
    assert gpu["downstream"]["tasks"].keys() == cpu["downstream"]["tasks"].keys()
    assert gpu["resources"]["pretrain"]["gpu"] == 1 and gpu["pretrain"]["args"]["accelerator"] == "gpu"
    from helm.models import count_parameters, get_preset

    sizes = {b["size"][0] for b in gpu["grids"].values()}
    for size in sizes:
        assert 10e6 <= count_parameters(f"gpt2-{size}", vocab_size=70) <= 50e6, get_preset(f"gpt2-{size}")


def miniature(work, artifact) -> dict:
    """config/study.yaml with tiny models and budgets; the structure (blocks, seeds axis, heads, baselines,
    clustering, report and artifact) is kept."""
    config = load_config("config/study.yaml")
    config["results"] = "results"
    paired = config["grids"]["paired"]
    config["losses"]["hxe0.4rand"] = {"loss": "HXE", "hxe_alpha": 0.4, "hierarchy": "random"}
    config["grids"] = {  # two paired seeds, and a one-seed loss (a comparison without an interval)
        "paired": {**paired, "size": ["tiny"], "seed": [0, 1]},
        "one_seed": {**paired, "size": ["tiny"], "loss": ["hxe0.4rand"], "seed": [0]},
    }
    config["pretrain"]["args"].update({"batch_size": 16, "max_seq_len": 160, "max-steps": 20, "num_samples": 480,
                                       "limit_val_batches": 2, "limit_test_batches": 2})  # fmt: skip
    tasks = config["downstream"]["tasks"]
    textcnn = {**tasks["mRFP"]["args"], "epochs": 2, "patience": 2, "max-train": 100}
    config["downstream"] = {
        "seeds": [0, 1],
        "tasks": {
            "mRFP": {**tasks["mRFP"], "args": textcnn},
            "TcRibo_linear": tasks["TcRibo_linear"],
            "iCodon_linear": {**tasks["iCodon_linear"], "args": {**tasks["iCodon_linear"]["args"], "max-rows": 300}},
            "clustering": {**tasks["clustering"], "args": {"num-proteins": 4, "variants": 3}},
        },
        "baselines": ["kmer-ridge"],
        "baseline_args": {"epochs": 2},
    }
    config["report"] = {**config["report"], "replicates": 200, "artifact": str(artifact)}
    path = work / "mini-study.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return {"path": path, "config": config}


def comparable(table: pd.DataFrame) -> pd.DataFrame:
    """tables.csv without wall times and memory (the only things a rerun may change)."""
    table = table[~table["metric"].str.contains("|".join(TIMING))]
    return table.drop(columns=[c for c in table.columns if any(t in c for t in ("_s", "rss"))])


@pytest.mark.slow
def test_study_miniature_end_to_end_and_rerun_gives_the_same_tables(tmp_path_factory, shared_data):
    env = snakemake_env({"HELM_DATA_MIRROR": str(shared_data)})
    tables = []
    for attempt in range(2):
        work = tmp_path_factory.mktemp(f"study{attempt}")
        mini = miniature(work, work / "docs" / "results" / "study")
        snakemake(work, "--profile", PROFILE, "--cores", "2", config=str(mini["path"]), env=env, timeout=1500)
        art = work / "docs" / "results" / "study"
        tables.append(pd.read_csv(art / "tables.csv"))
    runs = ["gpt2-mlm-tiny-xe-3mer-s0", "gpt2-mlm-tiny-xe-3mer-s1", "gpt2-mlm-tiny-hxe0.2-3mer-s0",
            "gpt2-mlm-tiny-hxe0.2-3mer-s1", "gpt2-mlm-tiny-hxe0.4rand-3mer-s0"]  # fmt: skip
    table = tables[-1]
    assert set(table[table["task"] == "pretrain"]["run"]) == set(runs)
    assert set(table["task"]) == {"pretrain", "mRFP", "TcRibo_linear", "iCodon_linear", "clustering"}
    # the artifact: tables, figures and the context of the run
    for name in ("summary", "delta_vs_xe", "win_counts", "intrinsic", "pretrain", "truncation"):
        assert (art / "tables" / f"{name}.md").is_file() and (art / "tables" / f"{name}.csv").is_file(), name
    for name in ("learning_curves", "task_scores", "delta_to_xe", "intrinsic"):
        assert (art / "figures" / f"{name}.png").stat().st_size > 5000, name
        assert (art / "figures" / f"{name}.svg").is_file(), name
    assert yaml.safe_load((art / "config.yaml").read_text())["grids"] == mini["config"]["grids"]
    assert json.loads((art / "machine.json").read_text())["logical_cores"] >= 1
    stages = pd.read_csv(art / "stage_times.csv").set_index("stage")
    assert {"data", "pretrain", "embed", "downstream"} <= set(stages.index)
    assert stages.loc["pretrain", "jobs"] == 5 and stages.loc["embed", "jobs"] == 3 * 5
    # the statistics: every loss against XE on every task; an interval over pretraining seeds only where both
    # sides have two, the test-row spread wherever predictions were saved
    delta = pd.read_csv(art / "tables" / "delta_vs_xe.csv")
    assert set(delta["loss"]) == {"hxe0.2", "hxe0.4rand"}
    assert set(delta["task"]) == {"mRFP", "TcRibo_linear", "iCodon_linear", "clustering"}
    paired, one = delta[delta["loss"] == "hxe0.2"], delta[delta["loss"] == "hxe0.4rand"]
    assert (paired["pretrain seeds"] == "2 vs 2").all() and (one["pretrain seeds"] == "1 vs 2").all()
    assert (
        paired["method"].isin(["paired t over 2 pretraining seeds", "n/a: no spread between pretraining seeds"]).all()
    )
    assert (one["verdict"] == "n/a: one pretraining seed").all() and one["low"].isna().all()
    spearman = delta[delta["metric"] == "spearman"]
    assert all(math.isfinite(v) for v in spearman["rows low"]) and (spearman["rows low"] <= spearman["rows high"]).all()
    assert (art / "tables" / "power.md").is_file()
    summary = pd.read_csv(art / "tables" / "summary.csv")
    assert set(summary["run"]) == {*runs, "baseline-kmer-ridge", "baseline-onehot-textcnn"}  # mRFP names its own
    # severity and amino-acid accuracy of the random-hierarchy run are on the true tree (and its own, named apart)
    pre = table[(table["task"] == "pretrain") & (table["run"] == runs[-1])]
    assert {"test_mistake_severity", "test_mistake_severity_train_tree"} <= set(pre["metric"])
    # a rerun from scratch gives the same numbers: every metric except wall times
    pd.testing.assert_frame_equal(comparable(tables[0]), comparable(tables[1]), check_exact=False, rtol=1e-6)
