"""Install the site part of the Slurm profile, once per user: `make slurm-profile ACCOUNT=... PARTITION=...`.

Snakemake finds `--profile slurm` in ``$XDG_CONFIG_HOME/snakemake/slurm`` (default ``~/.config/snakemake``). What
belongs to the site (executor, account, default partition, how job states are queried) is written there, with
the workflow's generic settings (workflow/profiles/slurm/config.v8+.yaml: retries, rerun triggers, job limits);
what belongs to each rule (GPUs, memory, runtime, partition per rule) stays in the config's ``resources``. An
existing profile is never overwritten: edit it, or remove it and install again.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import yaml

TEMPLATE = Path(__file__).resolve().parents[1] / "profiles" / "slurm" / "config.v8+.yaml"


def profile_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "snakemake" / "slurm"


def partitions(gpu_partition: str | None, cpu_partition: str, gpus_per_node: int) -> dict:
    """The slurm plugin's partitions file (--slurm-partition-config): a job without its own slurm_partition goes
    to the best fit, and the plugin never puts a GPU job on a partition without GPUs and prefers one without GPUs
    for a CPU-only job."""
    parts = {cpu_partition: {"max_gpu": 0}}
    if gpu_partition:
        parts[gpu_partition] = {"max_gpu": gpus_per_node}
    return {"partitions": parts}


def site_profile(account: str | None, partition: str | None, extra: list[str],
                 partition_file: Path | None = None) -> dict:  # fmt: skip
    """The generic settings of the template plus this site's executor, account, partition(s) and extra keys."""
    profile = yaml.safe_load(TEMPLATE.read_text())
    defaults = [f"slurm_partition={partition}"] if partition and not partition_file else []
    if partition_file:
        profile["slurm-partition-config"] = str(partition_file)
    if account:
        defaults.insert(0, f"slurm_account={account}")
    else:
        profile["slurm-no-account"] = True  # sites without accounting (and the local test cluster)
    if defaults:
        profile["default-resources"] = defaults
    for item in extra:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE (a snakemake option without its dashes)")
        profile[key] = yaml.safe_load(value)
    return profile


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make slurm-profile", description=__doc__.splitlines()[0])
    parser.add_argument("--account", default=None, help="Slurm account (sbatch --account); empty: none")
    parser.add_argument("--partition", default=None, help="default partition of jobs whose rule names none")
    parser.add_argument("--cpu-partition", default=None, help="partition of CPU-only jobs (PARTITION: GPU jobs)")
    parser.add_argument("--gpus-per-node", type=int, default=8, help="GPUs per node of PARTITION")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any other profile key")
    parser.add_argument("--dest", type=Path, default=None, help="profile directory (default: the user's)")
    args = parser.parse_args(argv)
    dest = args.dest or profile_dir()
    existing = [p for p in dest.glob("config*.yaml")] + [p for p in dest.glob("profile*.yaml")]
    if existing:
        print(f"make slurm-profile: error: {existing[0]} exists; it is never overwritten: edit it, or remove "
              "it and install again", file=sys.stderr)  # fmt: skip
        return 2
    partition_file = dest / "partitions.yaml" if args.cpu_partition else None
    try:
        profile = site_profile(args.account or None, args.partition or None, args.set, partition_file)
    except ValueError as err:
        print(f"make slurm-profile: error: {err}", file=sys.stderr)
        return 2
    dest.mkdir(parents=True, exist_ok=True)
    if partition_file:
        parts = partitions(args.partition or None, args.cpu_partition, args.gpus_per_node)
        partition_file.write_text(yaml.safe_dump(parts, sort_keys=False))
        print(f"{partition_file}: written (CPU-only jobs: {args.cpu_partition}; GPU jobs: "
              f"{args.partition or 'the default partition'})")  # fmt: skip
    path = dest / "config.v8+.yaml"
    header = f"# Site Slurm profile of helm-mrna, written by `make slurm-profile` from {TEMPLATE.name}.\n"
    path.write_text(header + yaml.safe_dump(profile, sort_keys=False))
    print(f"{path}: written; run the grid with `snakemake --profile slurm` from the repository root")
    return 0


if __name__ == "__main__":
    sys.exit(main())
