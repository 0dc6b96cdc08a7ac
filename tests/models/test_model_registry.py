"""Registry, presets and their parameter counts (against formulas derived by hand from each architecture, and
against the size each preset's name promises), config validation, load errors and the `helm models` listing."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from helm.models import (
    count_parameters,
    create_model,
    get_preset,
    list_models,
    list_presets,
    load_pretrained,
    main,
    nominal_size,
)
from helm.models.config import ModelConfig


def expected_parameters(model: str, c: ModelConfig) -> int:
    """Parameter count written out per architecture (embeddings, blocks, final norm, head)."""
    h, i, n_layers, v = c.hidden_size, c.intermediate_size, c.num_layers, c.padded_vocab_size
    positions = c.max_seq_len * h if c.pos_embedding == "absolute" else 0
    head = 0 if c.tie_embeddings else v * h
    if model == "gpt2":
        block = 2 * 2 * h + (h * 3 * h + 3 * h) + (h * h + h) + (h * i + i) + (i * h + h)
        return v * h + positions + n_layers * block + 2 * h + head
    if model == "bert":
        emb = v * h + positions + h + 2 * h  # words, positions, one token type, LayerNorm
        block = 4 * (h * h + h) + 2 * h + (h * i + i) + (i * h + h) + 2 * h
        return emb + n_layers * block + head
    if model == "mamba":
        d, r, s, k = c.expand * h, math.ceil(h / 16), c.d_state, c.d_conv
        mixer = h * 2 * d + d * k + d + d * (r + 2 * s) + r * d + d + d * s + d + d * h
        mlp = h + h * 2 * i + i * h if i else 0  # norm2 + gated fc1, fc2 (no biases)
        if c.bidirectional and c.bimamba == "concat":  # forward + backward block, 2h -> h projection
            layer = 2 * (h + mixer + mlp) + 2 * h * h
        else:
            layer = h + (2 * mixer if c.bidirectional else mixer) + mlp
        return v * h + positions + n_layers * layer + h + head
    if model == "hyena":
        e, o, nf = c.filter_emb_dim, c.filter_order, 2 if c.bidirectional else 1
        filt = (e * o + o) + o + (o * o + o) + o + o * h * nf
        op = (h * 3 * h + 3 * h) + (3 * h * 3 + 3 * h) + filt + h + (h * h + h)
        block = 2 * h + op + 2 * h + (h * i + i) + (i * h + h)
        return v * h + positions + n_layers * block + 2 * h + head
    raise AssertionError(model)


def test_every_preset_count_matches_formula():
    rows = []
    for name in list_presets():
        preset = get_preset(name)
        model = preset.pop("model")
        got = count_parameters(name, vocab_size=70)
        want = expected_parameters(model, ModelConfig(vocab_size=70, **preset))
        rows.append(f"{name:<15} {got:>13,}")
        assert got == want, f"{name}: {got} parameters, formula gives {want}"
    print("\n" + "\n".join(rows))
    assert {"gpt2-50m", "mamba-50m-mlm", "mamba-50m-clm", "hyena-50m"} <= set(list_presets())
    assert all(f"{m}-tiny" in list_presets() for m in list_models())


def test_paper_50m_configs():
    """The seed README's "50M" commands, as presets; the Bi-Mamba one in the paper's layout (bimamba=concat)."""
    assert [get_preset("gpt2-50m")[k] for k in ("num_layers", "hidden_size", "intermediate_size")] == [10, 640, 2560]
    assert [get_preset("mamba-50m-mlm")[k] for k in ("num_layers", "hidden_size", "intermediate_size")] == [
        20,
        256,
        1024,
    ]
    assert get_preset("mamba-50m-mlm")["bidirectional"] is True and get_preset("mamba-50m-mlm")["bimamba"] == "concat"
    assert [get_preset("mamba-50m-clm")[k] for k in ("num_layers", "hidden_size", "intermediate_size")] == [
        40,
        256,
        1024,
    ]
    assert [get_preset("hyena-50m")[k] for k in ("num_layers", "hidden_size", "intermediate_size")] == [7, 768, 3072]
    for name in ("gpt2-50m", "hyena-50m", "mamba-50m-clm", "mamba-50m-mlm"):
        assert 45e6 < count_parameters(name) < 55e6


def test_seed_shapes_kept():
    """gpt2's 50m/100m/150m are the seed README's size configurations; its smallest (12 x 384 / 1536) counts
    21.5M, 14% under 25M, so `*-25m` has 14 layers of that width."""
    shape = ("num_layers", "hidden_size", "intermediate_size")
    assert [get_preset("gpt2-100m")[k] for k in shape] == [14, 768, 3072]
    assert [get_preset("gpt2-150m")[k] for k in shape] == [12, 1024, 4096]
    assert [get_preset("gpt2-25m")[k] for k in shape] == [14, 384, 1536]
    assert count_parameters("gpt2", num_layers=12, hidden_size=384, intermediate_size=1536, num_heads=6) < 22.5e6


def test_nominal_size_parses_the_tag():
    assert nominal_size("gpt2-50m") == 50_000_000 and nominal_size("mamba-150m-mlm") == 150_000_000
    assert nominal_size("x-1.5b") == 1_500_000_000 and nominal_size("gpt2-tiny") is None
    assert nominal_size("mamba-tiny") is None and nominal_size("gpt2-25m") == 25_000_000


SIZED = [name for name in list_presets() if not name.endswith("-tiny")]


def test_only_tiny_presets_are_unsized():
    """`*-tiny` (test configurations, ~0.1M) are the only presets without a size in their name."""
    assert [name for name in list_presets() if nominal_size(name) is None] == [
        f"{m}-tiny" for m in sorted(list_models())
    ]
    # gpt2/bert/hyena x 4 sizes + mamba causal and Bi-Mamba x 4 sizes + the laptop study's gpt2/bert 1m
    assert len(SIZED) == 4 * 3 + 4 * 2 + 2


@pytest.mark.parametrize("name", SIZED)
def test_preset_count_is_within_10_percent_of_its_name(name):
    """Every sized preset has (within 10%, codon vocabulary of 70 tokens, as `helm models` prints) the parameter
    count its name says, so the grid's size axis compares architectures at equal size."""
    got, want = count_parameters(name, vocab_size=70), nominal_size(name)
    assert abs(got / want - 1) <= 0.10, f"{name}: {got:,} parameters, {100 * (got / want - 1):+.1f}% off its name"


def paper_grid_points() -> list[tuple[str, str, str]]:
    """(arch, mode, size) of every block of config/config.yaml's grids, with the preset the workflow trains
    (`pretrain.presets` maps "<arch>-<size>" per mode, as workflow/rules/common.smk does)."""
    config = yaml.safe_load((Path(__file__).resolve().parents[2] / "config" / "config.yaml").read_text())
    overrides = config["pretrain"].get("presets", {})
    points = set()
    for axes in config["grids"].values():
        for arch in axes["arch"]:
            for mode in axes["mode"]:
                for size in axes["size"]:
                    entry = overrides.get(f"{arch}-{size}", f"{arch}-{size}")
                    points.add((mode, size, entry[mode] if isinstance(entry, dict) else entry))
    return sorted(points)


@pytest.mark.parametrize(("mode", "size", "preset"), paper_grid_points())
def test_grid_models_as_trained_are_within_10_percent_of_their_size(mode, size, preset):
    """The model `helm train --preset P --mode M` really builds (mlm turns bidirectional on, which adds weights to
    mamba and hyena) has the size of its run id's size tag, within 10%."""
    from helm.train import parse_args

    cfg = parse_args(["--preset", preset, "--mode", mode])
    got, want = count_parameters(cfg.model_name, **cfg.model_config(vocab_size=70).to_dict()), nominal_size(f"x-{size}")
    assert abs(got / want - 1) <= 0.10, f"{preset} --mode {mode}: {got:,} parameters for size {size}"


VARIANTS = [
    (name, extra)
    for name in ("gpt2", "bert", "mamba", "hyena")
    for extra in (
        {},
        {"tie_embeddings": True, "pad_vocab_size_multiple": 8},
        {"bidirectional": True, "pos_embedding": "none", "intermediate_size": 96},
    )
] + [
    ("mamba", {"ssm_layer": "Mamba2", "headdim": 32}),
    ("mamba", {"bidirectional": True, "bimamba": "concat"}),
    ("mamba", {"bidirectional": True, "bimamba": "concat", "intermediate_size": 0, "tie_embeddings": True}),
    ("mamba", {"bidirectional": False, "bimamba": "concat"}),  # the layout only applies to bidirectional models
]


@pytest.mark.parametrize(("name", "extra"), VARIANTS)
def test_variants_count_matches_real_module(name, extra):
    """The formula on variants, against a model really allocated on CPU."""
    model = create_model(name, preset=f"{name}-tiny", **extra)
    if extra.get("ssm_layer") == "Mamba2":
        c = model.config
        d, nh = c.expand * c.hidden_size, c.expand * c.hidden_size // c.headdim
        mixer = c.hidden_size * (2 * d + 2 * c.d_state + nh) + (d + 2 * c.d_state) * (c.d_conv + 1) + 3 * nh + d
        mixer += d * c.hidden_size
        mlp = c.hidden_size + 3 * c.hidden_size * c.intermediate_size
        want = 70 * 64 + 256 * 64 + c.num_layers * (64 + mixer + mlp) + 64 + 70 * 64
    else:
        want = expected_parameters(name, model.config)
    assert model.num_parameters() == sum(p.numel() for p in model.parameters()) == want


@pytest.mark.parametrize("name", list_models())
def test_intermediate_size_0_trains(name):
    """--intermediate_size 0 (allowed by ModelConfig: mamba drops its MLP, the others keep a zero-width one) runs
    forward and backward on every backbone; gpt2's Conv1D reshaped with -1, ambiguous for 0 features."""
    model = create_model(name, vocab_size=70, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=0)
    logits = model(torch.randint(6, 70, (2, 8)))
    assert logits.shape == (2, 8, 70)
    logits.sum().backward()
    assert model.get_input_embeddings().weight.grad.abs().sum() > 0


def test_create_model_resolution_and_overrides():
    model = create_model("gpt2-tiny", num_layers=1, dropout=None)  # a preset name works as the model name
    assert model.config.num_layers == 1 and model.config.hidden_size == 64 and model.config.dropout == 0.0
    assert create_model("gpt2", preset="gpt2-tiny").config.num_layers == 2


def test_errors_name_the_valid_choices():
    with pytest.raises(KeyError, match="valid models: \\['gpt2', 'bert', 'mamba', 'hyena'\\]"):
        create_model("transformerxl")
    with pytest.raises(TypeError, match="unknown field\\(s\\) \\['hidden'\\]; valid fields: \\[.*hidden_size"):
        create_model("gpt2", hidden=3)
    with pytest.raises(ValueError, match="is a mamba preset, not 'gpt2'"):
        create_model("gpt2", preset="mamba-tiny")
    with pytest.raises(KeyError, match="unknown model preset 'gpt2-7b'"):
        get_preset("gpt2-7b")
    with pytest.raises(ValueError, match="activation='gelu2'.*choose one of"):
        ModelConfig(activation="gelu2")
    with pytest.raises(ValueError, match="bimamba='sum'.*choose one of \\('add', 'concat'\\)"):
        ModelConfig(bimamba="sum")
    with pytest.raises(ValueError, match="pos_embedding='alibi'"):
        ModelConfig(pos_embedding="alibi")
    with pytest.raises(ValueError, match="rotary position embedding needs attention"):
        create_model("mamba", preset="mamba-tiny", pos_embedding="rotary")
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        create_model("gpt2", hidden_size=30, num_heads=4)


def test_load_pretrained_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json: missing"):
        load_pretrained(tmp_path)
    model = create_model("gpt2", preset="gpt2-tiny")
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "rnn"}))
    with pytest.raises(ValueError, match="config.json: model_type 'rnn'"):
        load_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**config, "num_layers": 3}))  # weights do not fit
    with pytest.raises(RuntimeError):
        load_pretrained(tmp_path)


def test_main_lists_models_presets_and_counts(capsys):
    assert main([]) == 0
    plain = capsys.readouterr().out
    assert "mamba-50m-mlm" in plain and "50M" in plain and f"{count_parameters('gpt2-50m'):,}" not in plain
    assert main(["--params"]) == 0
    out = capsys.readouterr().out
    assert "backbones: gpt2, bert, mamba, hyena" in out
    assert f"{count_parameters('gpt2-50m'):,}" in out and "mamba-50m-clm" in out
    row = next(line for line in out.splitlines() if line.strip().startswith("mamba-50m-mlm "))
    assert f"{count_parameters('mamba-50m-mlm'):,}" in row and "+3.4%" in row and "bimamba=concat" in row
    assert "losses:" in out and "tokenizers:" in out


@pytest.mark.slow
def test_helm_models_subcommand_runs():
    out = subprocess.run([sys.executable, "-m", "helm.cli", "models", "--params"], capture_output=True, text=True,
                         check=True)  # fmt: skip
    assert "hyena-50m" in out.stdout and f"{count_parameters('hyena-50m'):,}" in out.stdout


def test_meta_count_equals_real_count():
    with torch.device("cpu"):
        real = create_model("hyena", preset="hyena-tiny").num_parameters()
    assert count_parameters("hyena-tiny") == real
