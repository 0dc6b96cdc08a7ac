"""The smoke grid through a real local Slurm cluster (slow; root + Debian slurmctld/slurmd/slurm-client/munge).

The test starts munged (as user munge), slurmctld and slurmd itself, with a throw-away slurm.conf reached via
SLURM_CONF, installs the site profile as a user would (`make slurm-profile`, in a temporary HOME, with this
cluster's site settings: no accounting, job states from squeue), runs `snakemake --profile slurm` from the
repository root under `timeout -k`, and stops the daemons it started by PID.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
import yaml
from slurm_cluster import local_slurm, missing
from wf_utils import REPO, expected_runs, job_counts, load_config, slurm_env, snakemake, snakemake_env

from helm import run as helm_run

pytestmark = pytest.mark.slow


def test_smoke_grid_on_local_slurm(tmp_path: Path, shared_data: Path) -> None:
    reason = missing()
    if reason:
        pytest.skip(reason)
    work = tmp_path / "work"
    work.mkdir()
    with local_slurm(tmp_path / "slurm") as cluster:
        env = slurm_env(tmp_path, cluster, shared_data)
        proc = snakemake(work, "--profile", "slurm", env=env, timeout=1500)
    log = proc.stdout + proc.stderr
    runs = {"-".join(p) for p in expected_runs(load_config("config/smoke.yaml"))}
    assert job_counts(log)["pretrain"] == len(runs)
    # every non-local job went through sbatch and completed there
    submitted = re.findall(r"submitted with SLURM jobid (\d+) \(log: \S*/rule_(\w+)/", log)
    rules = [rule for _, rule in submitted]
    assert set(rules) >= {"prepare_unit", "merge_units", "pretrain", "probe", "generate"}
    assert rules.count("pretrain") == len(runs)
    completed = (tmp_path / "slurm" / "log" / "jobcomp.txt").read_text()
    assert completed.count("JobState=COMPLETED") >= len(submitted)
    table = pd.read_csv(work / "results" / "tables.csv")
    assert set(table[table["task"] == "pretrain"]["run"]) == runs
    assert {"XE", "HXE"} <= set(table["loss"].dropna())


def test_two_rank_ddp_pretrain_through_slurm_equals_one_process(tmp_path: Path, shared_data: Path) -> None:
    """resources.pretrain.tasks_per_node: 2 -> one Slurm job with two tasks, each a gloo DDP rank started by srun;
    with the same global batch it trains exactly what one process does."""
    reason = missing()
    if reason:
        pytest.skip(reason)
    run = "gpt2-mlm-tiny-xe-3mer"
    target = f"results/pretrain/{run}/metrics.json"
    base = load_config("config/smoke.yaml")
    base["grids"] = {
        "one": {"arch": ["gpt2"], "mode": ["mlm"], "size": ["tiny"], "loss": ["xe"], "tokenizer": ["3mer"]}
    }
    # plain SGD with a large lr: weights move by lr x gradient, so any difference in the gradient shows
    base["pretrain"]["args"].update({"max-steps": 4, "seed": 3, "opt": "momentum", "momentum": 0, "lr": 0.5,
                                     "checkpoint-hist": 1, "test": False})  # fmt: skip
    configs = {}
    for name, per_rank, ranks in (("one", 16, 1), ("two", 8, 2)):
        cfg = yaml.safe_load(yaml.safe_dump(base))
        cfg["pretrain"]["args"]["batch_size"] = per_rank
        cfg["resources"]["pretrain"].update(tasks_per_node=ranks, threads=1)
        configs[name] = tmp_path / f"{name}.yaml"
        configs[name].write_text(yaml.safe_dump(cfg))
    env = snakemake_env({"HELM_DATA_MIRROR": str(shared_data)})
    local = str(REPO / "workflow/profiles/default")
    snakemake(tmp_path / "one", "--profile", local, target, config=str(configs["one"]), env=env, timeout=900)
    with local_slurm(tmp_path / "slurm") as cluster:
        proc = snakemake(tmp_path / "two", "--profile", "slurm", target, config=str(configs["two"]),
                         env=slurm_env(tmp_path, cluster, shared_data), timeout=1200)  # fmt: skip
    assert proc.returncode == 0
    # the pretrain job held two CPUs, one per rank (Slurm's own job record)
    records = (tmp_path / "slurm" / "log" / "jobcomp.txt").read_text().splitlines()
    assert any("ProcCnt=2" in r for r in records)
    one, two = (helm_run.read_config(tmp_path / w / "results/pretrain" / run) for w in ("one", "two"))
    assert one["derived"]["global_batch"] == two["derived"]["global_batch"] == 16
    assert two["derived"]["world_size"] == 2 and one["derived"]["world_size"] == 1
    a, b = (helm_run.read_metrics(tmp_path / w / "results/pretrain" / run) for w in ("one", "two"))
    assert a["steps"] == b["steps"] == 4
    # both ranks trained: their tokens add up to the single process's (the sum over ranks is the global count)
    assert b["train_tokens"] == a["train_tokens"]
    assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-5)
