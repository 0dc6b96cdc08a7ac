"""Training commands say what they do (issue 22, point 6), with the real `train.py` on real OAS CDS: a run that
--max-steps stops inside an epoch validates at its end (no Lightning warning about the monitored key), a resume
that would train 0 updates while the flags ask for more is refused in one line naming the flag (and --epochs then
extends the run), and a rerun that finds no checkpoint says it starts from scratch."""

from __future__ import annotations

import shutil

import pytest
import torch
from train_utils import run_train, tiny_args, write_oas_txt

from helm import run

pytestmark = pytest.mark.slow

EPOCH = 17  # 266 training sequences / batch 16: updates in one pass
WARNING = "could not find the monitored key"
TIMEOUT = 1800  # a few seconds each on an idle machine; generous for a shared, loaded one


@pytest.fixture(scope="module")
def prepared(shared_data, tmp_path_factory):
    from helm.prepare import prepare

    tmp = tmp_path_factory.mktemp("first-day")
    prepare(train_files=[write_oas_txt(shared_data, tmp / "seqs.txt")], output=tmp / "prep", progress=False)
    return tmp / "prep"


@pytest.fixture(scope="module")
def finished(prepared, tmp_path_factory):
    """A finished 1-epoch MLM run (17 updates)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    done = run_train(tiny_args(prepared, out, "--mode", "mlm", "--epochs", "1"), timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert run.read_metrics(out)["steps"] == EPOCH
    return out


def snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_max_steps_inside_an_epoch_validates_at_its_last_update(prepared, tmp_path):
    """README's pretrain command shape (--epochs 1 --max-steps N, N below one epoch)."""
    out = tmp_path / "run"
    done = run_train(tiny_args(prepared, out, "--mode", "mlm", "--epochs", "1", "--max-steps", "5"), timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert WARNING not in done.stderr
    metrics = run.read_metrics(out)
    assert metrics["steps"] == 5 and "step=5-val_loss=" in metrics["selected_checkpoint"]


def test_resume_that_would_train_nothing_is_refused_in_one_line(finished):
    last = finished / run.CHECKPOINT_DIR / run.LAST_CKPT
    before = snapshot(finished)
    base = tiny_args(run.read_config(finished)["data_dir"], finished, "--mode", "mlm", "--resume", str(last),
                     "--overwrite")  # fmt: skip
    cases = ((["--epochs", "1", "--max-steps", "500"], "--max-steps 500", "raise --epochs"),
             (["--epochs", "2", "--max-steps", "10"], "--max-steps 10", "--max-steps 17"))  # fmt: skip
    for extra, flag, hint in cases:
        done = run_train([*base, *extra], timeout=TIMEOUT)
        assert done.returncode == 2, done.stderr[-3000:]
        line = done.stderr.strip().splitlines()[-1]
        assert line.startswith("helm train: error: " + flag) and hint in line and f"holds {EPOCH} updates" in line
        assert snapshot(finished) == before  # nothing deleted, config.yaml not rewritten to the refused length


def extend(finished, out, *extra):
    shutil.copytree(finished, out)
    last = out / run.CHECKPOINT_DIR / run.LAST_CKPT
    args = tiny_args(run.read_config(finished)["data_dir"], out, "--mode", "mlm", "--epochs", "2", "--resume",
                     str(last), "--overwrite", *extra)  # fmt: skip
    return run_train(args, timeout=TIMEOUT)


@pytest.fixture(scope="module")
def two_epochs(prepared, tmp_path_factory):
    """The same run asked for 2 epochs from the start."""
    out = tmp_path_factory.mktemp("two-epochs") / "run"
    done = run_train(tiny_args(prepared, out, "--mode", "mlm", "--epochs", "2"), timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def weights(run_dir):
    from safetensors.torch import load_file

    return load_file(run_dir / run.MODEL_DIR / "model.safetensors")


@pytest.mark.parametrize("extra", [(), ("--max-steps", "500")], ids=["epochs", "epochs+max-steps"])
def test_raising_epochs_extends_a_finished_run(finished, two_epochs, tmp_path, extra):
    """What the refusal asks for works: the checkpoint at the end of epoch 1 continues into a whole epoch 2 under
    the 2-epoch schedule (timm's cosine, whose epoch 1 equals the 1-epoch run's), so the extended run ends with the
    weights of a run asked for 2 epochs from the start. Both used to fail: with --max-steps Lightning resumed into
    an epoch of 0 batches, and without it epoch 2 ran at the old schedule's final lr of 0 (weights unchanged)."""
    done = extend(finished, tmp_path / "run", *extra)
    assert done.returncode == 0, done.stderr[-3000:]
    assert run.read_metrics(tmp_path / "run")["steps"] == 2 * EPOCH
    extended, fresh = weights(tmp_path / "run"), weights(two_epochs)
    assert extended.keys() == fresh.keys()
    assert all(torch.equal(extended[k], fresh[k]) for k in fresh)


def test_rerun_without_a_checkpoint_says_it_starts_from_scratch(finished, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    shutil.copy(finished / run.CONFIG_FILE, out / run.CONFIG_FILE)  # an earlier start killed before its checkpoint
    done = run_train(
        tiny_args(run.read_config(finished)["data_dir"], out, "--mode", "mlm", "--max-steps", "2"), timeout=TIMEOUT
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"--output {out}: no checkpoints/last.ckpt to resume: starting from scratch" in done.stderr
