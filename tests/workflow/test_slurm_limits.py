"""Job sizes on a real local Slurm cluster (slow; root + Debian slurmctld/slurmd/slurm-client/munge).

A job killed at its time limit is retried once with twice the time and memory (workflow/rules/resources.smk,
Snakemake's `attempt`; the site profile's `retries: 1`), and a Slurm job gets the CPUs its rule asks for even
where they exceed the submitting machine's cores (a bare local run gets this machine's cores; `--profile slurm`
is not capped by them). 257 s on the 2-core dev machine: two 1-minute limits, mostly waiting.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from slurm_cluster import local_slurm, missing
from wf_utils import REPO, slurm_env, snakemake

pytestmark = pytest.mark.slow

# One rule sized by the workflow's own resource functions, whose job outlasts a 1-minute limit and fits in two.
SNAKEFILE = """
import os

include: "{repo}/workflow/rules/resources.smk"


rule slow:
    output:
        "done.txt",
    threads: rule_threads("default", "slow")
    resources:
        **sized_resources("default", "slow"),
    shell:
        "sleep {seconds}; echo {{resources.runtime}} {{resources.mem_mb}} {{threads}} > {{output}}"
"""
CONFIG = "resources:\n  default: {{threads: {threads}, mem_mb: 300, runtime: 1, gpu: 0}}\n"


def test_a_job_killed_at_its_time_limit_is_retried_once_with_double(tmp_path: Path, shared_data: Path) -> None:
    reason = missing()
    if reason:
        pytest.skip(reason)
    threads = (os.cpu_count() or 1) + 1  # more than the submitting machine has
    snakefile = tmp_path / "Snakefile"
    snakefile.write_text(SNAKEFILE.format(repo=REPO, seconds=75))
    (tmp_path / "c.yaml").write_text(CONFIG.format(threads=threads))
    work = tmp_path / "work"
    with local_slurm(tmp_path / "slurm", cpus=threads) as cluster:
        env = slurm_env(tmp_path, cluster, shared_data, "PARTITION=debug", site=["retries=1"])
        proc = snakemake(work, "--profile", "slurm", "-s", str(snakefile), config=str(tmp_path / "c.yaml"), env=env,
                         timeout=600)  # fmt: skip
    records = (tmp_path / "slurm" / "log" / "jobcomp.txt").read_text().splitlines()
    states = [(re.search(r"JobState=(\S+)", r)[1], re.search(r"TimeLimit=(\S+)", r)[1],
               re.search(r"mem=(\d+)M", r)[1], re.search(r"ProcCnt=(\d+)", r)[1]) for r in records]  # fmt: skip
    # attempt 1: killed at 1 minute with 300 MB; attempt 2: 2 minutes and 600 MB, and it finishes
    assert states == [("TIMEOUT", "1", "300", str(threads)), ("COMPLETED", "2", "600", str(threads))], proc.stdout
    # inside its job the rule runs with the threads the node has (the jobstep's --cores all): here this machine's
    assert (work / "done.txt").read_text().split() == ["2", "600", str(min(threads, os.cpu_count() or 1))]
