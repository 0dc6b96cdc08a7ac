"""Run-directory helpers: config / metrics files and `load_run` on a real saved model and tokenizer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from helm import files, run


def test_config_and_metrics_round_trip(tmp_path):
    config = {"loss": "HXE", "hxe_alpha": 0.4, "opt_betas": (0.9, 0.95), "output": tmp_path, "lr": None}
    run.write_config(tmp_path, config)
    assert run.read_config(tmp_path) == {**config, "opt_betas": [0.9, 0.95], "output": str(tmp_path)}
    metrics = {"val_loss": torch.tensor(1.5), "val_ppl": np.float32(4.5), "steps": np.int64(60), "bad": math.nan}
    run.write_metrics(tmp_path, metrics)
    assert run.read_metrics(tmp_path) == {"val_loss": 1.5, "val_ppl": 4.5, "steps": 60, "bad": None}
    assert not list(tmp_path.glob(".*tmp*"))  # atomic writes leave no temporaries


def test_read_config_rejects_a_non_mapping(tmp_path):
    (tmp_path / run.CONFIG_FILE).write_text("- a\n- b\n")
    with pytest.raises(ValueError, match="expected a mapping"):
        run.read_config(tmp_path)


def test_finished_and_last_checkpoint(tmp_path):
    assert not run.is_finished(tmp_path) and run.last_checkpoint(tmp_path) is None
    (tmp_path / run.CHECKPOINT_DIR).mkdir()
    (tmp_path / run.CHECKPOINT_DIR / run.LAST_CKPT).write_bytes(b"x")
    assert run.last_checkpoint(tmp_path) == tmp_path / run.CHECKPOINT_DIR / run.LAST_CKPT
    run.write_metrics(tmp_path, {"steps": 1})
    assert not run.is_finished(tmp_path)  # metrics without the exported model is not a finished run
    (tmp_path / run.MODEL_DIR).mkdir()
    assert run.is_finished(tmp_path)


def test_load_run_gives_the_saved_model_and_tokenizer(tmp_path):
    from helm.models import create_model
    from helm.tokenizers import create_tokenizer

    rundir = tmp_path / "gpt2-mlm-xe"
    model = create_model("gpt2", vocab_size=70, num_layers=2, hidden_size=32, num_heads=2, intermediate_size=64)
    model.save_pretrained(rundir / run.MODEL_DIR)
    create_tokenizer("3mer").save(rundir / run.TOKENIZER_DIR)
    run.write_config(rundir, {"model_name": "gpt2", "loss": "XE"})

    loaded = run.load_run(rundir)
    assert loaded.run_id == "gpt2-mlm-xe" and loaded.config["loss"] == "XE" and loaded.metrics is None
    ids = torch.as_tensor(loaded.tokenizer.encode("ATGGCCTAA"), dtype=torch.long)[None]
    assert ids.shape == (1, 3)
    model.eval()
    torch.testing.assert_close(loaded.model(ids), model(ids))
    assert not loaded.model.training


def test_load_run_names_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="model is missing"):
        run.load_run(tmp_path)


def test_atomic_write_and_atomic_path(tmp_path):
    """The project's one atomic writer: text or bytes land whole; a failed write leaves the old file and no
    temporary behind."""
    target = tmp_path / "sub" / "f.bin"
    assert files.atomic_write(target, b"\x00\x01") == target and target.read_bytes() == b"\x00\x01"
    files.atomic_write(target, "text\n")
    assert target.read_text() == "text\n"
    with pytest.raises(RuntimeError), files.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "text\n" and [p.name for p in target.parent.iterdir()] == ["f.bin"]
