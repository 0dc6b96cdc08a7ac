"""2-process DDP on CPU (gloo) equals single-process training on the same global batch."""

from __future__ import annotations

import pytest
import torch
from train_utils import run_train, tiny_args, write_oas_txt

from helm import run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prepared(shared_data, tmp_path_factory):
    from helm.prepare import prepare

    tmp = tmp_path_factory.mktemp("ddp")
    prepare(train_files=[write_oas_txt(shared_data, tmp / "seqs.txt")], output=tmp / "prep", progress=False)
    return tmp / "prep"


def test_two_process_ddp_matches_single_process(prepared, tmp_path):
    # MLM: ranks hold different numbers of masked positions, so this also checks the per-token rescaling.
    # Plain SGD with a large lr: weights move by lr x gradient, so any gradient difference shows (Adam's first
    # steps are ~lr x sign(gradient) and would hide a wrong scale).
    common = ["--mode", "mlm", "--max-steps", "4", "--seed", "3", "--checkpoint-hist", "1", "--no-test",
              "--limit-val-batches", "2", "--opt", "momentum", "--momentum", "0", "--lr", "0.5"]  # fmt: skip
    single = run_train(tiny_args(prepared, tmp_path / "one", *common, "--batch_size", "16"))
    assert single.returncode == 0, single.stderr[-3000:]
    ddp_args = tiny_args(prepared, tmp_path / "two", *common, "--num_devices", "2", "--distributed-backend", "ddp")
    ddp_args[ddp_args.index("--batch_size") + 1] = "8"  # 2 ranks x 8 = the same global batch of 16
    ddp = run_train(ddp_args, timeout=600)
    assert ddp.returncode == 0, ddp.stderr[-3000:]

    one, two = run.read_config(tmp_path / "one"), run.read_config(tmp_path / "two")
    assert one["derived"]["global_batch"] == two["derived"]["global_batch"] == 16
    assert two["derived"]["world_size"] == 2
    a, b = run.read_metrics(tmp_path / "one"), run.read_metrics(tmp_path / "two")
    assert a["steps"] == b["steps"] == 4
    assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-5)
    sa = torch.load(run.last_checkpoint(tmp_path / "one"), map_location="cpu", weights_only=False)["state_dict"]
    sb = torch.load(run.last_checkpoint(tmp_path / "two"), map_location="cpu", weights_only=False)["state_dict"]
    for key, value in sa.items():
        torch.testing.assert_close(sb[key], value, rtol=1e-5, atol=1e-6, msg=key)
