"""Registry, presets and their parameter counts (against formulas derived by hand from each architecture),
config validation, load errors and the `helm models` listing."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from helm.models import (
    count_parameters,
    create_model,
    get_preset,
    list_models,
    list_presets,
    load_pretrained,
    main,
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
        mixers = 2 * mixer if c.bidirectional else mixer
        mlp = h + h * 2 * i + i * h if i else 0  # norm2 + gated fc1, fc2 (no biases)
        return v * h + positions + n_layers * (h + mixers + mlp) + h + head
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
    assert [get_preset("gpt2-50m")[k] for k in ("num_layers", "hidden_size", "intermediate_size")] == [10, 640, 2560]
    assert [get_preset("mamba-50m-mlm")[k] for k in ("num_layers", "hidden_size")] == [20, 256]
    assert get_preset("mamba-50m-mlm")["bidirectional"] is True
    assert [get_preset("mamba-50m-clm")[k] for k in ("num_layers", "hidden_size")] == [40, 256]
    assert [get_preset("hyena-50m")[k] for k in ("num_layers", "hidden_size", "intermediate_size")] == [7, 768, 3072]
    for name in ("gpt2-50m", "hyena-50m", "mamba-50m-clm"):
        assert 45e6 < count_parameters(name) < 55e6


VARIANTS = [
    (name, extra)
    for name in ("gpt2", "bert", "mamba", "hyena")
    for extra in (
        {},
        {"tie_embeddings": True, "pad_vocab_size_multiple": 8},
        {"bidirectional": True, "pos_embedding": "none", "intermediate_size": 96},
    )
] + [("mamba", {"ssm_layer": "Mamba2", "headdim": 32})]


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
        want = 70 * 64 + 444 * 64 + c.num_layers * (64 + mixer + mlp) + 64 + 70 * 64
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
    out = capsys.readouterr().out
    assert "backbones: gpt2, bert, mamba, hyena" in out
    assert f"{count_parameters('gpt2-50m'):,}" in out and "mamba-50m-clm" in out
    assert "losses:" in out and "tokenizers:" in out


@pytest.mark.slow
def test_helm_models_subcommand_runs():
    out = subprocess.run([sys.executable, "-m", "helm.cli", "models"], capture_output=True, text=True, check=True)
    assert "hyena-50m" in out.stdout and f"{count_parameters('hyena-50m'):,}" in out.stdout


def test_meta_count_equals_real_count():
    with torch.device("cpu"):
        real = create_model("hyena", preset="hyena-tiny").num_parameters()
    assert count_parameters("hyena-tiny") == real
