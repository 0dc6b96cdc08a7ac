"""The mission's literal command, `snakemake results/tables.csv` (no --cores, no profile), in a copy of the
repository: it no longer ends at Snakemake's own "cores have to be specified" (workflow/rules/resources.smk gives a
bare local run this machine's cores); on the paper grid it stops with the workflow's one line that names the
working forms, and on the smoke grid it runs."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from wf_utils import REPO, SNAKEMAKE, snakemake_env

RAW = "results/raw/pretrain/oas_parameswaran2013_heavy_100k.csv.gz"


def checkout(tmp_path: Path) -> Path:
    """What the Snakefile reads, copied: the repository's root as a user's clone has it (no results yet)."""
    root = tmp_path / "repo"
    root.mkdir()
    shutil.copy(REPO / "Snakefile", root)
    for folder in ("workflow", "config", "envs"):
        shutil.copytree(REPO / folder, root / folder)
    return root


def bare(root: Path, *args: str, mirror: Path) -> subprocess.CompletedProcess:
    env = snakemake_env({"HELM_DATA_MIRROR": str(mirror)})
    return subprocess.run([SNAKEMAKE, *args], cwd=root, env=env, capture_output=True, text=True, timeout=600)


def test_bare_snakemake_on_the_paper_grid_names_the_working_forms(tmp_path: Path, shared_data: Path) -> None:
    root = checkout(tmp_path)
    proc = bare(root, "results/tables.csv", mirror=shared_data)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "cores have to be specified" not in out and "Traceback" not in out
    errors = [line for line in out.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("helm workflow: error: these jobs ask for GPUs"), out
    assert "--profile slurm" in errors[0] and "--configfile config/smoke.yaml" in errors[0]
    assert not (root / "results").exists()  # nothing ran


def test_bare_snakemake_runs_locally_on_this_machines_cores(tmp_path: Path, shared_data: Path) -> None:
    root = checkout(tmp_path)
    proc = bare(root, RAW, "--configfile", "config/smoke.yaml", mirror=shared_data)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"Provided cores: {os.cpu_count()}" in proc.stdout + proc.stderr
    assert (root / RAW).stat().st_size > 0
