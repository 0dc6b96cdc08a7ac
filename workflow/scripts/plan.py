"""Price a grid before launching it: `make plan [PROFILE=slurm] [CONFIG=config/smoke.yaml] [TARGETS=...]`.

Runs `snakemake -n` (the same DAG, checks and per-job resources a launch would use) and prints, instead of its
listing of every job (8 MB for the paper grid), a few dozen lines: jobs per rule and size (threads, GPUs, memory,
time limit, partition), the GPU-hours and CPU-hours the jobs reserve (GPUs x time limit, threads x time limit;
the first attempt: a retried job asks for twice as much), and where the full listing is. Local rules (fetch,
tables, artifact) run on the submitting machine and reserve nothing. Every argument after the options goes to
Snakemake unchanged.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

SNAKEFILE = Path(__file__).resolve().parents[2] / "Snakefile"
JOB = re.compile(r"^(local)?rule (\w+):$")


def parse_jobs(listing: str) -> list[dict]:
    """The jobs of a dry-run listing: rule, local or not, threads and resources (as Snakemake prints them)."""
    jobs: list[dict] = []
    for line in listing.splitlines():
        match = JOB.match(line)
        if match:
            jobs.append({"rule": match.group(2), "local": bool(match.group(1)), "threads": 1, "resources": {}})
            continue
        if not jobs or not line.startswith("    "):
            continue
        key, _, value = line.strip().partition(": ")
        if key == "threads":
            jobs[-1]["threads"] = int(value)
        elif key == "resources":
            jobs[-1]["resources"] = dict(item.split("=", 1) for item in value.split(", ") if "=" in item)
    return jobs


def _number(value: str | None) -> float:
    try:
        return float(value) if value is not None else 0.0
    except ValueError:
        return 0.0


def summarize(jobs: list[dict]) -> tuple[list[tuple], dict[str, float]]:
    """Rows (rule, threads, gpus, mem_mb, runtime min, partition, jobs, GPU-h, CPU-h) and the totals."""
    sizes: Counter = Counter()
    for job in jobs:
        res = job["resources"]
        key = (job["rule"] + (" (local)" if job["local"] else ""), job["threads"], int(_number(res.get("gpu"))),
               int(_number(res.get("mem_mb"))), int(_number(res.get("runtime"))),
               res.get("slurm_partition") or "-", job["local"])  # fmt: skip
        sizes[key] += 1
    rows, totals = [], {"jobs": 0.0, "gpu_h": 0.0, "cpu_h": 0.0, "gpu_jobs": 0.0, "cpu_only_gpu": 0.0}
    for (rule, threads, gpus, mem, runtime, partition, local), count in sizes.items():
        gpu_h = 0.0 if local else count * gpus * runtime / 60
        cpu_h = 0.0 if local else count * threads * runtime / 60
        rows.append((rule, threads, gpus, mem, runtime, partition, count, gpu_h, cpu_h))
        totals["jobs"] += count
        totals["gpu_h"] += gpu_h
        totals["cpu_h"] += cpu_h
        totals["gpu_jobs"] += count if gpus else 0
    return rows, totals


def render(rows: list[tuple], totals: dict[str, float]) -> str:
    head = ("rule", "jobs", "threads", "GPUs", "mem MB", "limit min", "partition", "GPU-h", "CPU-h")
    body = [(r[0], r[6], r[1], r[2], r[3], r[4], r[5], f"{r[7]:,.0f}", f"{r[8]:,.0f}") for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    lines = ["  ".join(str(x).ljust(w) if i == 0 else str(x).rjust(w) for i, (x, w) in enumerate(zip(r, widths)))
             for r in (head, *body)]  # fmt: skip
    lines.append(
        f"total: {totals['jobs']:,.0f} jobs ({totals['gpu_jobs']:,.0f} on GPUs); reserved {totals['gpu_h']:,.0f} "
        f"GPU-hours and {totals['cpu_h']:,.0f} CPU-hours (GPUs or threads x time limit, first attempts)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make plan", description=__doc__.splitlines()[0])
    parser.add_argument("--full", type=Path, default=None, help="also write snakemake's whole listing here")
    args, snakemake_args = parser.parse_known_args(argv)
    snakemake = shutil.which("snakemake", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    # a dry run without --cores caps every job's threads at 1 (Snakemake constrains even remote jobs' threads by
    # --cores): a large --cores first shows the threads the rules ask for; a later --cores still wins
    cmd = [snakemake or "snakemake", "-s", str(SNAKEFILE), "-n", "--cores", "100000", *snakemake_args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    listing = proc.stdout + proc.stderr
    if args.full:
        args.full.write_text(listing)
    if proc.returncode != 0:  # the workflow's own one-line errors come last; show the tail, not the listing
        print("\n".join(listing.rstrip().splitlines()[-15:]), file=sys.stderr)
        return proc.returncode
    if "Nothing to be done" in listing:
        print("Nothing to be done: every target is up to date.")
        return 0
    rows, totals = summarize(parse_jobs(listing))
    rows = [r for r in rows if r[0] != "all"]  # the default target, not a job
    rows.sort(key=lambda r: (-r[7], -r[8], r[0]))
    print(render(rows, totals))
    where = f"written to {args.full}" if args.full else "`snakemake -n` with the same arguments (or FULL=file)"
    print(f"full listing of every job: {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
