"""Attention without an explicit mask when a batch has no pads (fused/flash kernels stay eligible on GPU).

An all-ones mask and no mask give identical outputs and both reach SDPA with ``attn_mask=None`` (``is_causal`` for
causal models); a batch with pads still gets its mask, and each padded row equals the row run on its own. In bf16 on
the CPU gpt2 takes its own attention (helm.models.gpt2.Bf16CpuAttention) instead of SDPA, except with attention
dropout or above BF16_CPU_MATH_MAX_LEN tokens."""

from __future__ import annotations

import pytest
import torch

from helm.models import create_model

VARIANTS = [(m, bidir, pos) for m in ("gpt2", "bert") for bidir in (True, False) for pos in ("absolute", "rotary")]


def _model(name: str, bidirectional: bool, pos: str):
    torch.manual_seed(0)
    return create_model(f"{name}-tiny", vocab_size=70, bidirectional=bidirectional, pos_embedding=pos).eval()


@pytest.fixture
def sdpa_calls(monkeypatch):
    """Records (mask shape or None, is_causal) of every scaled_dot_product_attention call."""
    calls = []
    original = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, **kw):
        calls.append((None if attn_mask is None else tuple(attn_mask.shape), is_causal))
        return original(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, **kw)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    return calls


@pytest.mark.parametrize("name, bidirectional, pos", VARIANTS)
def test_no_pads_take_the_mask_free_path_with_identical_outputs(name, bidirectional, pos, sdpa_calls):
    model = _model(name, bidirectional, pos)
    ids = torch.randint(6, 70, (3, 21), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain = model(ids)
        ones = model(ids, torch.ones_like(ids, dtype=torch.bool))
    assert torch.equal(plain, ones)
    assert sdpa_calls and set(sdpa_calls) == {(None, not bidirectional)}
    if name == "gpt2":  # the fast path is the old explicit-mask path's exact result (same SDPA math on CPU)
        from helm.models.gpt2 import attention_mask_4d

        body = model.transformer
        full = torch.ones_like(ids, dtype=torch.bool)
        mask4 = attention_mask_4d(full, ids.shape[1], not bidirectional, ids.device)
        rotary = body.rotary(torch.arange(ids.shape[1]).expand_as(ids)) if body.rotary is not None else None
        with torch.no_grad():
            x = body.drop(body._embed_tokens(ids, None))
            for block in body.h:
                x = block(x, mask4, not bidirectional, rotary)
            assert torch.equal(model.lm_head(body.ln_f(x)), plain)


@pytest.mark.parametrize("name, bidirectional, pos", VARIANTS)
def test_pads_keep_the_masked_path(name, bidirectional, pos, sdpa_calls):
    model = _model(name, bidirectional, pos)
    ids = torch.randint(6, 70, (3, 21), generator=torch.Generator().manual_seed(2))
    lengths = [21, 14, 9]
    mask = torch.arange(21)[None, :] < torch.tensor(lengths)[:, None]
    with torch.no_grad():
        padded = model(ids, mask)
        assert all(shape is not None and not causal for shape, causal in sdpa_calls)
        for row, n in enumerate(lengths):  # each row alone, unpadded (the mask-free path)
            alone = model(ids[row : row + 1, :n])
            torch.testing.assert_close(padded[row, :n], alone[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_gpt2_in_cpu_bf16_takes_its_own_attention(bidirectional, sdpa_calls, monkeypatch):
    from helm.models import gpt2

    model = _model("gpt2", bidirectional, "absolute").train()
    ids = torch.randint(6, 70, (3, 21), generator=torch.Generator().manual_seed(3))
    mask = torch.arange(21)[None, :] < torch.tensor([21, 14, 9])[:, None]
    with torch.no_grad():
        full = model(ids, mask)  # fp32: SDPA
    sdpa_calls.clear()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain, ones, padded = model(ids), model(ids, torch.ones_like(mask)), model(ids, mask)
    assert not sdpa_calls
    assert torch.equal(plain, ones)  # the mask-free path is exact in bf16 too
    torch.testing.assert_close(padded.float()[mask], full[mask], rtol=0.05, atol=0.05)  # bf16 rounding
    padded.float().logsumexp(-1)[mask].mean().backward()
    assert all(p.grad is not None and p.grad.isfinite().all() for p in model.parameters() if p.requires_grad)

    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH), torch.autocast("cpu", dtype=torch.bfloat16):
        model(ids)  # SDPA restricted to its math kernel (second-order optimizers): SDPA's
    assert sdpa_calls
    sdpa_calls.clear()
    monkeypatch.setattr(gpt2, "BF16_CPU_MATH_MAX_LEN", 20)  # longer inputs keep SDPA's O(L)-memory kernel
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(ids)
    assert sdpa_calls
    sdpa_calls.clear()
    dropout = create_model("gpt2-tiny", vocab_size=70, bidirectional=bidirectional, attn_dropout=0.1).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        dropout(ids[:, :8])  # attention dropout: SDPA's
    assert sdpa_calls
