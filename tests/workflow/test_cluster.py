"""First contact with a cluster (issue 24): sources checked before anything runs, the committed OAS units sheet,
one-line errors for local GPU runs, the site profile's two partitions, and the plan (jobs, GPU-hours, CPU-hours)."""

from __future__ import annotations

import csv
import gzip
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from wf_utils import REPO, expected_runs, load_config, snakemake, snakemake_env

from helm.fetch import read_units

SHEET = REPO / "config" / "oas_parameswaran2013_units.tsv"
OAS = "pretrain/oas_parameswaran2013_heavy_100k.csv.gz"
PLAN = [sys.executable, str(REPO / "workflow/scripts/plan.py")]


def write_config(tmp_path: Path, config: dict, name: str = "c.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_units_sheet_names_the_study_units_and_is_not_fetched_from_here(shared_data: Path) -> None:
    units = read_units(SHEET)
    with gzip.open(shared_data / OAS, "rt") as fh:
        runs = {row["Run"] for row in csv.DictReader(fh)}
    # the 127 units of the study are exactly the runs the derived mirror file was drawn from (MANIFEST.md)
    assert {re.search(r"(SRR\d+)_Heavy_Bulk", u["url"]).group(1) for u in units} == runs
    assert all(u["format"] == "oas" and u["sha256"] is None for u in units)
    assert "NOT FETCHED FROM HERE" in SHEET.read_text() and not Path(f"{SHEET}.lock").exists()


def test_sheet_comment_lines_keep_the_file_line_numbers_in_errors(tmp_path: Path) -> None:
    sheet = tmp_path / "u.tsv"
    sheet.write_text(
        "# a note\n# another\nname\turl\tsha256\tformat\nok\thttp://x/a.csv.gz\t\toas\nb-d\thttp://x/b\t\toas\n"
    )
    with pytest.raises(ValueError, match=r"line 5: unit name 'b-d'"):
        read_units(sheet)


def test_sourceless_files_stop_the_dry_run_with_one_line(tmp_path: Path) -> None:
    """Neither a url nor a mirror copy: the dry run ends (exit 2) before any job, naming each file and the fix."""
    config = load_config("config/smoke.yaml")
    (tmp_path / "empty").mkdir()
    config["data"]["mirror"] = str(tmp_path / "empty")
    config["downstream"]["tasks"]["iCodon"] = {"command": "probe", "dataset": "icodon"}
    env = snakemake_env()
    env.pop("HELM_DATA_MIRROR", None)
    proc = snakemake(tmp_path / "w", "-n", config=write_config(tmp_path, config), env=env, check=False)
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if "error" in line.lower()]
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(errors) == 1 and "Traceback" not in proc.stderr
    # the unit (url null) and iCodon (url null) have no source; mRFP has a url, so it is not named
    assert "oas_parameswaran2013_heavy_100k.csv.gz (data.pretrain unit oas_parameswaran2013)" in errors[0]
    assert "iCodon_mRNA_stability_testing.csv.gz (dataset icodon of task iCodon)" in errors[0]
    assert "mRFP" not in errors[0] and "HELM_DATA_MIRROR" in errors[0]
    assert not (tmp_path / "w" / "results").exists()


def test_a_target_that_needs_no_sourceless_file_still_plans(tmp_path: Path, shared_data: Path) -> None:
    """Only what the targets need is checked: iCodon without a source does not stop a pretraining target."""
    config = load_config("config/smoke.yaml")
    config["data"]["mirror"] = str(shared_data / "pretrain")  # holds the unit, not iCodon
    config["downstream"]["tasks"]["iCodon"] = {"command": "probe", "dataset": "icodon"}
    env = snakemake_env()
    env.pop("HELM_DATA_MIRROR", None)
    target = "results/pretrain/gpt2-mlm-tiny-xe-3mer/metrics.json"
    proc = snakemake(tmp_path / "w", "-n", target, "-q", "rules", config=write_config(tmp_path, config), env=env)
    assert "pretrain" in proc.stdout


def test_local_gpu_jobs_without_declared_gpus_fail_with_one_line(tmp_path: Path) -> None:
    """`snakemake <target>` (no profile) on a grid whose jobs ask for GPUs: one line, exit 2, nothing started."""
    config = load_config("config/smoke.yaml")
    config["resources"]["pretrain"]["gpu"] = 1
    path = write_config(tmp_path, config)
    target = "results/pretrain/gpt2-mlm-tiny-xe-3mer/metrics.json"
    proc = snakemake(tmp_path / "w", "--cores", "1", target, config=path, check=False)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("helm workflow: error:")]
    assert len(lines) == 1 and "--profile slurm" in lines[0] and "--resources gpu=N" in lines[0]
    assert not (tmp_path / "w" / "results" / "raw").exists()


def test_site_profile_with_a_cpu_partition_writes_the_partitions_file(tmp_path: Path) -> None:
    env = {**snakemake_env(), "HOME": str(tmp_path / "home")}
    env.pop("XDG_CONFIG_HOME", None)
    make = ["make", "-s", "slurm-profile", "PARTITION=gpu-a100", "CPU_PARTITION=cpu", "GPUS_PER_NODE=4"]
    subprocess.run(make, cwd=REPO, env=env, check=True, capture_output=True, text=True)
    folder = tmp_path / "home" / ".config" / "snakemake" / "slurm"
    profile = yaml.safe_load((folder / "config.v8+.yaml").read_text())
    assert profile["slurm-partition-config"] == str(folder / "partitions.yaml")
    assert "default-resources" not in profile  # no partition forced on every job: the plugin picks per job
    parts = yaml.safe_load((folder / "partitions.yaml").read_text())["partitions"]
    assert parts == {"cpu": {"max_gpu": 0}, "gpu-a100": {"max_gpu": 4}}


def plan_rows(output: str) -> dict[str, list[dict]]:
    """make plan's table: rule -> rows of {jobs, threads, gpus, mem, limit, partition, gpu_h, cpu_h}."""
    rows: dict[str, list[dict]] = {}
    for line in output.splitlines():
        cells = line.split()
        if len(cells) == 9 and cells[1].isdigit():
            rows.setdefault(cells[0], []).append({"jobs": int(cells[1]), "gpus": int(cells[3]),
                                                  "gpu_h": float(cells[7].replace(",", "")),
                                                  "limit": int(cells[5])})  # fmt: skip
    return rows


@pytest.mark.slow
def test_paper_grid_plan_through_the_slurm_profile(tmp_path: Path) -> None:
    """The paper grid's dry run with the Slurm profile: the plan is printed, CPU-only work asks for no GPU, and the
    downstream GPU reservation is at most a quarter of what one GPU x 12 h per downstream job reserved before."""
    env = {**snakemake_env(), "HOME": str(tmp_path / "home")}
    env.pop("XDG_CONFIG_HOME", None)
    make = ["make", "-s", "slurm-profile", "PARTITION=gpu", "CPU_PARTITION=cpu"]
    subprocess.run(make, cwd=REPO, env=env, check=True, capture_output=True, text=True)
    proc = subprocess.run([*PLAN, "--profile", "slurm", "--directory", str(tmp_path / "w")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=1800)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    print(out)
    assert len(out.splitlines()) < 40 and re.search(r"reserved [\d,]+ GPU-hours and [\d,]+ CPU-hours", out)
    rows = plan_rows(out)
    cpu_only = ("learn_tokenizer", "prepare_unit", "merge_units", "reference_unit", "reference_corpus", "baseline",
                "fetch", "tables")  # fmt: skip
    for rule in cpu_only:
        assert all(r["gpus"] == 0 for r in rows.get(rule, [])), rule
    # the ridge/linear heads of config.yaml are none; the TextCNN probes are GPU jobs
    assert all(r["gpus"] == 1 for r in rows["probe"])
    downstream = [r for rule in ("embed", "probe", "annotate", "cluster", "generate") for r in rows[rule]]
    jobs = sum(r["jobs"] for r in downstream)
    assert jobs == 5555
    assert sum(r["gpu_h"] for r in downstream) <= jobs * 12 / 4


def test_ridge_and_linear_heads_are_cpu_jobs_with_their_own_size(tmp_path: Path) -> None:
    """In a config whose downstream class asks for a GPU, a probe task with a ridge or linear head is a CPU job
    (default class + resources.rules.probe_cpu) and a TextCNN probe keeps its GPU (resources.rules.probe)."""
    config = load_config("config/smoke.yaml")
    config["resources"]["downstream"]["gpu"] = 1
    config["resources"]["rules"] = {"probe": {"runtime": 45}, "probe_cpu": {"runtime": 25, "threads": 3}}
    tasks = config["downstream"]["tasks"]
    tasks["mRFP_ridge"] = {"command": "probe", "dataset": "mrfp", "args": {"head": "ridge"}}
    tasks["mRFP_linear"] = {"command": "probe", "dataset": "mrfp", "args": {"head": "linear"}}
    path = write_config(tmp_path, config)
    profile = str(REPO / "workflow/profiles/slurm")
    proc = subprocess.run([*PLAN, "--directory", str(tmp_path / "w"), "--profile", profile, "--configfile", path],
                          cwd=REPO, env=snakemake_env(), capture_output=True, text=True, timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    probes = {(r["gpus"], r["limit"]): r["jobs"] for r in plan_rows(proc.stdout)["probe"]}
    n_runs = len(expected_runs(config))
    assert probes == {(1, 45): n_runs, (0, 25): 2 * n_runs}
    assert all(r["gpus"] == 1 for r in plan_rows(proc.stdout)["embed"])
