"""A real single-node Slurm cluster (Debian slurmctld + slurmd + munge) for the workflow's Slurm test.

Everything lives in one temporary directory (slurm.conf, state, spool, logs) and is used through the
SLURM_CONF environment variable, so nothing under /etc is changed. Daemons run in the foreground as children
of this process and are stopped by PID at the end. Needs root (slurmd) and the Debian packages
`slurmctld slurmd slurm-client munge`; `missing()` says why the cluster cannot start, for a skip message.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PACKAGES = "slurmctld slurmd slurm-client munge"
BINARIES = ("slurmctld", "slurmd", "sbatch", "srun", "squeue", "sinfo", "scontrol", "munged", "munge", "unmunge")
SBIN = ("/usr/sbin", "/usr/local/sbin", "/sbin")


def which(name: str) -> str | None:
    path = os.environ.get("PATH", "") + os.pathsep + os.pathsep.join(SBIN)
    return shutil.which(name, path=path)


def missing() -> str | None:
    """Why a local cluster cannot be started here, or None."""
    absent = [b for b in BINARIES if which(b) is None]
    if absent:
        return f"Slurm/munge binaries not found ({', '.join(absent)}): apt-get install -y {PACKAGES}"
    if os.geteuid() != 0:
        return "the local Slurm cluster needs root (slurmd runs jobs as their users)"
    if not Path("/etc/munge/munge.key").exists():
        return "/etc/munge/munge.key is missing (it is created by the Debian munge package)"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _munge_works() -> bool:
    enc = subprocess.run([which("munge"), "-n"], capture_output=True, timeout=10)
    if enc.returncode != 0:
        return False
    dec = subprocess.run([which("unmunge")], input=enc.stdout, capture_output=True, timeout=10)
    return dec.returncode == 0


def write_conf(root: Path, cpus: int, mem_mb: int, partitions: tuple[str, ...] = ("debug",), gpus: int = 0) -> Path:
    """slurm.conf, and gres.conf with `gpus` GPU slots (at most 4) that are no devices (/dev/null, ...): jobs that ask
    for GPUs are scheduled on them and run on the CPU; every partition holds the one
    node, the first is the default."""
    for sub in ("state", "spool", "log"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    conf = root / "slurm.conf"
    conf.write_text(
        "\n".join(
            [
                "ClusterName=helmtest",
                "SlurmctldHost=localhost(127.0.0.1)",
                f"SlurmctldPort={_free_port()}",
                f"SlurmdPort={_free_port()}",
                "SlurmUser=root",
                "SlurmdUser=root",
                "AuthType=auth/munge",
                "ProctrackType=proctrack/linuxproc",
                "TaskPlugin=task/none",
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_Core_Memory",
                "AccountingStorageType=accounting_storage/none",
                "JobCompType=jobcomp/filetxt",
                f"JobCompLoc={root / 'log' / 'jobcomp.txt'}",
                "JobAcctGatherType=jobacct_gather/none",
                "MpiDefault=none",
                "ReturnToService=2",
                "MinJobAge=600",
                "SchedulerType=sched/backfill",
                f"StateSaveLocation={root / 'state'}",
                f"SlurmdSpoolDir={root / 'spool'}",
                f"SlurmctldPidFile={root / 'slurmctld.pid'}",
                f"SlurmdPidFile={root / 'slurmd.pid'}",
                f"SlurmctldLogFile={root / 'log' / 'slurmctld.log'}",
                f"SlurmdLogFile={root / 'log' / 'slurmd.log'}",
                "DefMemPerCPU=1000",
                "SlurmdParameters=config_overrides",  # CPUS may exceed this machine's cores (jobs' threads)
                *(["GresTypes=gpu"] if gpus else []),
                f"NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem_mb}"
                + (f" Gres=gpu:{gpus}" if gpus else "")
                + " State=UNKNOWN",
                *(
                    f"PartitionName={name} Nodes=localhost Default={'NO' if i else 'YES'} MaxTime=INFINITE State=UP"
                    for i, name in enumerate(partitions)
                ),
                "",
            ]
        )
    )
    if gpus:  # beside slurm.conf, where slurmd looks for it; a GPU without a File is not counted by slurmd
        files = ("/dev/null", "/dev/zero", "/dev/full", "/dev/urandom")[:gpus]
        lines = ["AutoDetect=off", *(f"NodeName=localhost Name=gpu File={f}" for f in files)]
        (root / "gres.conf").write_text("\n".join(lines) + "\n")
    return conf


@contextmanager
def local_slurm(root: Path, cpus: int = 2, mem_mb: int = 8000, timeout: float = 60.0,
                partitions: tuple[str, ...] = ("debug",), gpus: int = 0) -> Iterator[dict[str, str]]:  # fmt: skip
    """Start munged (unless one already answers), slurmctld and slurmd; yield the environment for clients."""
    root = Path(root)
    conf = write_conf(root, cpus, mem_mb, partitions, gpus)
    env = {**os.environ, "SLURM_CONF": str(conf)}
    # The slurm jobstep plugin drops every SLURM_* variable (SLURM_CONF too) before its nested `srun`, which then
    # cannot find this cluster's config: an `srun` wrapper first on PATH (PATH is exported to jobs) sets it again.
    wrappers = root / "bin"
    wrappers.mkdir(exist_ok=True)
    srun = wrappers / "srun"
    srun.write_text(f'#!/bin/sh\nSLURM_CONF={conf} exec {which("srun")} "$@"\n')
    srun.chmod(0o755)
    env["PATH"] = os.pathsep.join([str(wrappers), env.get("PATH", ""), *SBIN])
    procs: list[subprocess.Popen] = []
    try:
        if not _munge_works():
            run_munge = Path("/run/munge")
            run_munge.mkdir(parents=True, exist_ok=True)
            shutil.chown(run_munge, "munge", "munge")
            procs.append(
                subprocess.Popen(
                    [which("munged"), "-F"],
                    user="munge",
                    group="munge",
                    stdout=subprocess.DEVNULL,
                    stderr=open(root / "log" / "munged.log", "w"),
                )  # fmt: skip
            )
            _wait(_munge_works, timeout, "munged did not start (see log/munged.log)")
        for cmd, log in (
            ([which("slurmctld"), "-D", "-i", "-f", str(conf)], "slurmctld.out"),
            ([which("slurmd"), "-D", "-N", "localhost", "-f", str(conf)], "slurmd.out"),
        ):
            procs.append(subprocess.Popen(cmd, env=env, stdout=open(root / "log" / log, "w"), stderr=subprocess.STDOUT))
            time.sleep(1.0)

        def node_idle() -> bool:
            out = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], env=env, capture_output=True, text=True)
            return out.returncode == 0 and out.stdout.strip().startswith("idle")

        _wait(node_idle, timeout, f"the Slurm node did not become idle (logs in {root / 'log'})", procs)
        yield env
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(procs):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def _wait(check, timeout: float, message: str, procs: list[subprocess.Popen] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        for proc in procs or []:
            if proc.poll() is not None:
                raise RuntimeError(f"{message}: {proc.args[0]} exited with {proc.returncode}")
        time.sleep(0.5)
    raise RuntimeError(message)
