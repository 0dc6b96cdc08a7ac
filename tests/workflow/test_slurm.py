"""The smoke grid through a real local Slurm cluster (slow; root + Debian slurmctld/slurmd/slurm-client/munge).

The test starts munged (as user munge), slurmctld and slurmd itself, with a throw-away slurm.conf reached via
SLURM_CONF, runs snakemake with the slurm-test profile (executor plugin, job states from squeue) under
`timeout -k`, and stops the daemons it started by PID.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd
import pytest
from slurm_cluster import local_slurm, missing
from wf_utils import BIN, REPO, expected_runs, job_counts, load_config, snakemake, snakemake_env

pytestmark = pytest.mark.slow


def test_smoke_grid_on_local_slurm(tmp_path: Path, shared_data: Path) -> None:
    reason = missing()
    if reason:
        pytest.skip(reason)
    work = tmp_path / "work"
    work.mkdir()
    with local_slurm(tmp_path / "slurm") as slurm_env:
        env = snakemake_env({"HELM_DATA_MIRROR": str(shared_data)})
        env.update(SLURM_CONF=slurm_env["SLURM_CONF"], PATH=f"{BIN}{os.pathsep}{slurm_env['PATH']}")
        proc = snakemake(work, "--profile", str(REPO / "workflow/profiles/slurm-test"), env=env, timeout=1500)
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
