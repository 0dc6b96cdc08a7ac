"""Mamba: the scans against naive step-by-step recurrences (values and gradients), the Bi-Mamba layouts
against a model written out with those recurrences, mamba_ssm's parameter names, and the Mamba2 model's
causality / bidirectionality / pad invariance."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from helm.models import count_parameters, cpu_scan, create_model
from helm.models.mamba import (
    HAS_MAMBA2_KERNELS,
    HAS_MAMBA_SSM,
    Mamba,
    Mamba2,
    SelectiveScan,
    ssd_scan,
)


def naive_selective_scan(x, dt, A, B, C, D):
    b, length, d = x.shape
    h = torch.zeros(b, d, A.shape[1], dtype=x.dtype)
    ys = []
    for t in range(length):
        h = torch.exp(dt[:, t, :, None] * A) * h + (dt[:, t] * x[:, t])[:, :, None] * B[:, t, None, :]
        ys.append((h * C[:, t, None, :]).sum(-1) + D * x[:, t])
    return torch.stack(ys, 1)


def naive_ssd(x, dt, A, B, C):
    b, length, nh, p = x.shape
    h = torch.zeros(b, nh, p, B.shape[-1], dtype=x.dtype)
    ys = []
    for t in range(length):
        decay = torch.exp(dt[:, t] * A)[:, :, None, None]
        h = decay * h + (dt[:, t, :, None] * x[:, t])[..., None] * B[:, t, None, None, :]
        ys.append((h * C[:, t, None, None, :]).sum(-1))
    return torch.stack(ys, 1)


def rms_norm(x, weight, eps=1e-5):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def naive_mamba_mixer(m, h):
    """mamba_ssm's Mamba mixer written out: causal depthwise conv as a sum of shifts, the naive scan."""
    length, kernel = h.shape[1], m.conv1d.weight.shape[-1]
    x, z = (h @ m.in_proj.weight.T).chunk(2, dim=-1)
    shifted = F.pad(x, (0, 0, kernel - 1, 0))
    x = F.silu(sum(shifted[:, k : k + length] * m.conv1d.weight[:, 0, k] for k in range(kernel)) + m.conv1d.bias)
    dt, B, C = (x @ m.x_proj.weight.T).split([m.dt_rank, m.d_state, m.d_state], dim=-1)
    dt = F.softplus(dt @ m.dt_proj.weight.T + m.dt_proj.bias)
    y = naive_selective_scan(x, dt, -torch.exp(m.A_log), B, C, m.D) * F.silu(z)
    return y @ m.out_proj.weight.T


def naive_branch(layer, x, reverse_mixer=None):
    """What one pre-norm block adds to x: mixer (plus, if given, a mixer on the flipped sequence), then the
    gated MLP (gelu) on x + mixer output."""
    h = rms_norm(x, layer.norm.weight)
    y = naive_mamba_mixer(layer.mixer, h)
    if reverse_mixer is not None:
        y = y + naive_mamba_mixer(reverse_mixer, h.flip(1)).flip(1)
    a, gate = (rms_norm(x + y, layer.norm2.weight) @ layer.mlp.fc1.weight.T).chunk(2, dim=-1)
    return y + (a * F.gelu(gate)) @ layer.mlp.fc2.weight.T


def naive_bimamba(model, ids):
    """Logits of a bidirectional mamba for unpadded rows, each layer written out per layout:
    add:    x + mixer(n(x)) + flip(mixer_rev(flip(n(x)))), then + MLP
    concat: x + proj([fwd block branch(x) ; flip(bwd block branch(flip(x)))])"""
    body = model.backbone
    x = body.wte(ids) + body.wpe(torch.arange(ids.shape[1]))
    for layer in body.layers:
        if model.config.bimamba == "concat":
            forward = naive_branch(layer.fwd, x)
            backward = naive_branch(layer.bwd, x.flip(1)).flip(1)
            x = x + torch.cat([forward, backward], dim=-1) @ layer.proj.weight.T
        else:
            x = x + naive_branch(layer, x, layer.mixer_rev)
    return rms_norm(x, body.norm_f.weight) @ model.lm_head.weight.T


@pytest.mark.parametrize("bimamba", ["add", "concat"])
def test_bimamba_layouts_equal_the_written_out_model(bimamba):
    """Both layouts against naive_bimamba, on full rows and on a row whose last tokens are pads (the backward
    direction must start at the last real token, not at a pad)."""
    torch.manual_seed(0)
    model = create_model("mamba", preset="mamba-tiny", bidirectional=True, bimamba=bimamba).double().eval()
    names = {n.split(".", 1)[-1] for n, _ in model.backbone.layers.named_parameters()}
    if bimamba == "concat":  # a forward and a backward block, each with its own mixer, norms and MLP
        assert "proj.weight" in names and "bwd.mlp.fc1.weight" in names and "fwd.mixer.A_log" in names
    else:  # two mixers, one MLP
        assert "mixer_rev.A_log" in names and not any(n.startswith(("fwd.", "bwd.")) for n in names)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(6, 70, (2, 13), generator=g)
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[1, 9:] = False
    with torch.no_grad():
        torch.testing.assert_close(model(ids), naive_bimamba(model, ids), atol=1e-10, rtol=1e-10)
        padded = model(ids, mask)
        torch.testing.assert_close(padded[0], naive_bimamba(model, ids[:1])[0], atol=1e-10, rtol=1e-10)
        torch.testing.assert_close(padded[1, :9], naive_bimamba(model, ids[1:, :9])[0], atol=1e-10, rtol=1e-10)


def test_bimamba_concat_parameter_count_20x256():
    """The seed's "50M" Bi-Mamba command (20 layers x 256, intermediate 1024) under both layouts, by hand:
    a block is norm + mixer + norm2 + gated MLP; add = one block + a second mixer; concat = two blocks + a
    2h x h projection. Only concat lands near 50M (the causal 40 x 256 counts 49.1M)."""
    h, i, d, r, s, k, v, p = 256, 1024, 512, 16, 16, 4, 70, 444
    mixer = h * 2 * d + d * k + d + d * (r + 2 * s) + r * d + d + d * s + d + d * h
    block = h + mixer + h + 3 * h * i
    outside = v * h + p * h + h + v * h  # embeddings, final norm, head
    add, concat = outside + 20 * (block + mixer), outside + 20 * (2 * block + 2 * h * h)
    shape = dict(num_layers=20, hidden_size=256, intermediate_size=1024, bidirectional=True, max_seq_len=p)
    assert count_parameters("mamba", **shape, bimamba="add") == add == 33_399_040
    assert count_parameters("mamba", **shape, bimamba="concat") == concat == 51_759_360
    assert count_parameters("mamba-50m-mlm", max_seq_len=p) == concat


def scan_inputs(length, d=6, n=4, seed=0, rows=2):
    g = torch.Generator().manual_seed(seed)
    kw = dict(generator=g, dtype=torch.float64)
    x = torch.randn(rows, length, d, **kw)
    dt = torch.nn.functional.softplus(torch.randn(rows, length, d, **kw))  # up to several: strong decays too
    A = -torch.rand(d, n, **kw) * 16
    B, C, D = torch.randn(rows, length, n, **kw), torch.randn(rows, length, n, **kw), torch.randn(d, **kw)
    return [t.requires_grad_() for t in (x, dt, A, B, C, D)]


SCANS = {
    "pytorch": SelectiveScan.apply,
    "c-kernel": pytest.param(
        cpu_scan.CpuSelectiveScan.apply,
        marks=pytest.mark.skipif(not cpu_scan.available(), reason=f"C kernel: {cpu_scan.unavailable_reason()}"),
    ),
}


@pytest.mark.parametrize("scan", SCANS.values(), ids=SCANS.keys())
@pytest.mark.parametrize(("length", "d", "n"), [(1, 6, 4), (2, 6, 4), (5, 6, 4), (16, 6, 4), (37, 6, 4), (9, 37, 16)])
def test_selective_scan_equals_naive_recurrence(scan, length, d, n):
    """Both implementations, in float64; d = 37 spans two full 16-channel blocks of the kernel and a partial one."""
    inputs = scan_inputs(length, d, n)
    ours, ref = scan(*inputs), naive_selective_scan(*inputs)
    torch.testing.assert_close(ours, ref, atol=1e-10, rtol=1e-10)
    grad_out = torch.randn_like(ref)
    g_ours = torch.autograd.grad(ours, inputs, grad_out, materialize_grads=True)
    g_ref = torch.autograd.grad(ref, inputs, grad_out, materialize_grads=True)
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize(("length", "chunk"), [(1, 4), (7, 4), (16, 4), (30, 8), (30, 64)])
def test_ssd_scan_equals_naive_recurrence(length, chunk):
    g = torch.Generator().manual_seed(length)
    kw = dict(generator=g, dtype=torch.float64)
    x = torch.randn(2, length, 3, 5, **kw).requires_grad_()
    dt = torch.nn.functional.softplus(torch.randn(2, length, 3, **kw)).requires_grad_()
    A = (-torch.rand(3, **kw) * 16).requires_grad_()
    B, C = torch.randn(2, length, 4, **kw).requires_grad_(), torch.randn(2, length, 4, **kw).requires_grad_()
    ours, ref = ssd_scan(x, dt, A, B, C, chunk), naive_ssd(x, dt, A, B, C)
    torch.testing.assert_close(ours, ref, atol=1e-10, rtol=1e-10)
    grad_out = torch.randn_like(ref)
    for a, b in zip(
        torch.autograd.grad(ours, (x, dt, A, B, C), grad_out, materialize_grads=True),
        torch.autograd.grad(ref, (x, dt, A, B, C), grad_out, materialize_grads=True),
    ):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9)


def test_parameter_names_are_mamba_ssm_names():
    """The names and shapes mamba_ssm's Mamba / Mamba2 (ngroups=1) give the same sizes."""
    m1 = {k: tuple(v.shape) for k, v in Mamba(32, d_state=16, d_conv=4, expand=2).state_dict().items()}
    assert m1 == {
        "in_proj.weight": (128, 32), "conv1d.weight": (64, 1, 4), "conv1d.bias": (64,), "x_proj.weight": (34, 64),
        "dt_proj.weight": (64, 2), "dt_proj.bias": (64,), "A_log": (64, 16), "D": (64,), "out_proj.weight": (32, 64),
    }  # fmt: skip
    m2 = {k: tuple(v.shape) for k, v in Mamba2(32, d_state=16, expand=2, headdim=16).state_dict().items()}
    assert m2 == {
        "in_proj.weight": (164, 32), "conv1d.weight": (96, 1, 4), "conv1d.bias": (96,), "dt_bias": (4,),
        "A_log": (4,), "D": (4,), "norm.weight": (64,), "out_proj.weight": (32, 64),
    }  # fmt: skip


def test_mamba_ssm_kernels_are_optional():
    model = create_model("mamba", preset="mamba-tiny")
    assert model(torch.randint(6, 70, (1, 5))).shape == (1, 5, 70)


@pytest.mark.skipif(
    not (HAS_MAMBA_SSM and torch.cuda.is_available()),
    reason="mamba_ssm not importable here (needs CUDA and the [cuda] extra): the kernel path cannot be checked",
)
@pytest.mark.parametrize("layer", ["Mamba", "Mamba2"])
@pytest.mark.parametrize("bimamba", ["add", "concat"])
def test_mamba_ssm_kernels_match_the_pytorch_scan(layer, bimamba):
    """Same weights, same inputs (padded, bidirectional): mamba_ssm's kernels and our scan agree in outputs
    and gradients, so a checkpoint trained on either path is the same model."""
    if layer == "Mamba2" and not HAS_MAMBA2_KERNELS:
        pytest.skip("mamba_ssm's Triton SSD kernel did not import")
    torch.manual_seed(0)
    model = create_model(
        "mamba", preset="mamba-tiny", ssm_layer=layer, headdim=32, bidirectional=True, bimamba=bimamba
    ).cuda()
    ids = torch.randint(6, 70, (3, 50), device="cuda")
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[1, 30:] = False
    mixers = [m for m in model.modules() if hasattr(m, "use_scan_kernels")]
    results = []
    for use_scan_kernels in (True, False):
        for m in mixers:
            m.use_scan_kernels = use_scan_kernels
        model.zero_grad(set_to_none=True)
        out = model(ids, mask)
        out[mask].float().square().mean().backward()
        results.append((out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (kernel_out, kernel_grads), (torch_out, torch_grads) = results
    torch.testing.assert_close(kernel_out[mask], torch_out[mask], atol=2e-4, rtol=2e-3)
    for name, grad in torch_grads.items():
        torch.testing.assert_close(kernel_grads[name], grad, atol=1e-4, rtol=5e-3, msg=name)


@pytest.mark.parametrize(("bidirectional", "bimamba"), [(False, "add"), (True, "add"), (True, "concat")])
def test_mamba2_model_causality_and_pads(bidirectional, bimamba):
    torch.manual_seed(0)
    model = create_model("mamba", preset="mamba-tiny", ssm_layer="Mamba2", headdim=32, chunk_size=8,
                         bidirectional=bidirectional, bimamba=bimamba).double().eval()  # fmt: skip
    g = torch.Generator().manual_seed(0)
    x = torch.randint(6, 70, (2, 21), generator=g)
    x2 = x.clone()
    x2[:, 11:] = torch.randint(6, 70, (2, 10), generator=g)
    with torch.no_grad():
        diff = (model(x)[:, :11] - model(x2)[:, :11]).abs().max().item()
        assert diff > 1e-4 if bidirectional else diff < 1e-9
        mask = torch.ones(2, 25, dtype=torch.bool)
        mask[0, 3:7] = False
        mask[1, 21:] = False
        padded = torch.zeros(2, 25, dtype=torch.long)
        padded[mask] = x.flatten()
        positions = (mask.long().cumsum(1) - 1).clamp(min=0)
        torch.testing.assert_close(model(padded, mask, positions)[mask], model(x).flatten(0, 1), atol=1e-9, rtol=1e-9)
