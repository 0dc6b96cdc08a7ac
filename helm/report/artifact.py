"""The artifact folder (a committed study's docs/results/ copy): tables and figures with the run's context --
the resolved workflow config, package versions, the machine, wall time per stage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from helm.files import atomic_write
from helm.report.gather import read_benchmark

if TYPE_CHECKING:
    import pandas as pd


STAGES = {"data": "prepare + merge", "pretrain": "pretraining", "embed": "frozen embeddings",
          "downstream": "downstream heads, baselines, clustering"}  # fmt: skip


def stage_times(results: Path) -> pd.DataFrame:
    """Per stage (benchmarks/<stage>/...): jobs, summed job seconds, wall span (first start to last end, from
    each benchmark file's time of writing minus its seconds) and the largest peak memory."""
    import pandas as pd

    rows = []
    for stage, label in STAGES.items():
        files = sorted((results / "benchmarks" / stage).rglob("*.tsv"))
        spans, seconds, rss = [], 0.0, []
        for f in files:
            s, m = read_benchmark(f)
            if s is None:
                continue
            end = f.stat().st_mtime
            spans.append((end - s, end))
            seconds += s
            rss.append(m or 0.0)
        if spans:
            wall = max(e for _, e in spans) - min(b for b, _ in spans)
            rows.append({"stage": stage, "what": label, "jobs": len(spans), "job_seconds": round(seconds, 1),
                         "wall_seconds": round(wall, 1), "max_rss_mb": round(max(rss), 1)})  # fmt: skip
    return pd.DataFrame(rows, columns=["stage", "what", "jobs", "job_seconds", "wall_seconds", "max_rss_mb"])


def versions() -> str:
    """Python, platform, the packages that decide the numbers, and the code's git commit."""
    import platform
    import subprocess
    from importlib import metadata

    lines = [f"python {platform.python_version()}", f"platform {platform.platform()}"]
    for pkg in ("helm-mrna", "torch", "lightning", "timm", "transformers", "tokenizers", "torchmetrics", "numpy",
                "scipy", "scikit-learn", "pandas", "matplotlib", "snakemake"):  # fmt: skip
        try:
            lines.append(f"{pkg} {metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            lines.append(f"{pkg} (not installed)")
    repo = Path(__file__).resolve().parents[2]
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True)  # fmt: skip
    if commit.returncode == 0:
        lines.append(f"git {commit.stdout.strip()}" + (" (uncommitted changes)" if dirty.stdout.strip() else ""))
    return "\n".join(lines) + "\n"


def machine() -> dict[str, Any]:
    """What the numbers were measured on: CPU model, cores, memory, OS, torch threads."""
    import os
    import platform

    import psutil
    import torch

    cpu = platform.processor()
    if Path("/proc/cpuinfo").is_file():
        names = [ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                 if ln.startswith("model name")]  # fmt: skip
        cpu = names[0] if names else cpu
    return {"cpu": cpu, "logical_cores": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "os": platform.platform(), "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}  # fmt: skip


def collect_artifact(results: str | Path, artifact: str | Path, workflow_config: dict[str, Any] | None) -> Path:
    """Copy tables.csv, tables/ and plots/ of ``results`` into ``artifact`` (tables/, figures/) with the resolved
    workflow config, versions.txt, machine.json and stage_times.csv."""
    import shutil

    results, artifact = Path(results), Path(artifact)
    artifact.mkdir(parents=True, exist_ok=True)
    shutil.copy2(results / "tables.csv", artifact / "tables.csv")
    for src, dst in (("tables", "tables"), ("plots", "figures")):
        if (results / src).is_dir():
            shutil.copytree(results / src, artifact / dst, dirs_exist_ok=True)
    # the workflow's resolved config (the artifact's own file, not a run's CONFIG_FILE)
    atomic_write(artifact / "config.yaml", yaml.safe_dump(workflow_config or {}, sort_keys=False))
    atomic_write(artifact / "versions.txt", versions())
    atomic_write(artifact / "machine.json", json.dumps(machine(), indent=2) + "\n")
    atomic_write(artifact / "stage_times.csv", stage_times(results).to_csv(index=False))
    return artifact
