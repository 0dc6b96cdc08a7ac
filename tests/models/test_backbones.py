"""Behaviour every backbone must have, parametrized over list_models(): causality, bidirectionality, pad
invariance, vocab padding / tying, save -> load round trip, and a tiny config that learns real codons."""

from __future__ import annotations

import gzip
import json

import pandas as pd
import pytest
import torch

from helm.codons import MASK_ID, PAD_ID, codon_vocab
from helm.models import create_model, list_models, load_pretrained

# (backbone, bidirectional, extra ModelConfig fields); mamba's bidirectional layer comes in two layouts
MODES = [(name, bi, {}) for name in list_models() for bi in (False, True)] + [("mamba", True, {"bimamba": "concat"})]
IDS = [f"{name}-{'bi' if bi else 'causal'}" + "".join(f"-{v}" for v in extra.values()) for name, bi, extra in MODES]


def tiny(name: str, **kw):
    torch.manual_seed(0)
    return create_model(name, preset=f"{name}-tiny", **kw)


def random_tokens(b: int, length: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(6, 70, (b, length), generator=g)


@pytest.mark.parametrize(("name", "bidirectional", "extra"), MODES, ids=IDS)
def test_future_tokens_matter_only_when_bidirectional(name, bidirectional, extra):
    model = tiny(name, bidirectional=bidirectional, **extra).double().eval()
    x = random_tokens(3, 24)
    cut = 12
    x2 = x.clone()
    x2[:, cut:] = random_tokens(3, 24 - cut, seed=1)
    with torch.no_grad():
        y, y2 = model(x), model(x2)
    before = (y[:, :cut] - y2[:, :cut]).abs().max().item()
    assert y.shape == (3, 24, 70)
    if bidirectional:
        assert before > 1e-4, f"{name} bidirectional: earlier outputs ignore later tokens"
    else:
        assert before < 1e-9, f"{name} causal: output before t changed by {before} when tokens after t changed"
    assert (y[:, cut:] - y2[:, cut:]).abs().max().item() > 1e-4


@pytest.mark.parametrize(("name", "bidirectional", "extra"), MODES, ids=IDS)
def test_pads_never_change_real_outputs(name, bidirectional, extra):
    """Insert pads (with junk ids) at the left, middle and right of a row: the real tokens' outputs equal
    those of the unpadded row given the same position ids."""
    model = tiny(name, bidirectional=bidirectional, **extra).double().eval()
    real = random_tokens(1, 15)[0]
    layouts = [(6, 0, 0), (0, 6, 0), (0, 0, 6), (2, 3, 1)]  # pads at left, middle (after token 7), right
    length = 15 + 6
    ids = torch.full((len(layouts), length), PAD_ID)
    mask = torch.zeros(len(layouts), length, dtype=torch.bool)
    for row, (left, middle, right) in enumerate(layouts):
        keep = torch.cat([torch.zeros(left), torch.ones(7), torch.zeros(middle), torch.ones(8), torch.zeros(right)])
        keep = keep.bool()
        assert int(keep.sum()) == 15 and len(keep) == length
        ids[row, keep] = real
        ids[row, ~keep] = random_tokens(1, length - 15, seed=row)[0]  # junk under the mask
        mask[row] = keep
    positions = (mask.long().cumsum(1) - 1).clamp(min=0)
    with torch.no_grad():
        reference = model(real[None], torch.ones(1, 15, dtype=torch.bool))[0]
        padded = model(ids, mask, positions)
        emb_ref = model.embed(real[None])[0]
        emb = model.embed(ids, mask, positions)
    for row in range(len(layouts)):
        torch.testing.assert_close(padded[row][mask[row]], reference, atol=1e-9, rtol=1e-9)
        torch.testing.assert_close(emb[row][mask[row]], emb_ref, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("name", list_models())
def test_vocab_padding_tying_and_round_trip(name, tmp_path):
    model = tiny(name, pad_vocab_size_multiple=16, tie_embeddings=True, dropout=0.1).eval()
    assert model.lm_head.weight.shape[0] == 80 and model.lm_head.weight is model.get_input_embeddings().weight
    x = random_tokens(2, 10)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[0, 7:] = False
    with torch.no_grad():
        logits = model(x, mask)
    assert logits.shape == (2, 10, 70)
    model.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    loaded = load_pretrained(tmp_path / "m")
    assert type(loaded) is type(model) and loaded.config == model.config
    assert loaded.lm_head.weight is loaded.get_input_embeddings().weight
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with torch.no_grad():
        assert torch.equal(loaded(x, mask), logits)


@pytest.mark.parametrize(
    ("name", "extra"),
    [(name, {}) for name in list_models()] + [("mamba", {"bimamba": "concat"})],
    ids=[*list_models(), "mamba-concat"],
)
def test_untied_round_trip_keeps_head_separate(name, extra, tmp_path):
    model = tiny(name, bidirectional=True, **extra)
    model.save_pretrained(tmp_path)
    loaded = load_pretrained(tmp_path)
    assert loaded.config == model.config
    assert loaded.lm_head.weight is not loaded.get_input_embeddings().weight
    assert torch.equal(loaded.lm_head.weight, model.lm_head.weight)
    x = random_tokens(2, 9)
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))


def test_model_saved_before_bimamba_existed_loads_as_add(tmp_path):
    """A config.json written before the `bimamba` field existed (no such key) loads with the layout it was
    trained with: add, the default."""
    model = tiny("mamba", bidirectional=True)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["bimamba"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert load_pretrained(tmp_path).config.bimamba == "add"


def load_codons(shared_data, n: int, length: int) -> torch.Tensor:
    """First n real iCodon CDSs, codon-tokenized, cut to `length` codons."""
    with gzip.open(shared_data / "downstream" / "iCodon_mRNA_stability_testing.csv.gz", "rt") as fh:
        seqs = pd.read_csv(fh, usecols=["coding"], nrows=4 * n)["coding"]
    vocab = codon_vocab()
    rows = [[vocab.id(s[i : i + 3]) for i in range(0, 3 * length, 3)] for s in seqs if len(s) >= 3 * length]
    assert len(rows) >= n
    return torch.tensor(rows[:n])


@pytest.mark.slow  # 30 optimizer steps per backbone and mode: seconds each, more on a busy machine
@pytest.mark.parametrize(("name", "bidirectional", "extra"), MODES, ids=IDS)
def test_tiny_config_learns_real_codons(name, bidirectional, extra, shared_data):
    data = load_codons(shared_data, 8, 32)
    model = tiny(name, bidirectional=bidirectional, **extra)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    if bidirectional:  # MLM: predict 15% masked codons (a fixed draw, so 30 steps can fit them)
        picked = torch.rand(data.shape, generator=torch.Generator().manual_seed(0)) < 0.15
        inputs, labels = data.masked_fill(picked, MASK_ID), data.masked_fill(~picked, -100)
    else:  # CLM: labels aligned by the caller (models never shift)
        inputs, labels = data[:, :-1], data[:, 1:]
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(model(inputs).flatten(0, 1), labels.flatten(), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    print(f"{name} bidirectional={bidirectional} {extra}: loss {first:.3f} -> {last:.3f}")
    assert last < 0.85 * first
