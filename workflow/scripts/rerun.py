"""Retrain one pretraining run from scratch and redo everything that read it: `make rerun RUN=<run id>`.

Deleting results/pretrain/<run id> is not enough: Snakemake does not rebuild a missing intermediate whose
dependents exist ("Nothing to be done"). This moves the run directory aside (results/attic/pretrain/<run
id>-<UTC time>; nothing is deleted, and a fresh directory cannot resume from the old last.ckpt) and runs Snakemake
with `--forcerun <results>/pretrain/<run id>/metrics.json`: that run's pretrain job and the jobs downstream of it
(embeddings, probes, annotation, clustering, generation, tables) re-execute, nothing else. Every argument after
the options goes to Snakemake unchanged (profile, config file, targets, -n).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

SNAKEFILE = Path(__file__).resolve().parents[2] / "Snakefile"


def attic_path(results: Path, run: str) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return results / "attic" / "pretrain" / f"{run}-{stamp}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make rerun", description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="run id: a folder under <results>/pretrain/")
    parser.add_argument("--results", default="results", help="the config's `results` folder (default: results)")
    parser.add_argument("--directory", "-d", default=".", help="Snakemake's working directory (default: here)")
    parser.add_argument("--dry-run", "-n", action="store_true", help="show what would rerun; move nothing")
    args, snakemake_args = parser.parse_known_args(argv)
    results = Path(args.directory) / args.results
    rundir = results / "pretrain" / args.run
    if "/" in args.run or not rundir.is_dir():
        print(f"make rerun: error: {rundir}: no such run (run ids are the folders under {results}/pretrain/)",
              file=sys.stderr)  # fmt: skip
        return 2
    target = f"{args.results}/pretrain/{args.run}/metrics.json"  # relative to the working directory
    if args.dry_run:
        snakemake_args.append("-n")
    else:
        dest = attic_path(results, args.run)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(rundir), str(dest))
        print(f"make rerun: moved {rundir} to {dest}", file=sys.stderr)
    snakemake = shutil.which("snakemake", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    cmd = [
        snakemake or "snakemake",
        "-s",
        str(SNAKEFILE),
        "--directory",
        args.directory,
        *snakemake_args,
        "--forcerun",
        target,
    ]  # fmt: skip: last, as --forcerun takes every word after it
    print("make rerun: " + " ".join(cmd), file=sys.stderr)
    os.execv(cmd[0], cmd)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
