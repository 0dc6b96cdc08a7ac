"""End to end on CPU (slow): one run's target, a kill mid-training and its resume, then the whole smoke grid.

One temporary working directory is shared by every test here (session fixture), in this order:
1. `snakemake <one run>/metrics.json` with a longer training (kill.yaml), killed (SIGKILL to the process
   group) once the run has written checkpoints/last.ckpt, then rerun: it must finish from that checkpoint and
   only that run's chain may have run;
2. the smoke grid (config/smoke.yaml) end to end -> results/tables.csv; the killed run is already finished,
   and its different settings must not relaunch it (rerun-triggers).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml
from wf_utils import REPO, SNAKEMAKE, expected_runs, job_counts, load_config, snakemake, snakemake_env

pytestmark = pytest.mark.slow
PROFILE = str(REPO / "workflow/profiles/default")
KILLED = "gpt2-clm-tiny-xe-3mer"


@pytest.fixture(scope="session")
def smoke(tmp_path_factory, shared_data) -> dict:
    work = tmp_path_factory.mktemp("smoke")
    env = snakemake_env({"HELM_DATA_MIRROR": str(shared_data)})
    info: dict = {"work": work}

    # 1. one run, killed mid-training, then resumed
    cfg = load_config("config/smoke.yaml")
    cfg["pretrain"]["args"].update({"max-steps": 150, "epochs": 10, "checkpoint_every_n_steps": 10})
    kill_cfg = work / "kill.yaml"
    kill_cfg.write_text(yaml.safe_dump(cfg))
    target = f"results/pretrain/{KILLED}/metrics.json"
    cmd = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(work), "--configfile", str(kill_cfg),
           "--profile", PROFILE, target]  # fmt: skip
    ckpt = work / "results" / "pretrain" / KILLED / "checkpoints" / "last.ckpt"
    with open(work / "first.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 600
        while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(0.5)  # let the checkpoint file be completely written
        killed_while_running = proc.poll() is None
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    info["first_log"] = (work / "first.log").read_text()
    info["killed_while_running"] = killed_while_running
    info["ckpt_after_kill"] = ckpt.exists()
    info["finished_after_kill"] = (work / target).exists()
    snakemake(work, "--unlock", config=str(kill_cfg), env=env)
    second = snakemake(work, "--profile", PROFILE, target, config=str(kill_cfg), env=env, timeout=900)
    info["second_log"] = second.stdout + second.stderr
    info["pretrain_dirs"] = sorted(p.name for p in (work / "results" / "pretrain").iterdir())
    info["downstream_exists"] = (work / "results" / "downstream").exists()
    info["killed_metrics_mtime"] = (work / target).stat().st_mtime

    # 2. the whole smoke grid
    start = time.perf_counter()
    full = snakemake(work, "--profile", PROFILE, env=env, timeout=1500)
    info["smoke_s"] = time.perf_counter() - start
    info["full_log"] = full.stdout + full.stderr
    print(f"smoke grid wall time (after one run was done): {info['smoke_s']:.0f} s")
    info["env"] = env
    return info


def test_kill_mid_training_then_rerun_resumes_from_last_ckpt(smoke: dict) -> None:
    assert smoke["killed_while_running"], "the run finished before it could be killed"
    assert smoke["ckpt_after_kill"] and not smoke["finished_after_kill"]
    metrics = json.loads((smoke["work"] / "results" / "pretrain" / KILLED / "metrics.json").read_text())
    assert metrics["resumed_from"] and metrics["resumed_from"].endswith("last.ckpt")
    assert metrics["steps"] == 150


def test_one_run_target_runs_only_its_chain(smoke: dict) -> None:
    assert job_counts(smoke["first_log"]) == {"fetch": 1, "prepare_unit": 1, "merge_units": 1, "pretrain": 1}
    assert job_counts(smoke["second_log"]) == {"pretrain": 1}
    assert smoke["pretrain_dirs"] == [KILLED]
    assert not smoke["downstream_exists"]


def test_smoke_grid_tables(smoke: dict) -> None:
    config = load_config("config/smoke.yaml")
    runs = {"-".join(p) for p in expected_runs(config)}
    table = pd.read_csv(smoke["work"] / "results" / "tables.csv")
    assert len(table) > 0
    assert set(table[table["task"] == "pretrain"]["run"]) == runs
    assert {"XE", "HXE"} <= set(table["loss"].dropna())
    for col in ("run", "task", "seed", "metric", "value", "arch", "mode", "size", "loss_id", "tokenizer"):
        assert col in table.columns
    for task, spec in config["downstream"]["tasks"].items():
        modes = spec.get("modes") or (["clm"] if spec["command"] == "generate" else ["mlm", "clm"])
        blocks = [config["grids"][name] for name in spec.get("grids", config["grids"])]
        want = {"-".join(p) for p in expected_runs({"grids": dict(enumerate(blocks))}) if p[1] in modes}
        assert set(table[(table["task"] == task) & table["loss"].notna()]["run"]) == want, task
    evals = table[table["task"] != "pretrain"]
    assert evals["eval_s"].notna().all()
    assert table[table["run"].isin(runs)]["pretrain_s"].notna().all()
    for name in ("summary.csv", "delta_vs_xe.csv", "intrinsic.csv", "pretrain.csv", "truncation.csv"):
        assert len(pd.read_csv(smoke["work"] / "results" / "tables" / name)) > 0, name
    for name in ("learning_curves", "task_scores", "delta_to_xe", "intrinsic"):
        for ext in ("png", "svg"):
            assert (smoke["work"] / "results" / "plots" / f"{name}.{ext}").stat().st_size > 1000, name


def test_smoke_design_rows(smoke: dict) -> None:
    """config `design`: every codon run designed for every protein of the set; each design translates exactly."""
    from helm.codons import translate
    from helm.design.protein import read_fasta_proteins

    config = load_config("config/smoke.yaml")
    proteins = dict(read_fasta_proteins(REPO / config["design"]["protein_sets"]["smoke"]))
    codon_runs = {"-".join(p) for p in expected_runs(config) if p[4] == "3mer"}
    table = pd.read_csv(smoke["work"] / "results" / "tables" / "design.csv")
    assert set(table["run"]) == codon_runs and set(table["protein_set"]) == {"smoke"}
    model = table[table["source"] == "model"]
    assert (model.groupby(["run", "protein"]).size() == 2).all()  # args: n 2
    assert {"most_frequent", "random", "dnachisel"} <= set(table["method"])
    for run in codon_runs:
        record = json.loads((smoke["work"] / "results" / "design" / run / "smoke" / "designs.json").read_text())
        for d in record["designs"]:
            assert translate(d["cds"]) == proteins[d["protein"]]


def test_finished_run_is_not_relaunched_by_changed_settings(smoke: dict) -> None:
    path = smoke["work"] / "results" / "pretrain" / KILLED / "metrics.json"
    assert path.stat().st_mtime == smoke["killed_metrics_mtime"]
    assert job_counts(smoke["full_log"])["pretrain"] == len(expected_runs(load_config("config/smoke.yaml"))) - 1
    dry = snakemake(smoke["work"], "-n", "--profile", PROFILE, env=smoke["env"])
    assert "Nothing to be done" in dry.stdout + dry.stderr


def test_one_deleted_result_is_rebuilt_alone(smoke: dict) -> None:
    """Asking for one evaluation reruns only that job; the tables then pick up the newer file."""
    work = smoke["work"]
    victim = work / "results" / "downstream" / "mRFP" / KILLED / "seed0.json"
    victim.unlink()
    target = str(victim.relative_to(work))
    proc = snakemake(work, "--profile", PROFILE, target, env=smoke["env"])
    assert job_counts(proc.stdout + proc.stderr) == {"probe": 1}
    assert victim.exists()
    proc = snakemake(work, "--profile", PROFILE, env=smoke["env"])
    assert job_counts(proc.stdout + proc.stderr) == {"tables": 1, "all": 1}


def test_report_html(smoke: dict) -> None:
    work = smoke["work"]
    snakemake(work, "--report", str(work / "report.html"), env=smoke["env"])
    text = (work / "report.html").read_text(errors="replace")
    assert "learning_curves.png" in text and "task_scores.png" in text and "delta_vs_xe.csv" in text
    assert "tables.csv" in text and "paired t interval" in text  # a caption made it into the report


def test_make_rerun_retrains_one_run_and_redoes_only_what_read_it(smoke: dict) -> None:
    """README's rerun recipe (`make rerun RUN=<id>`, workflow/scripts/rerun.py): deleting the run folder alone is
    "Nothing to be done"; the recipe retrains that run from scratch and re-executes exactly its dependents."""
    work, env = smoke["work"], smoke["env"]
    run = "gpt2-mlm-tiny-hxe0.4-3mer"
    config = load_config("config/smoke.yaml")
    want = {"pretrain": 1, "tables": 1, "all": 1}
    for spec in config["downstream"]["tasks"].values():
        modes = spec.get("modes") or (["clm"] if spec["command"] == "generate" else ["mlm", "clm"])
        blocks = [config["grids"][name] for name in spec.get("grids", config["grids"])]
        if run in {"-".join(p) for p in expected_runs({"grids": dict(enumerate(blocks))}) if p[1] in modes}:
            want[spec["command"]] = want.get(spec["command"], 0) + len(config["downstream"]["seeds"])
            if spec["command"] == "probe":
                want["embed"] = want.get("embed", 0) + 1  # its features, embedded once per run and dataset
    design = config.get("design") or {}
    assert "grids" not in design  # the smoke config designs with every codon run
    if design.get("protein_sets") and run.endswith("-3mer"):  # a codon run designs for every protein set again
        want |= {"design": len(design["protein_sets"]), "design_table": 1}
    others = {p.name: (p / "metrics.json").stat().st_mtime for p in (work / "results" / "pretrain").iterdir()}
    rerun = [sys.executable, str(REPO / "workflow/scripts/rerun.py"), "--run", run, "--directory", str(work),
             "--profile", PROFILE, "--configfile", str(REPO / "config/smoke.yaml")]  # fmt: skip
    dry = subprocess.run([*rerun, "-n"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert dry.returncode == 0, dry.stderr
    assert job_counts(dry.stdout + dry.stderr) == want
    assert (work / "results" / "pretrain" / run / "metrics.json").exists()  # a dry run moves nothing
    real = subprocess.run(rerun, cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)
    assert real.returncode == 0, real.stderr[-3000:]
    assert job_counts(real.stdout + real.stderr) == want
    (old,) = (work / "results" / "attic" / "pretrain").glob(f"{run}-*")  # moved aside, not deleted
    assert (old / "metrics.json").exists() and (old / "checkpoints" / "last.ckpt").exists()
    fresh = json.loads((work / "results" / "pretrain" / run / "metrics.json").read_text())
    assert not fresh["resumed_from"]  # from scratch, not from the old last.ckpt
    for name, mtime in others.items():
        if name != run:
            assert (work / "results" / "pretrain" / name / "metrics.json").stat().st_mtime == mtime, name
    bad = subprocess.run([*rerun[:3], "no-such-run", *rerun[4:]], cwd=REPO, env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "no such run" in bad.stderr
