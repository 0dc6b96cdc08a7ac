"""Kill a real training subprocess mid-epoch (SIGKILL after a checkpoint), rerun, and compare with an
uninterrupted run of the same seed: same final step count, same weights, same validation loss."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
import torch
from train_utils import REPO, tiny_args, write_oas_txt

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
