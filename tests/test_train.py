"""The train CLI: every seed flag (both spellings), --config YAML precedence, validation, the seed's
reproduction commands, and the derived values (lr scaling, precision)."""

from __future__ import annotations

import dataclasses
import math
import re
import shlex
from pathlib import Path

import pytest
import torch
import yaml

from helm import config, train
from helm.args import default_of, kind_of, typed
from helm.config import TrainConfig
from helm.train import FLAGS, build_parser, parse_args

FIELDS = {f.name: f for klass in set(FLAGS.values()) for f in dataclasses.fields(klass) if f.name in FLAGS}

SEED_README = Path(__file__).resolve().parents[2] / "shared" / "seed" / "HELM-README.txt"


@pytest.fixture(scope="module")
def readme() -> str:
    if not SEED_README.exists():
        pytest.skip(f"seed README not found at {SEED_README}")
    return SEED_README.read_text()


def seed_flags(text: str) -> list[str]:
    """Every `--flag` the seed README mentions (its flag list and its example commands)."""
    return sorted(set(re.findall(r"--[a-z][a-z0-9_-]*", text)) - {"--config"})


def option_actions() -> dict[str, object]:
    return build_parser()._option_string_actions


def sample_value(name: str) -> list[str]:
    """Command-line words that set field `name` to a non-default value of its own type."""
    k = kind_of(FLAGS[name], name)
    kind, is_list, choices, default = k.scalar, k.is_list, k.choices, default_of(FIELDS[name])
    if kind is bool:
        return []
    if choices:
        return [next(c for c in choices if c and c != default)]
    if name in {"model_name"}:
        return ["bert"]
    if name == "preset":
        return ["gpt2-tiny"]
    if name == "opt":
        return ["sgd"]
    if name == "activation":
        return ["relu"]
    if name in {"opt_betas"}:
        return ["0.8", "0.9"]
    if name == "max_steps":
        return ["7"]
    if name == "vocab_size":  # a fixed tokenizer's size (3mer: 70); learned ones take any
        return ["70"]
    if name == "warmup_epochs":  # a fraction needs --sched-on-updates (tested below)
        return ["2"]
    if is_list:
        return ["3", "5"] if kind is int else ["0.3", "0.5"]
    if kind is int or kind == (int, float):
        return ["7"]
    if kind is float:
        return ["0.3"]
    return ["somefile.txt"]


def test_every_seed_flag_has_both_spellings(readme):
    flags = seed_flags(readme)
    assert len(flags) >= 90  # the README lists 90 distinct flags; a broken regex must not pass vacuously
    actions = option_actions()
    for flag in flags:
        underscore, hyphen = "--" + flag[2:].replace("-", "_"), "--" + flag[2:].replace("_", "-")
        assert flag in actions, f"seed flag {flag} is not accepted"
        assert actions[underscore] is actions[hyphen], f"{underscore} and {hyphen} differ"


# flags whose sample value is valid only together with another flag
NEEDS = {"pos_embedding_apply": ["--pos_embedding_dim", "16"], "pos_embedding_dim": ["--pos_embedding_apply", "concat"]}


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_every_flag_changes_the_config(name):
    """Each flag, in both spellings, moves its own field (and only it) away from the default."""
    base = parse_args([])
    words = sample_value(name)
    for spelling in {name, name.replace("_", "-")}:
        if kind_of(FLAGS[name], name).scalar is bool:
            flag = f"--{spelling}" if not FIELDS[name].default else f"--no-{spelling}"
            cfg = parse_args([flag])
        else:
            cfg = parse_args([f"--{spelling}", *words, *NEEDS.get(name, [])])
        changed = {k for k, v in cfg.flat().items() if v != base.flat()[k]}
        if name == "preset":  # a preset sets the size flags too
            assert "preset" in changed and "num_layers" in changed
        elif name in NEEDS:
            assert changed == {name, NEEDS[name][0][2:]}, f"--{spelling} changed {changed}"
        else:
            assert changed == {name}, f"--{spelling} changed {changed}"


def test_config_yaml_is_default_and_command_line_wins(tmp_path):
    file = tmp_path / "c.yaml"
    file.write_text(
        yaml.safe_dump({"hxe-alpha": 0.4, "loss": "HXE", "lr": 0.01, "opt_betas": [0.9, 0.95], "amp": True})
    )
    cfg = parse_args(["--config", str(file), "--hxe_alpha", "0.6", "--no-amp"])
    assert (cfg.objective.loss, cfg.schedule.lr, cfg.optim.opt_betas) == ("HXE", 0.01, [0.9, 0.95])
    assert cfg.objective.hxe_alpha == 0.6 and cfg.run.amp is False


def test_preset_then_yaml_then_command_line(tmp_path):
    from helm.models import get_preset

    preset = get_preset("gpt2-tiny")
    file = tmp_path / "c.yaml"
    file.write_text("hidden_size: 96\n")
    cfg = parse_args(["--preset", "gpt2-tiny", "--config", str(file), "--num_layers", "3"])
    assert cfg.model.num_layers == 3 and cfg.model.hidden_size == 96
    assert cfg.model.intermediate_size == preset["intermediate_size"] and cfg.model.num_heads == preset["num_heads"]
    assert cfg.model_name == preset["model"]


@pytest.mark.parametrize(
    "content, message",
    [
        ("hxe_alfa: 0.3\n", "unknown key 'hxe_alfa'; did you mean hxe_alpha"),
        ("batch_size: abc\n", "batch_size: expected int, got 'abc'"),
        ("batch_size: 1.5\n", "batch_size: expected int"),
        ("loss: focal\n", "loss: invalid choice 'focal'"),
        ("amp: 1\n", "amp: expected true or false"),
        ("lr: [1, 2]\n", "lr: expects one value"),
        ("- just\n- a list\n", "expected a mapping"),
        ("a: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_yaml_is_a_clear_error(tmp_path, capsys, content, message):
    file = tmp_path / "bad.yaml"
    file.write_text(content)
    with pytest.raises(SystemExit) as exc:
        parse_args(["--config", str(file)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and str(file) in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--max_seq_len", "2"], "--max_seq_len 2: must be >= 3"),
        (["--model_name", "lstm"], "--model_name lstm: unknown model"),
        (["--masking_ratio", "1.5"], "--masking_ratio 1.5"),
        (["--batch_size", "1.5"], "expected int, got '1.5'"),
        (["--loss", "focal"], "invalid choice 'focal'"),
        (["--mode", "clm", "--bidirectional"], "--bidirectional: with --mode clm"),
        (["--data-type", "codon", "--tokenizer", "bpe"], "--data-type codon means the 3mer tokenizer"),
        (["--data-type", "aa", "--tokenizer", "3mer"], "--data-type aa means the aa tokenizer"),
        (["--data-type", "aa", "--loss", "HXE"], "--loss HXE: needs the codon hierarchy"),
        (["--tokenizer", "aa"], "--tokenizer aa: reads amino acids: add --data-type aa"),
        (["--distributed-backend", "horovod"], "removed in Lightning 2"),
        (["--lr-noise", "0.5", "--epoch-repeats", "2"], "--lr_noise 0.5: with --epoch-repeats 2.0"),
        (["--opt", "adamx_nonexistent"], "unknown timm optimizer"),
        (["--opt", "fusedadam", "--accelerator", "cpu"], "--opt fusedadam: needs CUDA and the apex package"),
        (["--opt", "bnbadam", "--accelerator", "cpu"], "--opt bnbadam: needs CUDA and the bitsandbytes package"),
        (["--opt", "adahessian", "--model_name", "mamba"], "which mamba's selective scan cannot"),
        (["--sched", "plateau", "--sched-on-updates"], "--sched plateau: steps once per epoch"),
        (["--warmup-epochs", "0.05"], "--warmup_epochs 0.05: a fraction of an epoch needs --sched-on-updates"),
        (["--distributed-backend", "ddp_spawn"], "--distributed_backend ddp_spawn: spawn / fork launchers are not"),
        (["--distributed-backend", "ddp_fork"], "--distributed_backend ddp_fork: spawn / fork launchers are not"),
        (["--preset", "gpt2-huge"], "unknown model preset"),
        (["--preset", "gpt2-tiny", "--model_name", "bert"], "is a gpt2 preset but --model_name is bert"),
        (["--config", "/nonexistent/c.yaml"], "file not found"),
    ],
)
def test_invalid_values_are_clear_errors(capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_timm_lookahead_optimizers_are_accepted():
    """timm's create_optimizer_v2 wraps `lookahead_<name>` in Lookahead; the seed's --opt took it."""
    assert parse_args(["--opt", "lookahead_adamw"]).optim.opt == "lookahead_adamw"
    assert parse_args(["--opt", "lookahead_adahessian"]).optim.opt == "lookahead_adahessian"


def reproduction_commands(text: str) -> list[list[str]]:
    env = {"$DATA_DIR": "/data", "$OUTPUT_DIR": "/out", "$NUM_DEVICES": "8"}
    commands = []
    for line in text.splitlines():
        if line.startswith("python train.py") and "--num_layers" in line:
            for var, value in env.items():
                line = line.replace(var, value)
            commands.append(shlex.split(line)[2:])
    return commands


def test_seed_reproduction_commands_parse_and_build(readme):
    from helm.models import create_model

    commands = reproduction_commands(readme)
    assert len(commands) == 6
    for argv in commands:
        cfg = parse_args(argv)
        flags = dict(zip(argv, argv[1:]))
        assert cfg.model_name == flags["--model_name"] and cfg.data.mode == flags["--mode"]
        assert cfg.model.num_layers == int(flags["--num_layers"])
        assert cfg.model.hidden_size == int(flags["--hidden_size"])
        assert cfg.run.num_devices == 8 and cfg.run.amp and cfg.data.data_type == "codon" and cfg.data.vocab_size == 70
        assert cfg.data.tokenizer_name == "3mer"
        values = cfg.model_config(vocab_size=70).to_dict()
        assert values["bidirectional"] == (cfg.data.mode == "mlm")
        with torch.device("meta"):  # full-size models: shapes only, no memory
            model = create_model(cfg.model_name, **values)
        n = model.num_parameters()
        assert 5e6 < n < 1.5e8, f"{cfg.model_name} {cfg.mode}: {n:,} parameters"
        assert model.config.num_layers == cfg.model.num_layers and model.config.vocab_size == 70


def test_lr_base_scaling_matches_timm_rule():
    # global batch = 32 per device x 4 devices x 2 accumulation = 256 ... x 2 nodes = 512
    cfg = parse_args(["--batch_size", "32", "--num_devices", "4", "--num_nodes", "2", "--grad-accum-steps", "2"])
    assert cfg.global_batch == 512
    assert cfg.schedule.lr is None and cfg.lr == pytest.approx(1e-3 * math.sqrt(2))  # adamw: sqrt
    sgd = parse_args(["--opt", "sgd", "--lr-base", "0.1", "--batch_size", "64"])
    assert sgd.lr == pytest.approx(0.1 * 64 / 256)  # linear
    forced = parse_args(["--lr-base-scale", "linear", "--batch_size", "512"])
    assert forced.lr == pytest.approx(2e-3)
    assert parse_args(["--lr", "0.5"]).lr == 0.5


def test_precision_from_amp():
    assert parse_args([]).precision() == "32-true"
    assert parse_args(["--amp", "--accelerator", "cpu"]).precision() == "bf16-mixed"
    assert parse_args(["--amp", "--precision", "16-mixed"]).precision() == "16-mixed"


def test_vocab_size_is_checked_against_the_tokenizer(tmp_path):
    from helm.tokenizers import create_tokenizer

    tok = create_tokenizer("3mer")
    train.check_tokenizer(parse_args(["--vocab_size", "70"]), tok, tmp_path)
    with pytest.raises(ValueError, match="uses the 3mer tokenizer but --tokenizer is nuc"):
        train.check_tokenizer(parse_args(["--tokenizer", "nuc"]), tok, tmp_path)
    train.check_tokenizer(parse_args(["--data-type", "aa"]), create_tokenizer("aa"), tmp_path)
    with pytest.raises(ValueError, match="uses the 3mer tokenizer but --tokenizer is aa"):
        train.check_tokenizer(parse_args(["--data-type", "aa"]), tok, tmp_path)


def test_resolved_config_round_trips(tmp_path):
    from helm import run

    cfg = parse_args(["--loss", "HXE", "--opt-betas", "0.9", "0.95", "--lr-noise", "0.4", "0.8"])
    run.write_config(tmp_path, cfg.flat() | {"derived": {"lr": 1e-3}})
    assert TrainConfig.from_flat(run.read_config(tmp_path)) == cfg
    assert isinstance(cfg, TrainConfig)


def test_compile_without_a_compiler_is_refused_before_any_work(monkeypatch, capsys):
    monkeypatch.setattr(config.shutil, "which", lambda name: None)
    with pytest.raises(SystemExit) as exc:
        parse_args(["--compile", "--accelerator", "cpu"])
    assert exc.value.code == 2 and "--compile: on the CPU needs a C++ compiler" in capsys.readouterr().err


def test_choices_match_in_any_case_and_yaml_groups_are_checked(tmp_path):
    cfg = parse_args(["--loss", "hxe", "--ssm_layer", "mamba2", "--tokenizer", "6MER"])
    assert (cfg.objective.loss, cfg.model.ssm_layer, cfg.data.tokenizer) == ("HXE", "Mamba2", "6mer")
    file = tmp_path / "c.yaml"
    file.write_text("schedule: {lr: 1e-3, warmup-epochs: 2}\noptim: {weight_decay: 0.1}\n")
    cfg = parse_args(["--config", str(file)])
    assert (cfg.schedule.lr, cfg.schedule.warmup_epochs, cfg.optim.weight_decay) == (1e-3, 2.0, 0.1)
    file.write_text("optim: {lr: 1e-3}\n")
    with pytest.raises(SystemExit):
        parse_args(["--config", str(file)])


def test_every_default_has_its_declared_type():
    """A default written as 5 for a float field would be 5 in one config.yaml and 5.0 in another."""
    for name, owner in FLAGS.items():
        default = default_of(FIELDS[name])
        if default is not None:
            again = typed(owner, name, default)
            assert again == default and type(again) is type(default), (name, default)


def test_fixed_vocab_size_and_preset_conflicts_are_found_while_parsing(capsys):
    for argv, message in [
        (["--vocab_size", "64"], "--vocab_size 64: the 3mer tokenizer has 70 tokens"),
        (["--preset", "gpt2-tiny", "--model_name=bert"], "is a gpt2 preset but --model_name is bert"),
        (["--tokenizer", "bpe", "--loss", "HXE"], "--loss HXE: needs the codon hierarchy"),
    ]:
        with pytest.raises(SystemExit):
            parse_args(argv)
        assert message in capsys.readouterr().err
    assert parse_args(["--tokenizer", "bpe", "--vocab_size", "64"]).data.vocab_size == 64  # learned: any size


def test_yaml_numbers_are_typed_like_the_command_line(tmp_path):
    file = tmp_path / "c.yaml"
    file.write_text("lr: 1e-3\nweight-decay: 5e-2\nlimit_val_batches: '0.5'\nbatch_size: '8'\n")  # YAML 1.1: strings
    cfg = parse_args(["--config", str(file)])
    flat = cfg.flat()
    assert flat["lr"] == 0.001 and flat["weight_decay"] == 0.05 and flat["limit_val_batches"] == 0.5
    assert flat["batch_size"] == 8 and isinstance(flat["lr"], float) and isinstance(flat["batch_size"], int)


def test_a_runs_own_config_yaml_is_a_valid_config(tmp_path):
    from helm import run

    cfg = parse_args(["--loss", "HXE", "--hxe-alpha", "0.6", "--opt-betas", "0.9", "0.95", "--lr", "3e-4"])
    run.write_config(tmp_path, cfg.flat() | {"derived": {"lr": 3e-4, "global_batch": 32}})
    assert parse_args(["--config", str(tmp_path / run.CONFIG_FILE)]) == cfg
    # a run started with --overwrite: reusing its settings never points at (let alone wipes) that run
    own = parse_args(["--loss", "HXE", "--output", str(tmp_path), "--overwrite", "--resume", "x.ckpt"])
    run.write_config(tmp_path, own.flat() | {"derived": {"lr": 1e-3}})
    reused = parse_args(["--config", str(tmp_path / run.CONFIG_FILE)])
    assert reused.run.output is None and not reused.run.overwrite and reused.run.resume is None
    assert reused.objective.loss == "HXE"


def test_a_request_in_the_trees_sections_with_tags_reads_back_as_the_same_config(tmp_path, capsys):
    """The workflow's request files: `sections` lays flag values out as the config tree (backbone flags at the top,
    each flag under its group, tags last); `helm train --config` reads them back to the very values, keeps the
    tags (they go to config.yaml) and `request_config` builds the same TrainConfig without a command line."""
    values = {
        "lr": 3e-4,
        "max_steps": 30,
        "preset": "gpt2-tiny",
        "mode": "clm",
        "loss": "HXE",
        "hxe_alpha": 0.4,
        "num_workers": 0,
        "max_seq_len": 64,
        "tags": {"run": "gpt2-clm-tiny-hxe0.4-3mer", "seed": None},
    }
    document = config.sections(values)
    assert list(document) == ["preset", "data", "model", "objective", "schedule", "run", "tags"]
    assert document["schedule"] == {"lr": 3e-4, "max_steps": 30} and document["objective"]["hxe_alpha"] == 0.4
    file = tmp_path / "request.yaml"
    file.write_text(yaml.safe_dump(document, sort_keys=False))
    cfg = parse_args(["--config", str(file)])
    flags = {k: v for k, v in values.items() if k != "tags"}
    assert {k: cfg.flat()[k] for k in flags} == flags and cfg.model_name == "gpt2" and cfg.model.num_layers == 2
    assert cfg.tags == values["tags"]
    assert train.request_config(document, "request") == cfg
    # the tags are labels, not settings: without them the same run settings
    assert dataclasses.replace(cfg, tags={}) == parse_args([f"--{k}={v}" for k, v in flags.items()])
    # a run's own config.yaml keeps its tags, but reusing its settings does not give a new run its name
    from helm import run

    run.write_config(tmp_path, cfg.flat() | {"tags": cfg.tags, "derived": {"lr": 3e-4}})
    assert TrainConfig.from_flat(run.read_config(tmp_path)) == cfg
    assert parse_args(["--config", str(tmp_path / run.CONFIG_FILE)]).tags == {}
    with pytest.raises(ValueError, match=r"^pretrain run x: hxe_alpha: expected float, got 'much'$"):
        train.request_config({**document, "objective": {"hxe_alpha": "much"}}, "pretrain run x")
    with pytest.raises(ValueError, match=r"^pretrain run x: --lr -1.0: must be > 0$"):
        train.request_config({**document, "schedule": {"lr": -1}}, "pretrain run x")
    with pytest.raises(ValueError, match=r"^pretrain run x: unknown key 'lrr'; did you mean lr\?$"):
        train.request_config({**document, "schedule": {"lrr": 1}}, "pretrain run x")


@pytest.mark.parametrize(
    ("tags", "message"),
    [("[a, b]", "tags: expected a mapping of name: value, got list"),
     ("{run: [1, 2]}", "each tag is a name with text, a number, true/false or null")],
)  # fmt: skip
def test_bad_tags_are_one_line_errors(tmp_path, capsys, tags, message):
    file = tmp_path / "c.yaml"
    file.write_text(f"lr: 1e-3\ntags: {tags}\n")
    with pytest.raises(SystemExit) as exc:
        parse_args(["--config", str(file)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and len(err.splitlines()) == 1 and message in err


def test_help_lists_every_flag(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    text = capsys.readouterr().out
    for name in FIELDS:
        assert f"--{name}" in text


def test_prepare_run_auto_resumes_only_the_same_settings(tmp_path):
    from helm import run

    out = tmp_path / "run"
    base = parse_args(["--output", str(out), "--loss", "HXE"])
    assert train.prepare_run(base) == (out, None)  # nothing there yet: a fresh start
    run.write_config(out, base.flat() | {"derived": {"lr": 1e-3}})
    (out / "checkpoints").mkdir()
    (out / "checkpoints" / "last.ckpt").write_bytes(b"x")
    assert train.prepare_run(base) == (out, str(out / "checkpoints" / "last.ckpt"))
    longer = parse_args(["--output", str(out), "--loss", "HXE", "--max-steps", "99", "--num_workers", "2"])
    assert train.prepare_run(longer)[1] == str(out / "checkpoints" / "last.ckpt")  # runtime keys may change
    with pytest.raises(ValueError, match=r"different settings \(hxe_alpha, loss\)"):
        train.prepare_run(parse_args(["--output", str(out), "--loss", "soft_labels", "--hxe-alpha", "0.6"]))
    explicit = parse_args(["--output", str(out), "--resume", "/some/where.ckpt"])
    assert train.prepare_run(explicit)[1] == "/some/where.ckpt"


def test_overwrite_removes_only_what_a_run_wrote(tmp_path):
    from helm import run

    out = tmp_path / "run"
    run.write_metrics(out, {"steps": 1})
    for name in ("model", "checkpoints", "tb", "tokenizer"):
        (out / name).mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="holds a finished run"):
        train.prepare_run(parse_args(["--output", str(out)]))
    assert train.prepare_run(parse_args(["--output", str(out), "--overwrite"])) == (out, None)
    assert (out / "metrics.json").exists()  # the checks delete nothing: fit clears the run once they all pass
    run.clear_run(out)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_overwrite_never_deletes_the_checkpoint_to_resume_from(tmp_path):
    """--resume RUN/checkpoints/last.ckpt --overwrite into the same run: the source (and its checkpoint history)
    stays; the finished run's results go."""
    from helm import run

    out = tmp_path / "run"
    run.write_metrics(out, {"steps": 1})
    for name in ("model", "checkpoints", "tb"):
        (out / name).mkdir()
    source = out / "checkpoints" / "last.ckpt"
    source.write_bytes(b"ckpt")
    (out / "checkpoints" / "epoch=0.ckpt").write_bytes(b"best")
    argv = ["--output", str(out), "--overwrite", "--resume", str(source)]
    assert train.prepare_run(parse_args(argv)) == (out, str(source))
    run.clear_run(out, keep=str(source))
    assert source.read_bytes() == b"ckpt" and (out / "checkpoints" / "epoch=0.ckpt").exists()
    assert not (out / "metrics.json").exists() and not (out / "model").exists() and not (out / "tb").exists()


def test_the_training_clock_leaves_validation_out():
    """tokens/s is training throughput: validations inside the training loop do not count (sanity checks before
    training neither)."""
    import time

    from helm.callbacks import Clock

    clock = Clock()
    clock.on_validation_start(None, None)  # the sanity check, before training starts
    time.sleep(0.05)
    clock.on_validation_end(None, None)
    clock.on_train_start(None, None)
    time.sleep(0.2)
    clock.on_validation_start(None, None)
    time.sleep(0.3)
    clock.on_validation_end(None, None)
    clock.on_train_end(None, None)
    assert 0.19 < clock.seconds < 0.29
