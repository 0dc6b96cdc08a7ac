"""bert against transformers.BertModel built independently from the same numbers and given our weights (default
absolute positions), and every other position option against a brute-force BERT written from its definition."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import BertConfig, BertModel
from transformers.models.bert.modeling_bert import BertEmbeddings as BertEmbeddingsHF

from helm.models import create_model, load_pretrained
from helm.models.bert import ROTARY_ATTENTION, BertLM


@pytest.mark.parametrize("bidirectional", [True, False])
def test_matches_hf_bertmodel(bidirectional):
    torch.manual_seed(0)
    ours = create_model(
        "bert", hidden_size=32, num_layers=2, num_heads=4, intermediate_size=48, max_seq_len=30,
        activation="gelu", bidirectional=bidirectional, pad_vocab_size_multiple=8,
    ).eval()  # fmt: skip
    hf = BertModel(
        BertConfig(vocab_size=72, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
                   max_position_embeddings=30, type_vocab_size=1, hidden_dropout_prob=0, attention_probs_dropout_prob=0,
                   is_decoder=not bidirectional),
        add_pooling_layer=False,
    ).eval()  # fmt: skip
    hf.load_state_dict(ours.bert.state_dict(), strict=True)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(6, 70, (2, 12), generator=g)
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[1, 9:] = False
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        got = ours.embed(ids, mask)
        logits = ours(ids, mask)
    torch.testing.assert_close(got[mask], ref[mask], atol=1e-5, rtol=1e-5)
    assert logits.shape == (2, 12, 70)


# ---------------------------------------------------------------------------------- the other position options
# (label, extra config): every position option of the attention backbones (the default first).
OPTIONS = {
    "absolute": {},
    "none": {"pos_embedding": "none"},
    "concat": {"pos_embedding_apply": "concat", "pos_embedding_dim": 8},
    "rotary": {"pos_embedding": "rotary"},
    "rotary4": {"pos_embedding": "rotary", "pos_embedding_dim": 4},
}
SMALL = dict(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=48, max_seq_len=40, activation="gelu")
MODES = [(opt, bi) for opt in OPTIONS for bi in (False, True)]
IDS = [f"{opt}-{'bi' if bi else 'causal'}" for opt, bi in MODES]


def small(option: str, seed: int = 0, **kw):
    torch.manual_seed(seed)
    return create_model("bert", **SMALL, **OPTIONS[option], **kw)


def tokens(b: int, length: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(6, 70, (b, length), generator=torch.Generator().manual_seed(seed))


def sharpen(model):
    """Scale up q and k: at init (std 0.02) attention is nearly uniform and positions barely show in outputs."""
    with torch.no_grad():
        for layer in model.bert.encoder.layer:
            layer.attention.self.query.weight.mul_(20)
            layer.attention.self.key.weight.mul_(20)
    return model


def padded_batch():
    """Three rows of 17: full, right-padded, a hole in the middle; positions count real tokens only."""
    ids = tokens(3, 17)
    mask = torch.ones(3, 17, dtype=torch.bool)
    mask[1, 12:] = False
    mask[2, 5:9] = False
    return ids, mask, (mask.long().cumsum(1) - 1).clamp(min=0)


def brute_force_bert(model, ids, mask, positions) -> torch.Tensor:
    """Post-LN BERT written out from its definition on our state dict: explicit per-head loop, softmax with -inf
    masks, rotary written from its definition (pairs (j, j + dim/2) turned by position * 10000^(-2j/dim))."""
    c, sd = model.config, model.bert.state_dict()

    def ln(t, name):
        return F.layer_norm(t, t.shape[-1:], sd[f"{name}.weight"], sd[f"{name}.bias"], 1e-12)

    def linear(t, name):
        return t @ sd[f"{name}.weight"].T + sd[f"{name}.bias"]

    x = sd["embeddings.word_embeddings.weight"][ids]
    if c.pos_embedding == "absolute":
        pos = sd["embeddings.position_embeddings.weight"][positions]
        x = torch.cat([x, pos], dim=-1) if c.pos_embedding_apply == "concat" else x + pos
    x = ln(x + sd["embeddings.token_type_embeddings.weight"][0], "embeddings.LayerNorm")
    b, length, h = x.shape
    d = h // c.num_heads
    allowed = mask[:, None, :].expand(b, length, length)
    if not c.bidirectional:
        allowed = allowed & torch.ones(length, length, dtype=torch.bool).tril()
    rot = c.pos_embedding_dim or d
    theta = positions[..., None].double() * 10000.0 ** (-2 * torch.arange(rot // 2).double() / rot)

    def rotate(t):  # [B, L, d]
        x1, x2, rest = t[..., : rot // 2], t[..., rot // 2 : rot], t[..., rot:]
        return torch.cat([x1 * theta.cos() - x2 * theta.sin(), x2 * theta.cos() + x1 * theta.sin(), rest], dim=-1)

    for i in range(c.num_layers):
        p = f"encoder.layer.{i}."
        q, k, v = (linear(x, p + f"attention.self.{n}") for n in ("query", "key", "value"))
        heads = []
        for head in range(c.num_heads):
            qh, kh, vh = (t[..., head * d : (head + 1) * d] for t in (q, k, v))
            if c.pos_embedding == "rotary":
                qh, kh = rotate(qh), rotate(kh)
            scores = (qh @ kh.transpose(1, 2) / math.sqrt(d)).masked_fill(~allowed, float("-inf"))
            heads.append(scores.softmax(-1) @ vh)
        a = ln(linear(torch.cat(heads, dim=-1), p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
        x = ln(linear(F.gelu(linear(a, p + "intermediate.dense")), p + "output.dense") + a, p + "output.LayerNorm")
    return x


@pytest.mark.parametrize(("option", "bidirectional"), MODES, ids=IDS)
def test_matches_brute_force(option, bidirectional):
    model = sharpen(small(option, bidirectional=bidirectional).double().eval())
    ids, mask, positions = padded_batch()
    with torch.no_grad():
        got = model.embed(ids, mask, positions)
        plain = model.embed(ids)  # no mask, default positions 0..L-1
    tol = dict(atol=1e-8, rtol=1e-8)  # not 1e-10: Rotary's inv_freq is built in float32
    ref = brute_force_bert(model, ids, mask, positions)
    torch.testing.assert_close(got[mask], ref[mask], **tol)
    ref = brute_force_bert(model, ids, torch.ones_like(mask), torch.arange(17).expand(3, 17))
    torch.testing.assert_close(plain, ref, **tol)


@pytest.mark.parametrize(("option", "bidirectional"), MODES, ids=IDS)
def test_future_tokens_matter_only_when_bidirectional(option, bidirectional):
    model = small(option, bidirectional=bidirectional).double().eval()
    x, cut = tokens(3, 24), 12
    x2 = x.clone()
    x2[:, cut:] = tokens(3, 24 - cut, seed=1)
    with torch.no_grad():
        y, y2 = model(x), model(x2)
    before = (y[:, :cut] - y2[:, :cut]).abs().max().item()
    if bidirectional:
        assert before > 1e-4
    else:
        assert before < 1e-9
    assert (y[:, cut:] - y2[:, cut:]).abs().max().item() > 1e-4


@pytest.mark.parametrize(("option", "bidirectional"), MODES, ids=IDS)
def test_pads_never_change_real_outputs(option, bidirectional):
    """Pads (junk ids under the mask) at the left, middle and right: real outputs equal the unpadded row's."""
    model = small(option, bidirectional=bidirectional).double().eval()
    real = tokens(1, 15)[0]
    layouts = [(6, 0, 0), (0, 6, 0), (0, 0, 6), (2, 3, 1)]
    ids = tokens(len(layouts), 21, seed=3)
    mask = torch.zeros(len(layouts), 21, dtype=torch.bool)
    for row, (left, middle, right) in enumerate(layouts):
        mask[row] = torch.cat(
            [torch.zeros(left), torch.ones(7), torch.zeros(middle), torch.ones(8), torch.zeros(right)]
        )
        ids[row, mask[row]] = real
    positions = (mask.long().cumsum(1) - 1).clamp(min=0)
    with torch.no_grad():
        reference = model(real[None])[0]
        padded = model(ids, mask, positions)
    for row in range(len(layouts)):
        torch.testing.assert_close(padded[row][mask[row]], reference, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize(("option", "bidirectional"), MODES, ids=IDS)
def test_save_load_round_trip(option, bidirectional, tmp_path):
    model = small(option, bidirectional=bidirectional, dropout=0.1).eval()
    model.save_pretrained(tmp_path)
    loaded = load_pretrained(tmp_path)
    assert type(loaded) is BertLM and loaded.config == model.config
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ids, mask, positions = padded_batch()
    with torch.no_grad():
        assert torch.equal(loaded(ids, mask, positions), model(ids, mask, positions))


def hf_keys(**config) -> set[str]:
    hf = BertModel(BertConfig(vocab_size=70, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                              intermediate_size=48, type_vocab_size=1, **config), add_pooling_layer=False)  # fmt: skip
    return set(hf.state_dict())


@pytest.mark.parametrize("option", OPTIONS)
def test_parameter_count_and_names(option):
    model = small(option)
    c = model.config
    h, i, v, n_layers, s = c.hidden_size, c.intermediate_size, c.padded_vocab_size, c.num_layers, c.max_seq_len
    concat = c.pos_embedding == "absolute" and c.pos_embedding_apply == "concat"
    words = v * (h - c.pos_embedding_dim) if concat else v * h
    positions = {"absolute": s * (c.pos_embedding_dim if concat else h), "none": 0, "rotary": 0}[c.pos_embedding]
    block = 4 * (h * h + h) + 2 * h + (h * i + i) + (i * h + h) + 2 * h  # q k v o, LN, intermediate, output, LN
    assert model.num_parameters() == words + positions + h + 2 * h + n_layers * block + v * h
    table = "embeddings.position_embeddings.weight"
    want = hf_keys() if c.pos_embedding == "absolute" else hf_keys() - {table}
    assert set(model.bert.state_dict()) == want  # HF's names; no position table when there is none
    assert set(model.state_dict()) == {f"bert.{k}" for k in want} | {"lm_head.weight"}
    if option == "absolute":  # the default is HF's own BertModel, untouched
        assert type(model.bert.embeddings) is BertEmbeddingsHF


def test_no_position_embedding_drops_exactly_the_table():
    absolute, none = small("absolute"), small("none")
    assert absolute.num_parameters() - none.num_parameters() == 40 * 32
    assert none.bert.embeddings.position_embeddings is None


def test_rotary_depends_on_relative_positions_only():
    """Shifting every position id by a constant leaves rotary outputs unchanged (even past max_seq_len: there is no
    table) and changes an absolute model's; and the rotary is really applied: the same weights without it (pos
    'none') give other outputs, and are permutation equivariant when bidirectional where rotary is not."""
    rotary = sharpen(small("rotary", bidirectional=True).double().eval())
    none = small("none", bidirectional=True).double().eval()
    none.load_state_dict(rotary.state_dict(), strict=True)  # identical weights, same names
    absolute = sharpen(small("absolute", bidirectional=True).double().eval())
    ids, mask, positions = padded_batch()
    perm = torch.randperm(17, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        base = rotary(ids, mask, positions)
        torch.testing.assert_close(rotary(ids, mask, positions + 100), base, atol=1e-9, rtol=1e-9)
        assert (rotary(ids, mask, positions + 5) - base).abs().max() < 1e-9
        assert (absolute(ids, mask, positions + 5) - absolute(ids, mask, positions))[mask].abs().max() > 1e-3
        assert (none(ids, mask, positions) - base)[mask].abs().max() > 1e-3
        torch.testing.assert_close(none(ids[:, perm]), none(ids)[:, perm], atol=1e-9, rtol=1e-9)
        assert (rotary(ids[:, perm]) - rotary(ids)[:, perm]).abs().max() > 1e-3


def test_rotary_dims_are_validated():
    with pytest.raises(ValueError, match="rotary dims must be even and <= head size 8"):
        create_model("bert", **SMALL, pos_embedding="rotary", pos_embedding_dim=5)
    with pytest.raises(ValueError, match="rotary dims must be even and <= head size 8"):
        create_model("bert", **SMALL, pos_embedding="rotary", pos_embedding_dim=16)


def test_rotary_leaves_other_bert_models_alone():
    """The rotary attention is chosen per model (its HF config), not globally."""
    rotary = small("rotary")
    assert rotary.bert.config._attn_implementation == ROTARY_ATTENTION
    assert create_model("bert", **SMALL).bert.config._attn_implementation == "sdpa"
    assert small("none").bert.config._attn_implementation == "sdpa"


def test_tied_head_without_position_embedding():
    model = small("none", tie_embeddings=True, pad_vocab_size_multiple=8)
    assert model.lm_head.weight is model.get_input_embeddings().weight is model.bert.embeddings.word_embeddings.weight
    assert model.lm_head.weight.shape == (72, 32)
    ids, mask, _ = padded_batch()
    with torch.no_grad():
        torch.testing.assert_close(model(ids, mask), model.embed(ids, mask) @ model.lm_head.weight[:70].T)


def test_concat_channels():
    model = small("concat")
    emb = model.bert.embeddings
    assert emb.word_embeddings.weight.shape == (70, 24) and emb.position_embeddings.weight.shape == (40, 8)
    with pytest.raises(ValueError, match="max_seq_len=40"):
        model(tokens(1, 41))
