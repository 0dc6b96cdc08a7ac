"""gpt2 against transformers.GPT2Model (same weights, causal) and against a brute-force attention written
from the definition (causal and bidirectional, with pads); rotary against transformers' Llama rotary."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2Model, LlamaConfig
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

from helm.models import create_model
from helm.models.gpt2 import Bf16CpuAttention, apply_rotary, attention_mask_4d

CFG = dict(hidden_size=48, num_layers=2, num_heads=3, intermediate_size=80, max_seq_len=40, activation="gelu_new")


def batch():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(6, 70, (3, 17), generator=g)
    mask = torch.ones(3, 17, dtype=torch.bool)
    mask[1, 12:] = False  # right padding
    mask[2, 5:9] = False  # a hole
    return ids, mask


def brute_force_gpt2(sd: dict, ids, mask, n_layers, n_heads, causal, act):
    """GPT-2 written out from its definition on a state dict (explicit softmax, -inf masks)."""
    x = sd["wte.weight"][ids] + sd["wpe.weight"][torch.arange(ids.shape[1])]
    b, length, h = x.shape
    d = h // n_heads
    allowed = mask[:, None, None, :].expand(b, 1, length, length).clone()
    if causal:
        allowed &= torch.ones(length, length, dtype=torch.bool).tril()
    allowed |= torch.eye(length, dtype=torch.bool)
    for i in range(n_layers):
        p = {k[len(f"h.{i}.") :]: v for k, v in sd.items() if k.startswith(f"h.{i}.")}
        a = F.layer_norm(x, (h,), p["ln_1.weight"], p["ln_1.bias"], 1e-5)
        q, k, v = (a @ p["attn.c_attn.weight"] + p["attn.c_attn.bias"]).split(h, -1)
        q, k, v = (t.view(b, length, n_heads, d).transpose(1, 2) for t in (q, k, v))
        scores = (q @ k.transpose(-1, -2) / math.sqrt(d)).masked_fill(~allowed, float("-inf"))
        att = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, length, h)
        x = x + att @ p["attn.c_proj.weight"] + p["attn.c_proj.bias"]
        m = F.layer_norm(x, (h,), p["ln_2.weight"], p["ln_2.bias"], 1e-5)
        x = x + act(m @ p["mlp.c_fc.weight"] + p["mlp.c_fc.bias"]) @ p["mlp.c_proj.weight"] + p["mlp.c_proj.bias"]
    return F.layer_norm(x, (h,), sd["ln_f.weight"], sd["ln_f.bias"], 1e-5)


def test_matches_hf_gpt2model_causal():
    torch.manual_seed(0)
    ours = create_model("gpt2", **CFG).eval()
    hf = GPT2Model(
        GPT2Config(vocab_size=70, n_positions=40, n_embd=48, n_layer=2, n_head=3, n_inner=80,
                   activation_function="gelu_new", resid_pdrop=0, embd_pdrop=0, attn_pdrop=0)
    ).eval()  # fmt: skip
    hf.load_state_dict(ours.transformer.state_dict(), strict=True)
    ids, mask = batch()
    with torch.no_grad():
        ref = hf(input_ids=ids).last_hidden_state
        torch.testing.assert_close(ours.embed(ids), ref, atol=1e-5, rtol=1e-5)
        ref = hf(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        got = ours.embed(ids, mask)
    torch.testing.assert_close(got[mask], ref[mask], atol=1e-5, rtol=1e-5)
    logits = ours(ids)
    torch.testing.assert_close(logits, ours.embed(ids) @ ours.lm_head.weight.T)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_matches_brute_force_attention(bidirectional):
    torch.manual_seed(1)
    ours = create_model("gpt2", bidirectional=bidirectional, **CFG).double().eval()
    ids, mask = batch()
    sd = {k: v for k, v in ours.transformer.state_dict().items()}
    from transformers.activations import ACT2FN

    ref = brute_force_gpt2(sd, ids, mask, 2, 3, causal=not bidirectional, act=ACT2FN["gelu_new"])
    with torch.no_grad():
        got = ours.embed(ids, mask)
    torch.testing.assert_close(got[mask], ref[mask], atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("masking", ["none", "causal", "pads", "pads+causal"])
def test_bf16_cpu_attention_function_is_attention(masking):
    """The bf16 CPU attention's forward and hand-written backward, run in float64, against softmax(q k^T / sqrt(d)
    with -inf masks) v written out, and autograd through it."""
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 3, 9, 8, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))
    pads = torch.ones(2, 9, dtype=torch.bool)
    pads[1, 6:] = False
    allowed = {
        "none": None,
        "causal": torch.ones(9, 9, dtype=torch.bool).tril(),
        "pads": attention_mask_4d(pads, 9, False, q.device),
        "pads+causal": attention_mask_4d(pads, 9, True, q.device),
    }[masking]
    scores = q @ k.transpose(-1, -2) / math.sqrt(8)
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    ref = torch.softmax(scores, -1) @ v
    ours = Bf16CpuAttention.apply(q, k, v, allowed)
    torch.testing.assert_close(ours, ref, atol=1e-12, rtol=1e-12)
    grad_out = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(ours, (q, k, v), grad_out), torch.autograd.grad(ref, (q, k, v), grad_out)):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


def test_bf16_cpu_attention_has_no_double_backward():
    q, k, v = (torch.randn(1, 2, 5, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))
    with pytest.raises(RuntimeError, match="no double backward"):
        torch.autograd.grad(Bf16CpuAttention.apply(q, k, v, None).sum(), q, create_graph=True)


def test_rotary_matches_transformers_llama_rotary():
    head_dim, heads = 16, 2
    cfg = LlamaConfig(hidden_size=head_dim * heads, num_attention_heads=heads, rope_theta=10000.0)
    rope = LlamaRotaryEmbedding(cfg)
    positions = torch.tensor([[0, 1, 2, 5, 9, 30]])
    q, k = torch.randn(2, 1, heads, 6, head_dim).unbind(0)
    cos, sin = rope(q, positions)
    q_ref, k_ref = apply_rotary_pos_emb(q, k, cos, sin)
    from helm.models.gpt2 import Rotary

    ours_cos, ours_sin = Rotary(head_dim)(positions)
    torch.testing.assert_close(apply_rotary(q, ours_cos, ours_sin), q_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(apply_rotary(k, ours_cos, ours_sin), k_ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("rot_dim", [None, 8])
def test_rotary_model_depends_on_relative_positions_only(rot_dim):
    torch.manual_seed(2)
    model = create_model("gpt2", preset="gpt2-tiny", pos_embedding="rotary", pos_embedding_dim=rot_dim).double().eval()
    assert model.transformer.wpe is None
    ids, _ = batch()
    positions = torch.arange(17).expand(3, 17)
    with torch.no_grad():
        base = model(ids, position_ids=positions)
        shifted = model(ids, position_ids=positions + 100)  # past max_seq_len is fine: no table
        swapped = model(ids.flip(1))
    torch.testing.assert_close(shifted, base, atol=1e-9, rtol=1e-9)
    assert (swapped.flip(1) - base).abs().max() > 1e-3  # order matters


def test_no_position_embedding_is_permutation_equivariant_when_bidirectional():
    model = create_model("gpt2", preset="gpt2-tiny", pos_embedding="none", bidirectional=True).double().eval()
    ids, _ = batch()
    perm = torch.randperm(17)
    with torch.no_grad():
        torch.testing.assert_close(model(ids[:, perm]), model(ids)[:, perm], atol=1e-9, rtol=1e-9)


def test_concat_position_embedding_channels():
    model = create_model("gpt2", preset="gpt2-tiny", pos_embedding_apply="concat", pos_embedding_dim=16)
    assert model.transformer.wte.weight.shape == (70, 48) and model.transformer.wpe.weight.shape == (256, 16)
    assert model(batch()[0]).shape == (3, 17, 70)
    with pytest.raises(ValueError, match="cannot tie"):
        create_model(
            "gpt2", preset="gpt2-tiny", pos_embedding_apply="concat", pos_embedding_dim=16, tie_embeddings=True
        )


def test_position_past_table_raises():
    model = create_model("gpt2", preset="gpt2-tiny", max_seq_len=8)
    with pytest.raises(ValueError, match="max_seq_len=8"):
        model(torch.randint(6, 70, (1, 9)))
