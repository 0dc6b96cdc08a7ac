"""`helm train` end to end on real OAS sequences: the run directory, the lr schedule as applied, EMA export,
finished-run protection, --overwrite, and clear errors before training for bad input."""

from __future__ import annotations

import json
import math
import os
import shutil

import numpy as np
import pytest
import torch
from train_utils import tiny_args, write_oas_txt

from helm import run
from helm.train import main, parse_args


@pytest.fixture(scope="module")
def raw_dir(shared_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("raw")
    write_oas_txt(shared_data, tmp / "seqs.txt")
    return tmp


def scalars(tb_dir, tag: str) -> dict[int, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    values: dict[int, float] = {}
    for file in sorted(tb_dir.rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(file))
        acc.Reload()
        if tag in acc.Tags()["scalars"]:
            values.update({e.step: e.value for e in acc.Scalars(tag)})
    return values


@pytest.mark.slow
def test_tiny_run_writes_a_complete_run_directory(raw_dir, tmp_path, capsys):
    out = tmp_path / "gpt2-mlm-hxe"
    lr, warmup_lr, min_lr, per_epoch, epochs = 1e-2, 1e-4, 1e-5, 4, 3
    argv = tiny_args(
        raw_dir, out, "--train_file", "seqs", "--file_extension", "txt", "--data-type", "codon", "--loss", "HXE",
        "--hxe-alpha", "0.4", "--model-ema", "--model-ema-decay", "0.9", "--sched", "cosine", "--sched-on-updates",
        "--epochs", str(epochs), "--warmup-epochs", "1", "--lr", str(lr), "--warmup-lr", str(warmup_lr),
        "--min-lr", str(min_lr), "--limit-train-batches", str(per_epoch), "--limit-val-batches", "2",
        "--checkpoint-hist", "2", "--vocab_size", "70",
    )  # fmt: skip
    tags = {"run": "gpt2-mlm-tiny-hxe0.4-codon", "pretrain_seed": None, "hxe_alpha": 0.4}  # the workflow's request
    (tmp_path / "request.yaml").write_text(f"tags: {json.dumps(tags)}\n")
    argv += ["--config", str(tmp_path / "request.yaml")]
    assert main(argv) == 0

    for entry in ("config.yaml", "tokenizer/tokenizer.json", "checkpoints/last.ckpt", "model/config.json",
                  "model/model.safetensors", "metrics.json", "data/summary.json"):  # fmt: skip
        assert (out / entry).exists(), entry
    assert len(list((out / "checkpoints").glob("epoch=*.ckpt"))) == 2  # top-k = --checkpoint-hist
    assert list((out / "tb").rglob("events.out.tfevents.*"))

    metrics = run.read_metrics(out)
    for key in ("val_loss", "val_acc", "val_ppl", "val_aa_acc", "val_mistake_severity", "test_loss", "test_acc",
                "test_ppl", "test_aa_acc", "test_mistake_severity", "num_parameters", "tokens_per_s", "steps",
                "wall_time_s"):  # fmt: skip
        assert metrics[key] is not None, key
    assert metrics["steps"] == per_epoch * epochs
    assert 0 <= metrics["val_acc"] <= metrics["val_aa_acc"] <= 1  # a right codon is a right amino acid
    assert metrics["val_ppl"] > 1 and metrics["tokens_per_s"] > 0
    # every OAS heavy chain (~120 codons) is longer than --max_seq_len 48: each cut is counted, per split
    from helm.shards import TokenShards

    for split in ("train", "val", "test"):
        lengths = TokenShards(out / "data" / split).lengths()
        assert metrics[f"truncated_{split}"] == int((lengths > 48 - 2).sum()) == len(lengths) > 0, split
    n_train = metrics["truncated_train"]
    err = capsys.readouterr().err
    assert f"longer than --max_seq_len 48 are cut: train {n_train:,} of {n_train:,}" in err
    # the run ends with one line: updates, training speed, final metrics and where they are
    assert f"helm train: done, {per_epoch * epochs} updates in" in err and f"-> {out / 'metrics.json'}" in err
    assert f"val_ppl {metrics['val_ppl']:.4g}" in err

    config = run.read_config(out)
    assert config["loss"] == "HXE" and config["hxe_alpha"] == 0.4 and config["derived"]["vocab_size"] == 70
    assert config["tags"] == tags  # copied from the request, for the report (helm/report/gather.py)
    # the run's own config.yaml is a valid --config: the same resolved settings (bar where the run itself lives)
    again = parse_args(["--config", str(out / "config.yaml")])
    assert again.flat() == parse_args(argv).flat() | {"output": None, "overwrite": False, "resume": None}
    assert again.tags == {}  # nor its name
    assert config["derived"]["num_parameters"] == metrics["num_parameters"]

    # the lr each update used: timm cosine per update, warmup over the first epoch (t = update index)
    logged = scalars(out / "tb", "lr")
    total, warm = per_epoch * epochs, per_epoch
    for step, value in logged.items():
        if step < warm:
            expected = warmup_lr + step * (lr - warmup_lr) / warm
        else:
            expected = min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * step / total))
        assert value == pytest.approx(expected, rel=1e-5), step
    assert len(logged) >= total - 1

    # the exported model holds the EMA weights of the selected (best) checkpoint, and load_run gives them back
    loaded = run.load_run(out)
    best = torch.load(metrics["selected_checkpoint"], map_location="cpu", weights_only=False)
    for name, value in loaded.model.state_dict().items():
        torch.testing.assert_close(value, best["ema_state_dict"][name], msg=name)
    assert not all(torch.equal(best["state_dict"]["model." + k], v) for k, v in best["ema_state_dict"].items())

    # a finished run is never overwritten silently; --overwrite starts over
    assert main(argv) == 2
    assert "holds a finished run" in capsys.readouterr().err
    assert main([*argv, "--overwrite", "--epochs", "1", "--warmup-epochs", "0"]) == 0
    assert run.read_metrics(out)["steps"] == per_epoch


def test_amino_acid_run_on_real_oas_rows(shared_data, tmp_path):
    """--data-type aa: the OAS file itself as --train_file gives the translated CDS, one token per residue; the
    run trains with XE, reports no codon-only metrics, and its exported model reloads with the aa tokenizer."""
    from test_prepare import oas_subset

    from helm.codons import aa_vocab

    oas_subset(shared_data, tmp_path / "oas.csv.gz", 300)
    out = tmp_path / "aa-run"
    argv = tiny_args(tmp_path, out, "--train_file", "oas.csv.gz", "--file_extension", "csv.gz", "--data-type", "aa",
                     "--mode", "clm", "--max_seq_len", "160", "--epochs", "2", "--lr", "3e-3")  # fmt: skip
    assert main(argv) == 0
    metrics = run.read_metrics(out)
    assert metrics["steps"] > 0 and "val_aa_acc" not in metrics and "val_mistake_severity" not in metrics
    assert 1 < metrics["val_ppl"] < len(aa_vocab())  # learned something beyond uniform over 28 tokens
    loaded = run.load_run(out)
    assert loaded.tokenizer.name == "aa" and loaded.model.config.vocab_size == len(aa_vocab())
    assert run.read_config(out)["derived"]["vocab_size"] == 28


def test_missing_data_is_an_error_before_training(raw_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(tiny_args(raw_dir, out, "--train_file", "nope.txt")) == 2
    assert "--train_file nope.txt: not found" in capsys.readouterr().err
    assert main(tiny_args(tmp_path / "absent", out, "--train_file", "seqs.txt")) == 2
    assert "directory not found" in capsys.readouterr().err
    assert main(tiny_args(raw_dir, out)) == 2
    assert "not a prepared directory" in capsys.readouterr().err
    assert not (out / "checkpoints").exists()


def test_resume_from_another_vocabulary_is_refused(raw_dir, tmp_path, capsys):
    from helm.codons import nuc_vocab

    foreign = tmp_path / "nuc.ckpt"
    torch.save({"hyper_parameters": {"vocab_tokens": list(nuc_vocab().tokens), "vocab_kind": "nuc"}}, foreign)
    out = tmp_path / "run"
    assert main(tiny_args(raw_dir, out, "--train_file", "seqs.txt", "--resume", str(foreign))) == 2
    err = capsys.readouterr().err
    assert "trained on a different vocabulary" in err and str(foreign) in err
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(b"not a checkpoint")
    assert main(tiny_args(raw_dir, out, "--train_file", "seqs.txt", "--resume", str(broken))) == 2
    assert "damaged checkpoint (not a readable zip archive" in capsys.readouterr().err
    assert main(tiny_args(raw_dir, out, "--train_file", "seqs.txt", "--resume", str(tmp_path / "none.ckpt"))) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert not (out / "checkpoints").exists()


class _Payload:
    """Unpickling this runs code: it creates the file named in it (what a tampered checkpoint could do)."""

    def __init__(self, marker: os.PathLike) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_checkpoint_that_would_run_code_is_refused_before_unpickling_it(raw_dir, tmp_path, capsys):
    from helm.codons import codon_vocab

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    torch.save({"hyper_parameters": {"vocab_tokens": list(codon_vocab().tokens)}, "x": _Payload(marker)}, evil)
    torch.load(evil, weights_only=False)["x"].close()  # the payload is real: a plain unpickle runs it
    assert marker.exists()
    marker.unlink()
    out = tmp_path / "run"
    assert main(tiny_args(raw_dir, out, "--train_file", "seqs.txt", "--resume", str(evil))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "refusing to load a checkpoint that holds more than weights" in err[-1] and str(evil) in err[-1]
    assert not marker.exists() and not (out / "checkpoints").exists()


def test_eval_metric_must_exist_for_the_vocabulary(raw_dir, tmp_path, capsys):
    out = tmp_path / "run"
    argv = tiny_args(raw_dir, out, "--train_file", "seqs.txt", "--tokenizer", "nuc", "--eval-metric", "val_aa_acc")
    assert main(argv) == 2
    assert "--eval_metric val_aa_acc: not measured for the nuc tokenizer" in capsys.readouterr().err
    assert not (out / "checkpoints").exists()


@pytest.mark.slow
def test_many_flags_together(raw_dir, tmp_path):
    """bf16 AMP, gradient accumulation, AGC clipping, layer decay, epoch repeats, plateau schedule, early
    stopping, explicit position ids, a dataloader worker with --no-prefetcher: the run completes and counts
    updates as the flags say."""
    out = tmp_path / "run"
    argv = tiny_args(
        raw_dir, out, "--train_file", "seqs.txt", "--mode", "clm", "--amp", "--grad-accum-steps", "2",
        "--clip-grad", "0.05", "--clip-mode", "agc", "--layer-decay", "0.8", "--epoch-repeats", "2", "--epochs", "2",
        "--sched", "plateau", "--early-stop", "--patience-epochs", "5", "--position_ids", "--num_workers", "1",
        "--no-prefetcher", "--limit-train-batches", "4", "--limit-val-batches", "1", "--eval-metric", "val_acc",
        "--loss", "soft_labels", "--soft-labels-beta", "10", "--hierarchy", "random",
    )  # fmt: skip
    assert main(argv) == 0
    config = run.read_config(out)
    assert config["derived"]["precision"] == "bf16-mixed" and config["derived"]["val_metric_mode"] == "max"
    # 4 batches / 2 accumulated = 2 updates per pass; 2 epochs x 2 repeats = 4 passes
    assert run.read_metrics(out)["steps"] == 8
    assert list((out / "checkpoints").glob("*val_acc=*.ckpt"))


@pytest.mark.slow
def test_lr_noise_perturbs_only_its_range_and_is_seeded(raw_dir, tmp_path):
    """--lr-noise 0.5 over 4 epochs: epochs 0-1 follow the plain cosine, epochs 2-3 are perturbed, and the same
    seed perturbs them identically."""

    def per_epoch_lr(name: str, *extra: str) -> list[float]:
        out = tmp_path / name
        argv = tiny_args(raw_dir, out, "--train_file", "seqs.txt", "--epochs", "4", "--sched", "cosine",
                         "--limit-train-batches", "2", "--limit-val-batches", "1", "--no-test", *extra)  # fmt: skip
        assert main(argv) == 0
        logged = scalars(out / "tb", "lr")
        return [logged[step] for step in (0, 2, 4, 6)]  # 2 updates per epoch: the first update of each epoch

    plain = per_epoch_lr("plain")
    noisy = per_epoch_lr("noisy", "--lr-noise", "0.5", "--lr-noise-std", "0.5")
    again = per_epoch_lr("again", "--lr-noise", "0.5", "--lr-noise-std", "0.5")
    assert noisy[:2] == pytest.approx(plain[:2], rel=1e-6)
    assert all(abs(n - p) > 1e-3 * p for n, p in zip(noisy[2:], plain[2:]))
    assert again == noisy


def test_prepared_data_must_match_the_tokenization_flags(raw_dir, tmp_path, capsys):
    """An already prepared --data_dir is used as is: --overlap, or a learned --vocab_size, that it was not prepared
    with would be silently ignored, so they are errors before training."""
    from helm.prepare import prepare

    kmer, bpe = tmp_path / "3mer", tmp_path / "bpe"
    prepare([raw_dir / "seqs.txt"], output=kmer, tokenizer="3mer", progress=False)
    prepare([raw_dir / "seqs.txt"], output=bpe, tokenizer="bpe", vocab_size=100, progress=False)
    out = tmp_path / "run"
    assert main(tiny_args(kmer, out, "--overlap", "1")) == 2
    assert "--overlap 1: the prepared data in" in capsys.readouterr().err
    assert main(tiny_args(bpe, out, "--tokenizer", "bpe", "--vocab_size", "64")) == 2
    assert "--vocab_size 64: the prepared data in" in capsys.readouterr().err
    assert not (out / "checkpoints").exists()


def test_unavailable_hardware_is_a_clear_error(raw_dir, tmp_path, capsys):
    """Lightning refuses an accelerator / strategy / precision this machine cannot run: one line, no traceback."""
    import torch

    if torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    assert main(tiny_args(raw_dir, tmp_path / "run", "--train_file", "seqs.txt", "--accelerator", "mps")) == 2
    err = capsys.readouterr().err
    assert "helm train: error: --accelerator mps" in err and "MPSAccelerator" in err and "Traceback" not in err


def test_cooldown_cycles_and_warmup_prefix_are_trained(raw_dir, tmp_path):
    """As timm's train.py: the epochs to train are the warmup prefix + --epochs x --lr-cycle-limit cycles +
    --cooldown-epochs (training only --epochs never reached the further cycles or the cooldown)."""
    out = tmp_path / "run"
    lr, min_lr, warmup_lr = 1e-2, 1e-5, 1e-4
    argv = tiny_args(raw_dir, out, "--train_file", "seqs.txt", "--sched", "cosine", "--epochs", "1", "--lr", str(lr),
                     "--min-lr", str(min_lr), "--warmup-epochs", "1", "--warmup-lr", str(warmup_lr), "--warmup-prefix",
                     "--lr-cycle-limit", "2", "--lr-cycle-decay", "0.5", "--cooldown-epochs", "1",
                     "--limit-train-batches", "2", "--limit-val-batches", "1", "--no-test")  # fmt: skip
    assert main(argv) == 0
    assert run.read_config(out)["derived"]["train_epochs"] == 4
    assert run.read_metrics(out)["steps"] == 8
    logged = scalars(out / "tb", "lr")
    per_epoch = [logged[step] for step in (0, 2, 4, 6)]  # 2 updates per epoch: the first update of each epoch
    assert per_epoch == pytest.approx([warmup_lr, lr, lr * 0.5, min_lr], rel=1e-5)  # warmup, 2 cycles, cooldown


def test_start_epoch_offsets_a_per_update_schedule(raw_dir, tmp_path):
    """--start-epoch 1 with --sched-on-updates: the schedule starts at update 1 x updates-per-epoch (as timm), not 0."""
    out = tmp_path / "run"
    lr, per_epoch, epochs, start = 1e-2, 2, 3, 1
    argv = tiny_args(raw_dir, out, "--train_file", "seqs.txt", "--sched", "cosine", "--sched-on-updates",
                     "--epochs", str(epochs), "--start-epoch", str(start), "--lr", str(lr),
                     "--limit-train-batches", str(per_epoch), "--limit-val-batches", "1", "--no-test")  # fmt: skip
    assert main(argv) == 0
    logged = scalars(out / "tb", "lr")
    total = epochs * per_epoch
    assert sorted(logged) == list(range((epochs - start) * per_epoch))
    for step, value in logged.items():
        t = step + start * per_epoch
        assert value == pytest.approx(0.5 * lr * (1 + math.cos(math.pi * t / total)), rel=1e-5), step


def test_fractional_warmup_on_a_per_update_schedule(raw_dir, tmp_path):
    """--warmup-epochs 0.25 with --sched-on-updates (the study's schedule): a linear warmup over the first quarter of
    an epoch's updates, then cosine over the rest, as timm defines it (t = update index)."""
    out = tmp_path / "run"
    lr, warmup_lr, per_epoch = 1e-2, 1e-4, 8
    argv = tiny_args(raw_dir, out, "--train_file", "seqs.txt", "--sched", "cosine", "--sched-on-updates",
                     "--epochs", "1", "--warmup-epochs", "0.25", "--warmup-lr", str(warmup_lr), "--lr", str(lr),
                     "--min-lr", "0", "--limit-train-batches", str(per_epoch), "--limit-val-batches", "1",
                     "--no-test")  # fmt: skip
    assert main(argv) == 0
    logged = scalars(out / "tb", "lr")
    warm = 0.25 * per_epoch
    assert sorted(logged) == list(range(per_epoch))
    for step, value in logged.items():
        if step < warm:
            expected = warmup_lr + step * (lr - warmup_lr) / warm
        else:
            expected = 0.5 * lr * (1 + math.cos(math.pi * step / per_epoch))
        assert value == pytest.approx(expected, rel=1e-5), step


@pytest.mark.parametrize(
    "extra, message",
    [
        (
            ["--epochs", "1", "--warmup-epochs", "5"],
            "--warmup-epochs 5 (10 updates) covers the whole run (--epochs 1, 2",
        ),
        (
            ["--epochs", "5", "--warmup-epochs", "1", "--max-steps", "2"],
            "covers the whole run (--max-steps 2, 2 updates)",
        ),
    ],
)
def test_a_warmup_as_long_as_the_run_is_refused(raw_dir, tmp_path, capsys, extra, message):
    """The seed's default --warmup-epochs 5 with a 1-epoch run would keep the lr at 1e-8 throughout: refused."""
    argv = tiny_args(raw_dir, tmp_path / "run", "--train_file", "seqs.txt", "--limit-train-batches", "2", *extra)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "pass a shorter --warmup-epochs" in err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_finished_run_is_extended_in_place(raw_dir, tmp_path):
    """--resume RUN/checkpoints/last.ckpt --overwrite --epochs 2 into the same --output: the checkpoint survives the
    overwrite and training continues from it to the new length."""
    out = tmp_path / "run"
    argv = tiny_args(raw_dir, out, "--train_file", "seqs.txt", "--epochs", "1", "--limit-train-batches", "2",
                     "--limit-val-batches", "1", "--no-test", "--sched", "none")  # fmt: skip
    assert main(argv) == 0 and run.read_metrics(out)["steps"] == 2
    source = out / "checkpoints" / "last.ckpt"
    assert main([*argv, "--epochs", "2", "--resume", str(source), "--overwrite"]) == 0
    metrics = run.read_metrics(out)
    assert metrics["steps"] == 4 and metrics["resumed_from"] == str(source) and source.exists()


def test_layer_decay_applies_without_a_schedule(raw_dir, tmp_path):
    """--layer-decay with --sched none: timm scales the groups' lr only through a scheduler; it is applied once."""
    out = tmp_path / "run"
    lr, decay = 1e-2, 0.5
    argv = tiny_args(raw_dir, out, "--train_file", "seqs.txt", "--sched", "none", "--layer-decay", str(decay),
                     "--lr", str(lr), "--epochs", "1", "--limit-train-batches", "1", "--limit-val-batches", "1",
                     "--no-test")  # fmt: skip
    assert main(argv) == 0
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    lrs = sorted({round(g["lr"], 12) for g in ckpt["optimizer_states"][0]["param_groups"]})
    # 2 layers: embeddings, block 0, block 1, head / final norm -> lr x decay^3 .. lr x decay^0
    assert lrs == pytest.approx([lr * decay**k for k in (3, 2, 1, 0)])


def test_second_order_optimizer_in_lookahead_trains(raw_dir, tmp_path):
    """--opt lookahead_adahessian: the backward keeps its graph (create_graph) for the Hessian estimate, through
    the math attention kernel (the fused ones have no double backward), and timm's Lookahead wraps it."""
    out = tmp_path / "run"
    argv = tiny_args(raw_dir, out, "--train_file", "seqs.txt", "--opt", "lookahead_adahessian", "--epochs", "1",
                     "--limit-train-batches", "2", "--limit-val-batches", "1", "--no-test")  # fmt: skip
    assert main(argv) == 0
    assert run.read_metrics(out)["steps"] == 2
    optimizer = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)[
        "optimizer_states"
    ][0]
    assert "lookahead_k" in optimizer["param_groups"][0]
    state = next(iter(optimizer["state"].values()))
    assert state["exp_hessian_diag_sq"].abs().sum() > 0


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("g++") is None, reason="torch.compile on the CPU needs a C++ compiler (g++)")
def test_compile_trains_to_the_eager_losses(raw_dir, tmp_path):
    """--compile (inductor on CPU) runs the same model: same updates, same losses up to float32 reordering."""
    metrics = {}
    for name, extra in (("eager", ()), ("compiled", ("--compile",))):
        out = tmp_path / name
        argv = tiny_args(raw_dir, out, "--train_file", "seqs.txt", "--max-steps", "4", "--epochs", "1", "--seed", "3",
                         "--num_samples", "64", *extra)  # fmt: skip
        assert main(argv) == 0
        metrics[name] = json.loads((out / "metrics.json").read_text())
        assert run.read_config(out)["compile"] is bool(extra)
    for key in ("val_loss", "test_loss", "val_acc"):
        assert metrics["compiled"][key] == pytest.approx(metrics["eager"][key], rel=1e-4, abs=1e-5), key
    # a compiled run's checkpoint holds the plain model's keys (no torch.compile wrapper prefix)
    keys = set(run.load_checkpoint(run.last_checkpoint(tmp_path / "compiled"))["state_dict"])
    assert keys == set(run.load_checkpoint(run.last_checkpoint(tmp_path / "eager"))["state_dict"])
    assert not any("_orig_mod" in k for k in keys)


def test_train_tokens_count_every_real_input_token_once(raw_dir, tmp_path):
    """metrics.json's train_tokens (behind tokens_per_s) = the real (non-pad) input tokens of one epoch."""
    from helm.shards import TokenShards

    out = tmp_path / "run"
    argv = tiny_args(raw_dir, out, "--train_file", "seqs.txt", "--epochs", "1", "--num_samples", "64", "--no-test")
    assert main(argv) == 0
    lengths = TokenShards(out / "data" / "train").lengths()[:64]
    expected = int(np.minimum(lengths + 2, 48).sum())  # <cls> + codons + <eos>, cut at --max_seq_len 48
    metrics = run.read_metrics(out)
    assert metrics["train_tokens"] == expected
    assert metrics["tokens_per_s"] == pytest.approx(expected / metrics["train_time_s"], rel=1e-6)
