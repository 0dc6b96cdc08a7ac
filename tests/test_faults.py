"""Faults a cluster operator meets (issue 27), each tried for real: two writers on one output, a full or read-only
filesystem (a real tmpfs mount where this machine lets us mount one), a process SIGKILLed by its PID during a
checkpoint save or before its first checkpoint, a checkpoint damaged in place, and the token counts of a resumed
run. What the project promises under each: docs/ARCHITECTURE.md ("Faults")."""

from __future__ import annotations

import hashlib
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from train_utils import KILL_AT, REPO, run_train, tiny_args, write_oas_txt

from helm import run

OAS = "pretrain/oas_parameswaran2013_heavy_100k.csv.gz"


def prepare_cli(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "helm.cli", "prepare", "--no_progress", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=900, **kw)  # fmt: skip


def tree_bytes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}  # fmt: skip


def one_error_line(proc: subprocess.CompletedProcess, prog: str) -> str:
    """The command failed as a user error: exit 2, its last line on stderr ``<prog>: error: ...`` and no traceback
    (the lines before it are the command's own reports, e.g. ``helm train``'s cut sequences)."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and lines and lines[-1].startswith(f"{prog}: error: "), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and sum(line.startswith(f"{prog}: error") for line in lines) == 1
    return lines[-1]


# ---------------------------------------------------------------------------------- 1. two writers
HOLD = """
import sys, time
from helm import files
with files.exclusive(sys.argv[1], "a holder"):
    print("locked", flush=True)
    time.sleep(600)
"""


def test_a_held_output_is_refused_naming_the_holder_and_freed_when_it_is_killed(shared_data, tmp_path):
    src, out = write_oas_txt(shared_data, tmp_path / "seqs.txt", n=100), tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        line = one_error_line(prepare_cli("--input", str(src), "--output", str(out)), "helm prepare")
        assert f"a holder (pid {holder.pid} on " in line and str(out) in line, line
        assert not out.exists() and not out.with_name("out.partial").exists()
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # the kernel drops its lock: a dead holder blocks nobody
        holder.wait()
    done = prepare_cli("--input", str(src), "--output", str(out))
    assert done.returncode == 0, done.stderr
    assert not list(tmp_path.glob(".out.lock"))  # released: the lock file is gone


@pytest.mark.slow
def test_two_prepares_on_one_output_one_refused_the_other_publishes_all(shared_data, tmp_path):
    """Two real `helm prepare` on one --output: the second is refused with one line naming the first, which
    publishes exactly what a lone run publishes (before the lock, each deleted the other's staging folder)."""
    args = ["--input", str(shared_data / OAS), "--shard_tokens", "400000", "--chunk_rows", "512"]
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "helm.cli", "prepare", "--no_progress", *args, "--output", str(out)]
    first = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stage = tmp_path / "out.partial" / "train"
    deadline = time.time() + 60
    while time.time() < deadline and not list(stage.glob("shard-*.tokens")) and first.poll() is None:
        time.sleep(0.01)
    second = prepare_cli(*args, "--output", str(out))
    assert first.poll() is None, f"the first prepare ended (status {first.returncode}) before the second one did"
    line = one_error_line(second, "helm prepare")
    assert f"helm prepare (pid {first.pid} on " in line, line
    stdout, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr
    reference = prepare_cli(*args, "--output", str(tmp_path / "ref"))
    assert reference.returncode == 0, reference.stderr
    skip = {"summary.json"}  # holds the run's seconds
    assert {k: v for k, v in tree_bytes(out).items() if k not in skip} == {
        k: v for k, v in tree_bytes(tmp_path / "ref").items() if k not in skip
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "ref"]  # no stage, no lock left


# ------------------------------------------------------------------- 2. full and read-only filesystems
def _mount(path: Path, options: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    return mount.returncode == 0


@pytest.fixture
def small_disk(tmp_path):
    """(a directory, the keyword arguments that run a command against a full disk there): a real 160 KiB tmpfs
    where we may mount one (root), else the same limit simulated as a per-file size limit (EFBIG)."""
    disk = tmp_path / "disk"
    if _mount(disk, "size=160k"):
        yield disk, {}
        subprocess.run(["umount", str(disk)], check=True)
    else:
        limit = 160 * 1024

        def limited() -> None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing us
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        yield disk, {"preexec_fn": limited}


def test_full_disk_is_one_line_and_leaves_the_published_output_intact(shared_data, tmp_path, small_disk):
    disk, limit = small_disk
    out = disk / "out"
    small = prepare_cli("--input", str(write_oas_txt(shared_data, tmp_path / "small.txt", n=100)), "--output",
                        str(out), "--shard_tokens", "10000000", **limit)  # fmt: skip
    assert small.returncode == 0, small.stderr
    before = tree_bytes(out)
    big = write_oas_txt(shared_data, tmp_path / "big.txt", n=3000)
    line = one_error_line(prepare_cli("--input", str(big), "--output", str(out), "--shard_tokens", "10000000",
                                      **limit), "helm prepare")  # fmt: skip
    assert str(disk) in line and ("No space left on device" in line or "File too large" in line), line
    assert tree_bytes(out) == before  # the published output is untouched
    assert sorted(p.name for p in disk.iterdir()) == ["out"]  # the stage and the lock are gone


@pytest.fixture
def read_only(tmp_path):
    """A directory on a real tmpfs that is remounted read-only by calling the returned function (root only; a
    non-root user gets the same refusal from a directory without write permission, EACCES)."""
    disk = tmp_path / "ro"
    if _mount(disk, "size=8m"):
        yield disk, lambda: subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        subprocess.run(["umount", str(disk)], check=True)
    elif os.geteuid() != 0:
        disk.mkdir(exist_ok=True)
        yield disk, lambda: [p.chmod(0o555) for p in (disk, *[d for d in disk.rglob("*") if d.is_dir()])]
        for p in (disk, *[d for d in disk.rglob("*") if d.is_dir()]):
            p.chmod(0o755)
    else:
        pytest.skip("root, but mount -t tmpfs is not allowed here: no read-only filesystem to try")


def test_read_only_output_is_one_line_for_prepare_and_train(shared_data, tmp_path, read_only):
    disk, make_read_only = read_only
    src, out = write_oas_txt(shared_data, tmp_path / "seqs.txt", n=300), disk / "prep"
    assert prepare_cli("--input", str(src), "--output", str(out)).returncode == 0
    before = tree_bytes(out)
    make_read_only()
    line = one_error_line(prepare_cli("--input", str(src), "--output", str(out), "--force"), "helm prepare")
    assert str(disk) in line and ("Read-only file system" in line or "Permission denied" in line), line
    assert tree_bytes(out) == before
    # training from the (readable) prepared data into the read-only filesystem
    proc = run_train(tiny_args(out, disk / "run", "--max-steps", "2"), timeout=900)
    line = one_error_line(proc, "helm train")
    assert str(disk) in line and ("Read-only file system" in line or "Permission denied" in line), line


# -------------------------------------------------------------------- 3-6. training killed by its PID
@pytest.fixture(scope="module")
def prepared(shared_data, tmp_path_factory):
    from helm.prepare import prepare

    tmp = tmp_path_factory.mktemp("faults")
    prepare(train_files=[write_oas_txt(shared_data, tmp / "seqs.txt")], output=tmp / "prep", progress=False)
    return tmp / "prep"


def train_args(prepared: Path, out: Path, *extra: str) -> list[str]:
    return tiny_args(prepared, out, "--max-steps", "8", "--seed", "7", "--epochs", "1", *extra)


@pytest.fixture(scope="module")
def reference(prepared, tmp_path_factory):
    """An uninterrupted run, checkpointing every 2 updates."""
    out = tmp_path_factory.mktemp("reference") / "run"
    done = run_train(train_args(prepared, out, "--checkpoint-every-n-steps", "2"), timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


# SIGKILLs itself (by its PID) inside the checkpoint save after `argv[1]` complete ones: at the first rename
# of that save, before it runs (helm's own save renames its file beside last.ckpt; Lightning's saver first moved
# its file out of the system's temporary folder)
KILL_IN_SAVE = """
import os, signal, sys
from helm.train import main

saved = 0

def hook(event, args):
    global saved
    if event == "os.rename":
        if saved == int(sys.argv[1]):
            os.kill(os.getpid(), signal.SIGKILL)
        saved += str(args[1]).endswith(".ckpt")

sys.addaudithook(hook)
sys.exit(main(sys.argv[2:]))
"""


def test_kill_during_a_checkpoint_save_leaves_nothing_and_the_resume_counts_every_token(prepared, reference,
                                                                                        tmp_path):  # fmt: skip
    tmpdir, out = tmp_path / "tmpdir", tmp_path / "run"
    tmpdir.mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1", TMPDIR=str(tmpdir))
    args = train_args(prepared, out, "--checkpoint-every-n-steps", "2")
    killed = subprocess.run([sys.executable, "-c", KILL_IN_SAVE, "1", *args], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=900)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert torch.load(run.last_checkpoint(out), weights_only=True)["global_step"] == 2  # the save before the kill

    resumed = run_train(args, timeout=900, env={"TMPDIR": str(tmpdir)})
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stderr
    staged = [p for p in tmpdir.iterdir() if p.is_file()]  # (torch makes a cache folder there)
    assert not staged, f"checkpoints were staged in the system's temporary folder and left there: {staged}"
    left = [p.name for p in (out / run.CHECKPOINT_DIR).iterdir() if p.name.startswith(".")]
    assert not left, f"temporary checkpoint files left: {left}"
    # 3: the counts of the uninterrupted run, not those of the last process
    a, b = run.read_metrics(reference), run.read_metrics(out)
    assert b["steps"] == a["steps"] == 8 and b["resumed_from"]
    assert b["train_tokens"] == a["train_tokens"] > 0
    assert b["train_time_s"] > 0 and b["tokens_per_s"] == pytest.approx(b["train_tokens"] / b["train_time_s"])
    sa, sb = (torch.load(run.last_checkpoint(o), weights_only=True)["state_dict"] for o in (reference, out))
    for key, value in sa.items():
        torch.testing.assert_close(sb[key], value, rtol=1e-5, atol=1e-6, msg=key)


def damage(src: Path, dst: Path) -> Path:
    """A copy of `src` with 64 bytes in its middle overwritten (a bad disk block, a stray write)."""
    data = bytearray(src.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
    dst.write_bytes(bytes(data))
    return dst


def test_a_checkpoint_damaged_in_place_is_refused(tmp_path):
    torch.save({"state_dict": {"w": torch.arange(4096.0)}, "global_step": 3}, tmp_path / "good.ckpt")
    assert run.load_checkpoint(tmp_path / "good.ckpt")["global_step"] == 3
    bad = damage(tmp_path / "good.ckpt", tmp_path / "bad.ckpt")
    with pytest.raises(ValueError, match="damaged checkpoint") as e:
        run.load_checkpoint(bad)
    assert str(bad) in str(e.value)


@pytest.mark.slow
def test_resume_from_a_damaged_checkpoint_is_one_line_naming_the_fix(prepared, reference, tmp_path):
    bad = damage(run.last_checkpoint(reference), tmp_path / "bad.ckpt")
    proc = run_train(train_args(prepared, tmp_path / "run", "--resume", str(bad)), timeout=900)
    line = one_error_line(proc, "helm train")
    assert str(bad) in line and "damaged checkpoint" in line and "--overwrite" in line and "--resume" in line


def test_a_run_killed_before_its_first_checkpoint_says_it_starts_over(prepared, tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    killed = subprocess.run([sys.executable, "-c", KILL_AT, "3", *train_args(prepared, out)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=900)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert run.last_checkpoint(out) is None and (out / run.CONFIG_FILE).exists()
    again = run_train(train_args(prepared, out), timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"helm train: --output {out}: no checkpoints/last.ckpt to resume: starting from scratch" in again.stderr
    assert run.read_metrics(out)["steps"] == 8 and not run.read_metrics(out)["resumed_from"]
