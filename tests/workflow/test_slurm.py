"""The smoke grid through a real local Slurm cluster (slow; root + Debian slurmctld/slurmd/slurm-client/munge).

The test starts munged (as user munge), slurmctld and slurmd itself, with a throw-away slurm.conf reached via
SLURM_CONF, installs the site profile as a user would (`make slurm-profile`, in a temporary HOME, with this
cluster's site settings: no accounting, job states from squeue), runs `snakemake --profile slurm` from the
repository root under `timeout -k`, and stops the daemons it started by PID.
"""

from __future__ import annotations

import os
import re
import subprocess
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
        env = snakemake_env({"HELM_DATA_MIRROR": str(shared_data), "HOME": str(tmp_path / "home")})
        env.update(SLURM_CONF=slurm_env["SLURM_CONF"], PATH=f"{BIN}{os.pathsep}{slurm_env['PATH']}")
        env.pop("XDG_CONFIG_HOME", None)
        # this cluster has no slurmdbd (sacct fails: states from squeue) and four job slots
        site = ["slurm-status-command=squeue", "slurm-init-seconds-before-status-checks=5",
                "seconds-between-status-checks=5", "latency-wait=10", "jobs=4", "retries=0"]  # fmt: skip
        make = ["make", "-s", "slurm-profile", "PARTITION=debug", f"SLURM_SET={' '.join(site)}"]
        subprocess.run(make, cwd=REPO, env=env, check=True)
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
