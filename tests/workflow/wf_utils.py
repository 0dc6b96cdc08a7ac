"""Helpers of the workflow tests: run the repository's Snakefile in a temporary working directory."""

from __future__ import annotations

import itertools
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SNAKEMAKE = str(BIN / "snakemake")


def snakemake_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONUNBUFFERED": "1"}
    env.update(extra or {})
    return env


def snakemake(workdir: Path, *args: str, config: str = "config/smoke.yaml", timeout: float = 900, env=None,
              check: bool = True) -> subprocess.CompletedProcess:  # fmt: skip
    """`snakemake -s REPO/Snakefile --directory WORKDIR --configfile REPO/CONFIG ARGS` (output captured)."""
    cmd = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(workdir)]
    if config:
        cmd += ["--configfile", str(REPO / config)]
    cmd += list(args)
    # timeout -k: SIGTERM makes snakemake wait for running jobs; SIGKILL follows after 10 s
    proc = subprocess.run(["timeout", "-k", "10", str(int(timeout)), *cmd], cwd=REPO, env=env or snakemake_env(),
                          capture_output=True, text=True)  # fmt: skip
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout[-6000:]}"
                             f"\n{proc.stderr[-6000:]}")  # fmt: skip
    return proc


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a snakemake run or dry run: rule -> count."""
    counts: dict[str, int] = {}
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if line.strip() == "Job stats:":
            for row in lines[i + 3 :]:
                match = re.fullmatch(r"(\S+)\s+(\d+)", row.strip())
                if not match:
                    break
                counts[match.group(1)] = int(match.group(2))
            break
    counts.pop("total", None)
    return counts


def requests(output: str) -> dict[str, dict]:
    """The request of every training job a dry run (-p) lists, as the job writes it before `helm train --config`
    reads it (workflow/rules/pretrain.smk: printf '%s' '<YAML>' > <file> && ... helm train --config <file>):
    request file -> its YAML."""
    found = {}
    for part in output.split("printf '%s' ")[1:]:
        lexer = shlex.shlex(part, posix=True)
        lexer.whitespace_split = True
        text, redirect, file = lexer.get_token(), lexer.get_token(), lexer.get_token()
        assert redirect == ">" and f"helm train --config {shlex.quote(file)}" in part, part[:2000]
        found[file] = yaml.safe_load(text)
    return found


def expected_runs(config: dict) -> set[tuple[str, str, str, str, str]]:
    """The grid points of a config, computed straight from the YAML: union of every block's product."""
    points = set()
    for block in config["grids"].values():
        points |= set(itertools.product(block["arch"], block["mode"], block["size"], block["loss"], block["tokenizer"]))
    return points


def load_config(name: str) -> dict:
    return yaml.safe_load((REPO / name).read_text())


def slurm_env(tmp_path: Path, cluster: dict[str, str], shared_data: Path, *make_args: str,
              site: list[str] | tuple[str, ...] = ()) -> dict[str, str]:  # fmt: skip
    """Client environment of a local cluster (slurm_cluster.py) with the site profile installed as a user would
    (`make slurm-profile PARTITION=debug` or MAKE_ARGS), in a temporary HOME: this cluster has no slurmdbd (sacct
    fails: states from squeue), four job slots and no retries unless SITE (profile KEY=VALUE) says otherwise."""
    env = snakemake_env({"HELM_DATA_MIRROR": str(shared_data), "HOME": str(tmp_path / "home")})
    env.update(SLURM_CONF=cluster["SLURM_CONF"], PATH=f"{BIN}{os.pathsep}{cluster['PATH']}")
    env.pop("XDG_CONFIG_HOME", None)
    settings = ["slurm-status-command=squeue", "slurm-init-seconds-before-status-checks=5",
                "seconds-between-status-checks=5", "latency-wait=10", "jobs=4", "retries=0", *site]  # fmt: skip
    make = ["make", "-s", "slurm-profile", *(make_args or ["PARTITION=debug"]), f"SLURM_SET={' '.join(settings)}"]
    subprocess.run(make, cwd=REPO, env=env, check=True)
    return env
