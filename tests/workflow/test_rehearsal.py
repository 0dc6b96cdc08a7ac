"""The cluster rehearsal (issue 24, point 5; slow; root + Debian slurmctld/slurmd/slurm-client/munge).

A miniature of the paper grid (config/rehearsal.yaml: every rule type, two runs) goes through a real local Slurm
cluster with two partitions (`cpu` for CPU jobs, `gpu` for the GPU-labelled pretrain and downstream jobs; the
GPUs are a count only) and the site profile a user installs (`make slurm-profile PARTITION=gpu CPU_PARTITION=cpu`),
from the repository root as README says. Once the long pretrain job has written checkpoints/last.ckpt, the
snakemake process is killed (SIGKILL: a lost login session) and that Slurm job cancelled (scancel: a preemption).
Then README's rerun command runs, and:
(a) no job that had finished is run again (their benchmark files keep their mtimes; the rerun's job count is
    exactly the unfinished jobs);
(b) the cancelled pretrain resumes from its last.ckpt (its log says so; its update count went on from the
    checkpoint's);
(c) results/tables.csv equals that of the same miniature run uninterrupted (locally, at the same time).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from slurm_cluster import local_slurm, missing
from wf_utils import REPO, SNAKEMAKE, job_counts, slurm_env, snakemake, snakemake_env

from helm import run as helm_run

pytestmark = pytest.mark.slow
CONFIG = "config/rehearsal.yaml"
KILLED = "gpt2-clm-tiny-xe-3mer"
JOBS = 23  # the miniature's jobs, `all` not counted (snakemake -n -q rules)
# what tables.csv holds that the machine measured (wall times, speed, memory), not computed from the data: the
# columns of the jobs' benchmarks and the pretrain metrics of helm train's clock
MEASURED = ("pretrain_s", "pretrain_max_rss_mb", "eval_s", "eval_max_rss_mb")
CLOCK = ("tokens_per_s", "train_time_s", "wall_time_s")
NO_BENCHMARK = ("fetch", "design", "design_table", "tables", "all")  # rules without a benchmark file
# README, "The paper grid on a cluster": the commands after snakemake was killed (the profile has rerun-incomplete)
RERUN = (["--unlock"], [])


def command(work: Path, *args: str) -> list[str]:
    return [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(work), "--configfile", str(REPO / CONFIG),
            *args]  # fmt: skip


def benchmarks(work: Path) -> dict[str, float]:
    """benchmark file -> mtime: one per finished job of every rule that is not a local rule."""
    return {str(p.relative_to(work)): p.stat().st_mtime for p in (work / "results" / "benchmarks").rglob("*.tsv")}


def queue(env: dict[str, str]) -> list[tuple[str, str]]:
    """(job id, comment) of this cluster's jobs; the slurm plugin's comment names the rule and wildcards."""
    out = subprocess.run(["squeue", "-h", "-o", "%i|%k"], env=env, capture_output=True, text=True, check=True)
    return [tuple(line.split("|", 1)) for line in out.stdout.splitlines() if line.strip()]


def wait_for(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def table(work: Path) -> pd.DataFrame:
    """tables.csv without what the machine measured (both runs have those rows: dropping them hides nothing)."""
    frame = pd.read_csv(work / "results" / "tables.csv")
    clock = frame["metric"].isin(CLOCK)
    assert set(frame[clock]["metric"]) == set(CLOCK) and frame[list(MEASURED)].notna().any().all()
    frame = frame[~clock].drop(columns=list(MEASURED))
    return frame.sort_values(["run", "task", "seed", "metric"]).reset_index(drop=True)


def test_killed_workflow_and_pretrain_job_rerun_to_the_uninterrupted_tables(tmp_path: Path, shared_data: Path) -> None:
    reason = missing()
    if reason:
        pytest.skip(reason)
    local, work = tmp_path / "local", tmp_path / "work"
    start = time.perf_counter()
    # (c)'s reference: the same miniature uninterrupted, on this machine, while the cluster runs
    local_env = snakemake_env({"HELM_DATA_MIRROR": str(shared_data)})
    local_cmd = command(local, "--profile", str(REPO / "workflow/profiles/default"), "--resources", "gpu=2")
    with open(tmp_path / "local.log", "w") as log:
        uninterrupted = subprocess.Popen(local_cmd, cwd=REPO, env=local_env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)  # fmt: skip
    run_dir = work / "results" / "pretrain" / KILLED
    ckpt = run_dir / helm_run.CHECKPOINT_DIR / helm_run.LAST_CKPT
    try:
        with local_slurm(tmp_path / "slurm", partitions=("cpu", "gpu"), gpus=2) as cluster:
            env = slurm_env(tmp_path, cluster, shared_data, "PARTITION=gpu", "CPU_PARTITION=cpu", "GPUS_PER_NODE=2")
            with open(tmp_path / "first.log", "w") as log:
                first = subprocess.Popen(command(work, "--profile", "slurm"), cwd=REPO, env=env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
                try:
                    wait_for(lambda: ckpt.exists() or first.poll() is not None, 600, f"{ckpt}")
                finally:
                    os.killpg(first.pid, signal.SIGKILL)  # snakemake and its children, not its Slurm jobs
                    first.wait()
            assert not helm_run.is_finished(run_dir), "the pretrain finished before it could be killed"
            (job,) = [i for i, comment in queue(env) if comment.startswith("rule_pretrain") and KILLED in comment]
            shown = subprocess.run(["scontrol", "show", "job", job], env=env, capture_output=True, text=True).stdout
            subprocess.run(["scancel", job], env=env, check=True)
            wait_for(lambda: not any(i == job for i, _ in queue(env)), 120, f"Slurm job {job} to end")
            killed_at = torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"]
            # the jobs the killed snakemake had submitted run to their end (README: wait, or scancel them)
            wait_for(lambda: not queue(env), 600, "the killed workflow's other Slurm jobs to end")
            done = benchmarks(work)
            # what the killed snakemake left: its lock (a plain rerun stops)
            locked = snakemake(work, "--profile", "slurm", config=CONFIG, env=env, timeout=300, check=False)
            unlock, rerun = (snakemake(work, *args, "--profile", "slurm", config=CONFIG, env=env, timeout=900)
                             for args in RERUN)  # fmt: skip
            records = (tmp_path / "slurm" / "log" / "jobcomp.txt").read_text()
    except BaseException:
        os.killpg(uninterrupted.pid, signal.SIGKILL)  # the cluster part failed: the reference is not needed
        raise
    uninterrupted.wait(timeout=900)
    print(f"rehearsal wall time: {time.perf_counter() - start:.0f} s")
    assert uninterrupted.returncode == 0, (tmp_path / "local.log").read_text()[-5000:]
    log = rerun.stdout + rerun.stderr
    first_log = (tmp_path / "first.log").read_text()

    assert locked.returncode != 0 and "Directory cannot be locked" in locked.stdout + locked.stderr
    assert "Unlocked working directory." in unlock.stdout + unlock.stderr

    # (a) finished jobs are not rerun: every benchmark file written before the rerun keeps its mtime, and each job
    # the rerun ran (of a rule with benchmarks) wrote a benchmark that did not exist: it had not finished
    assert 0 < len(done) and f"results/benchmarks/pretrain/{KILLED}.tsv" not in done
    after = benchmarks(work)
    assert {k: v for k, v in after.items() if k in done} == done
    ran = job_counts(log)
    assert sum(n for rule, n in ran.items() if rule not in NO_BENCHMARK) == len(after) - len(done)
    assert ran["pretrain"] >= 1  # which others ran depends on when the kill came (e.g. merge_units not yet submitted)
    print(f"finished before the rerun: {len(done)} jobs with benchmarks; the rerun ran {ran}")

    # (b) the cancelled pretrain resumed from its last.ckpt
    print(f"killed at update {killed_at} of 150")
    assert 0 < killed_at < 150
    text = (work / "results" / "logs" / "pretrain" / f"{KILLED}.log").read_text()
    assert f"resuming {ckpt.relative_to(work)}" in text, text[-3000:]
    metrics = helm_run.read_metrics(run_dir)
    assert metrics["resumed_from"].endswith("last.ckpt") and metrics["steps"] == 150

    # two partitions: GPU-labelled jobs on gpu (asking for a GPU), CPU jobs on cpu (Slurm's own job records)
    assert "Partition=gpu" in shown and re.search(r"TresPerJob=\S*gpu:1", shown), shown
    partition = dict(re.findall(r"JobId=(\d+) .*? Partition=(\S+)", records))
    submitted = re.findall(r"submitted with SLURM jobid (\d+) \(log: \S*/rule_(\w+)/", first_log + log)
    rules = {}
    for job_id, rule in submitted:
        rules.setdefault(rule, set()).add(partition[job_id])
    gpu_rules = {"pretrain", "embed", "probe", "annotate", "cluster", "generate", "reference_encoder", "design"}
    assert rules == {rule: {"gpu" if rule in gpu_rules else "cpu"} for rule in rules}
    assert gpu_rules | {"learn_tokenizer", "prepare_unit", "merge_units", "baseline"} <= set(rules)

    # (c) the tables equal those of the uninterrupted run (measured times and memory aside)
    pd.testing.assert_frame_equal(table(work), table(local), check_exact=True)
