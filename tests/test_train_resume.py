"""Kill a real training subprocess mid-epoch (SIGKILL after a checkpoint), rerun, and compare with an
uninterrupted run of the same seed: same final step count, same weights, same validation loss; and for the
metric-driven plateau schedule, the same lr at every step after the resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from train_utils import KILL_AT, REPO, run_train, tiny_args, write_oas_txt

from helm import run

pytestmark = pytest.mark.slow

STEPS = 48  # 266 training sequences / batch 16 = 17 batches per epoch: the run crosses epoch boundaries
EPOCH = 17


@pytest.fixture(scope="module")
def prepared(shared_data, tmp_path_factory):
    from helm.prepare import prepare

    tmp = tmp_path_factory.mktemp("resume")
    prepare(train_files=[write_oas_txt(shared_data, tmp / "seqs.txt")], output=tmp / "prep", progress=False)
    return tmp / "prep"


def args(prepared, out):
    return tiny_args(
        prepared, out, "--mode", "mlm", "--loss", "HXE", "--max-steps", str(STEPS), "--checkpoint-every-n-steps",
        "3", "--model-ema", "--model-ema-decay", "0.9", "--seed", "7", "--epochs", "3",
    )  # fmt: skip


def last_state(out) -> dict:
    ckpt = torch.load(run.last_checkpoint(out), map_location="cpu", weights_only=False)
    return ckpt


def test_killed_run_resumes_to_the_same_result(prepared, tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    done = subprocess.run([sys.executable, str(REPO / "train.py"), *args(prepared, full)], capture_output=True,
                          text=True, timeout=600, cwd=REPO)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]

    proc = subprocess.Popen([sys.executable, str(REPO / "train.py"), *args(prepared, killed)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    ckpt = killed / run.CHECKPOINT_DIR / run.LAST_CKPT
    deadline = time.time() + 300
    try:  # kill as soon as last.ckpt exists: checkpoints are renamed into place, so it is already complete
        while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not run.is_finished(killed)
    step = last_state(killed)["global_step"]
    assert 0 < step < STEPS and step % EPOCH, f"killed at step {step}: not mid-way through an epoch"

    resumed = subprocess.run([sys.executable, str(REPO / "train.py"), *args(prepared, killed)], capture_output=True,
                             text=True, timeout=600, cwd=REPO)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stderr

    a, b = run.read_metrics(full), run.read_metrics(killed)
    assert a["steps"] == b["steps"] == STEPS
    assert b["resumed_from"] and not a["resumed_from"]
    sa, sb = last_state(full), last_state(killed)
    assert sa["global_step"] == sb["global_step"] == STEPS
    for key, value in sa["state_dict"].items():
        torch.testing.assert_close(sb["state_dict"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    for key, value in sa["ema_state_dict"].items():
        torch.testing.assert_close(sb["ema_state_dict"][key], value, rtol=1e-5, atol=1e-6, msg=f"ema {key}")
    assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-5)
    assert b["train_tokens"] == a["train_tokens"]  # the tokens before the kill travel in the checkpoint


PLATEAU_EPOCHS, PLATEAU_BATCHES = 6, 3


def plateau_args(prepared, out):
    # mode max on a falling val_loss: no validation ever improves, so with patience 1 the lr halves every second epoch
    return tiny_args(
        prepared, out, "--mode", "mlm", "--sched", "plateau", "--patience-epochs", "1", "--decay-rate", "0.5",
        "--val-metric-mode", "max", "--epochs", str(PLATEAU_EPOCHS), "--limit-train-batches",
        str(PLATEAU_BATCHES), "--checkpoint-every-n-steps", "1", "--checkpoint-hist", "10", "--seed", "7",
    )  # fmt: skip


def lr_per_step(out) -> dict[int, float]:
    from helm.report.gather import read_scalars

    return dict(read_scalars(out / run.TB_DIR, ("lr",)).get("lr", []))  # the resumed run's events come last


@pytest.fixture(scope="module")
def plateau_full(prepared, tmp_path_factory):
    out = tmp_path_factory.mktemp("plateau") / "full"
    done = run_train(plateau_args(prepared, out))
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.mark.parametrize("kill_at", [8, 12], ids=["mid-epoch", "epoch-end"])
def test_killed_plateau_run_resumes_with_the_same_lr(prepared, plateau_full, tmp_path, kill_at):
    """timm's PlateauLRScheduler checkpoints only its best metric: a resumed run would restart the patience
    count. Killed with one bad epoch counted, the resumed run still decays when the uninterrupted one does."""
    killed = tmp_path / "killed"
    env = dict(os.environ, OMP_NUM_THREADS="1")  # as run_train: the same threads, the same float sums
    proc = subprocess.run([sys.executable, "-c", KILL_AT, str(kill_at), *plateau_args(prepared, killed)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    state = last_state(killed)
    assert state["global_step"] == kill_at
    assert state["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"] == kill_at // PLATEAU_BATCHES
    assert state["lr_schedulers"][0]["plateau"]["num_bad_epochs"] == 1  # what timm's state_dict leaves out

    resumed = run_train(plateau_args(prepared, killed))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stderr

    full, after = lr_per_step(plateau_full), lr_per_step(killed)
    steps = range(kill_at, PLATEAU_EPOCHS * PLATEAU_BATCHES)  # logged at step s: the lr of update s + 1
    assert [after[s] for s in steps] == [full[s] for s in steps]
    # halved after epochs 2 and 4 (0-based), not before: the comparison covers a decay that needs the saved count
    assert sorted(set(full.values()), reverse=True) == pytest.approx([1e-3, 5e-4, 2.5e-4])
    assert last_state(killed)["lr_schedulers"] == last_state(plateau_full)["lr_schedulers"]
