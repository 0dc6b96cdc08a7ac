"""Mamba backbone: pure-PyTorch Mamba / Mamba-2 blocks, using ``mamba_ssm``'s CUDA kernels when present.

Parameter names are those of ``mamba_ssm.modules.mamba_simple.Mamba`` (in_proj, conv1d, x_proj, dt_proj,
A_log, D, out_proj) and ``mamba_ssm.modules.mamba2.Mamba2`` with one group (in_proj, conv1d, dt_bias, A_log, D,
norm, out_proj), so a checkpoint moves between the kernel path and ours. Layers follow mamba_ssm's ``Block``:
pre-RMSNorm mixer and, when ``intermediate_size > 0``, a pre-RMSNorm gated MLP (fc1, fc2).

Sequences are packed (real tokens first) before the layers, so pads anywhere in a row never enter a scan
between real tokens. Bidirectional (MLM), two layouts (``ModelConfig.bimamba``): ``add`` (Caduceus-style)
adds a second mixer run on the reversed real tokens of every row before the layer's one MLP; ``concat`` (the
paper's Bi-Mamba) runs a forward and a backward block (mixer + MLP each) and projects their concatenation.
"""

from __future__ import annotations

import importlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from helm.models.base import (
    EmbeddingMixin,
    HelmLM,
    gather_positions,
    mlp_activation,
    pack_order,
    real_token_mask,
    reverse_index,
    scatter_positions,
)
from helm.models.config import ModelConfig

try:  # optional GPU kernels (pip install helm-mrna[cuda]); never required
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn as _cuda_selective_scan
except Exception:  # noqa: BLE001 - any import failure (no CUDA, ABI mismatch) means "use PyTorch"
    _cuda_selective_scan = None
try:
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined as _cuda_chunk_scan
except Exception:  # noqa: BLE001
    _cuda_chunk_scan = None

# helm's compiled CPU scan, when this file runs as part of helm. An exported folder (helm/export.py ships each module
# a backbone imports by a ``from`` statement) runs without helm: there the PyTorch loop is the scan.
_cpu_scan = importlib.import_module("helm.models.cpu_scan") if __name__.startswith("helm.") else None

HAS_MAMBA_SSM = _cuda_selective_scan is not None  # Mamba-1 kernel
HAS_MAMBA2_KERNELS = _cuda_chunk_scan is not None  # Mamba-2 (Triton SSD) kernel


def _f32(*tensors: torch.Tensor) -> list[torch.Tensor]:
    """Scans run in float32 at least (bf16/fp16 under AMP would lose the state); float64 stays (tests)."""
    return [t if t.dtype == torch.float64 else t.float() for t in tensors]


# ------------------------------------------------------------------------------------------- scans
class SelectiveScan(torch.autograd.Function):
    """Mamba's selective scan in PyTorch ops, for a GPU without mamba_ssm and a CPU without a C compiler (where
    there is one, ``helm.models.cpu_scan`` runs this recurrence compiled; benchmarks/bench_models.py times both).
    A loop over time whose per-step work ([b, d, n], a few hundred KB) stays in cache. Materializing exp(dt A) and
    dt B x as [b, l, d, n] tensors (a parallel scan does) makes the scan memory-bound: measured 5x slower fwd+bwd
    at b=8, l=444, d=512, n=16. Only the states h_t are kept for the backward, which runs the adjoint recurrence
    lam_t = C_t dy_t + exp(dt_{t+1} A) lam_{t+1} right to left and recomputes each step's decay."""

    @staticmethod
    def forward(ctx, x, dt, A, B, C, D):
        b, length, d = x.shape
        xt, dtt, Bt, Ct = (t.transpose(0, 1).contiguous() for t in (x, dt, B, C))  # time-major slices
        dtx = dtt * xt
        hs = x.new_empty(length, b, d, A.shape[1])
        ys = x.new_empty(length, b, d)
        h = x.new_zeros(b, d, A.shape[1])
        for t in range(length):
            decay = torch.exp(dtt[t].unsqueeze(-1) * A)
            h = torch.addcmul(dtx[t].unsqueeze(-1) * Bt[t].unsqueeze(1), decay, h, out=hs[t])
            torch.matmul(h, Ct[t].unsqueeze(-1), out=ys[t].unsqueeze(-1))  # y_t = <h_t, C_t>
        ctx.save_for_backward(x, dt, A, B, C, D, hs)
        return ys.transpose(0, 1) + x * D

    @staticmethod
    def backward(ctx, dy):
        x, dt, A, B, C, D, hs = ctx.saved_tensors
        b, length, d = x.shape
        n = A.shape[1]
        xt, dtt, Bt, Ct, dyt = (t.transpose(0, 1).contiguous() for t in (x, dt, B, C, dy))
        dtx = dtt * xt
        grad_B, grad_C = x.new_empty(length, b, n), x.new_empty(length, b, n)
        grad_dtx, grad_log = x.new_empty(length, b, d), x.new_zeros(length, b, d)
        grad_A = torch.zeros_like(A)
        lam = x.new_zeros(b, d, n)
        next_decay = torch.zeros_like(lam)  # nothing flows back from past the last step
        for t in range(length - 1, -1, -1):
            lam = torch.addcmul(dyt[t].unsqueeze(-1) * Ct[t].unsqueeze(1), next_decay, lam)  # dL/dh_t
            torch.matmul(dyt[t].unsqueeze(1), hs[t], out=grad_C[t].unsqueeze(1))
            torch.matmul(lam, Bt[t].unsqueeze(-1), out=grad_dtx[t].unsqueeze(-1))
            torch.matmul(dtx[t].unsqueeze(1), lam, out=grad_B[t].unsqueeze(1))
            next_decay = torch.exp(dtt[t].unsqueeze(-1) * A)
            if t > 0:  # d h_t / d(dt_t A) = decay_t * h_{t-1}
                g = lam * hs[t - 1] * next_decay
                torch.sum(g * A, -1, out=grad_log[t])
                grad_A += (g * dtt[t].unsqueeze(-1)).sum(0)
        grad_dtx = grad_dtx.transpose(0, 1)
        grad_dt = grad_log.transpose(0, 1) + grad_dtx * x
        grad_x = grad_dtx * dt + dy * D
        grad_D = (dy * x).sum((0, 1))
        return grad_x, grad_dt, grad_A, grad_B.transpose(0, 1), grad_C.transpose(0, 1), grad_D


def selective_scan(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor,
    kernel: bool = True,
) -> torch.Tensor:
    """Mamba's selective scan. x, dt [b, l, d]; A [d, n]; B, C [b, l, n]; D [d] -> y [b, l, d] (float32+).
    On the CPU the compiled kernel runs when it is available and ``kernel`` is true, else the PyTorch loop.

    h_t = exp(dt_t A) * h_{t-1} + dt_t B_t x_t ;  y_t = <C_t, h_t> + D x_t
    """
    x, dt, A, B, C, D = _f32(x, dt, A, B, C, D)
    D = D.to(x.dtype)
    compiled = kernel and _cpu_scan is not None and _cpu_scan.supports(x, dt, A, B, C, D)
    scan = _cpu_scan.CpuSelectiveScan if compiled else SelectiveScan
    return scan.apply(x, dt, A, B, C, D)


def ssd_scan(
    x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, chunk_size: int
) -> torch.Tensor:
    """Mamba-2's scan with a scalar decay per head, chunked (SSD). x [b, l, h, p]; dt [b, l, h]; A [h];
    B, C [b, l, n] (one group) -> y [b, l, h, p] without the D skip:

    H_t = exp(dt_t A) H_{t-1} + dt_t x_t B_t^T ;  y_t = H_t C_t

    Within a chunk the pairwise decays exp(cumsum_t - cumsum_s) (s <= t) form a small [T, T] matrix per head;
    chunk-end states are carried across chunks by a short loop.
    """
    x, dt, B, C = _f32(x, dt, B, C)
    b, length, h, p = x.shape
    n = B.shape[-1]
    pad = (-length) % chunk_size
    if pad:  # dt = 0 on padding: decay 1 and no input, so the carried state is unchanged
        x, B, C = F.pad(x, (0, 0, 0, 0, 0, pad)), F.pad(B, (0, 0, 0, pad)), F.pad(C, (0, 0, 0, pad))
        dt = F.pad(dt, (0, 0, 0, pad))
    c, t = (length + pad) // chunk_size, chunk_size
    x, dt, B, C = x.view(b, c, t, h, p), dt.view(b, c, t, h), B.view(b, c, t, n), C.view(b, c, t, n)
    log_decay = (dt * A).cumsum(dim=2)  # [b, c, t, h]
    xdt = x * dt.unsqueeze(-1)
    # within chunks
    seg = log_decay[:, :, :, None, :] - log_decay[:, :, None, :, :]  # [b, c, t(target), s(source), h]
    causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
    weights = torch.exp(seg.masked_fill(~causal[:, :, None], float("-inf"))) * (C @ B.transpose(-1, -2)).unsqueeze(-1)
    y = torch.einsum("bctsh,bcshp->bcthp", weights, xdt)
    # state at each chunk's end from its own inputs, then carried across chunks
    to_end = torch.exp(log_decay[:, :, -1:, :] - log_decay)  # [b, c, t, h]
    chunk_states = torch.einsum("bcsn,bcshp->bchpn", B, xdt * to_end.unsqueeze(-1))
    chunk_decay = torch.exp(log_decay[:, :, -1, :])  # [b, c, h]
    state = torch.zeros(b, h, p, n, dtype=x.dtype, device=x.device)
    entering = []
    for k in range(c):
        entering.append(state)
        state = chunk_decay[:, k, :, None, None] * state + chunk_states[:, k]
    entering = torch.stack(entering, dim=1)  # [b, c, h, p, n]
    y = y + torch.einsum("bctn,bchpn->bcthp", C, entering) * torch.exp(log_decay).unsqueeze(-1)
    return y.reshape(b, c * t, h, p)[:, :length]


def _dt_bias_init(size: int, dt_min: float = 1e-3, dt_max: float = 0.1, floor: float = 1e-4) -> torch.Tensor:
    """Bias whose softplus is log-uniform in [dt_min, dt_max] (mamba_ssm's init)."""
    dt = torch.exp(torch.rand(size) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=floor)
    return dt + torch.log(-torch.expm1(-dt))  # inverse of softplus


# ------------------------------------------------------------------------------------------- mixers
class Mamba(nn.Module):
    """Mamba (S6) mixer, mamba_ssm's parameter names."""

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2) -> None:
        super().__init__()
        self.d_inner = expand * d_model
        self.d_state = d_state
        self.dt_rank = math.ceil(d_model / 16)
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner, padding=d_conv - 1)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        self.A_log = nn.Parameter(torch.empty(self.d_inner, d_state))
        self.D = nn.Parameter(torch.empty(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)
        self.use_scan_kernels = True  # compiled scans (mamba_ssm, cpu_scan); benchmarks flip it to time the PyTorch one
        self.reset_special_parameters()

    @torch.no_grad()
    def reset_special_parameters(self) -> None:
        nn.init.uniform_(self.dt_proj.weight, -(self.dt_rank**-0.5), self.dt_rank**-0.5)
        self.dt_proj.bias.copy_(_dt_bias_init(self.d_inner))
        self.A_log.copy_(torch.log(torch.arange(1, self.d_state + 1, dtype=torch.float32)).repeat(self.d_inner, 1))
        self.D.fill_(1.0)
        self.conv1d.reset_parameters()

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        length = hidden.shape[1]
        x, z = self.in_proj(hidden).chunk(2, dim=-1)
        x = F.silu(self.conv1d(x.transpose(1, 2))[..., :length]).transpose(1, 2)
        dt_low, B, C = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        A = -torch.exp(_f32(self.A_log)[0])
        if self.use_scan_kernels and _cuda_selective_scan is not None and x.is_cuda:
            y = _cuda_selective_scan(
                x.transpose(1, 2).contiguous(),
                F.linear(dt_low, self.dt_proj.weight).transpose(1, 2).contiguous(),
                A,
                B.transpose(1, 2).contiguous(),
                C.transpose(1, 2).contiguous(),
                self.D.float(),
                z=z.transpose(1, 2).contiguous(),
                delta_bias=self.dt_proj.bias.float(),
                delta_softplus=True,
            ).transpose(1, 2)
        else:
            (dt,) = _f32(F.softplus(self.dt_proj(dt_low)))
            y = selective_scan(x, dt, A, B, C, self.D, self.use_scan_kernels) * F.silu(_f32(z)[0])
        return self.out_proj(y.to(hidden.dtype))


class GatedRMSNorm(nn.Module):
    """RMSNorm(x * silu(z)) * weight (mamba_ssm's RMSNormGated with norm_before_gate=False, one group)."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        x, z = _f32(x, z)
        x = x * F.silu(z)
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight.to(x.dtype)


class Mamba2(nn.Module):
    """Mamba-2 (SSD) mixer with one B/C group, mamba_ssm's parameter names."""

    def __init__(
        self, d_model: int, d_state: int = 64, d_conv: int = 4, expand: int = 2, headdim: int = 64, chunk_size: int = 64
    ) -> None:
        super().__init__()
        self.d_inner = expand * d_model
        if self.d_inner % headdim:
            raise ValueError(f"Mamba2: expand * hidden_size = {self.d_inner} is not divisible by headdim={headdim}")
        self.d_state, self.headdim, self.chunk_size = d_state, headdim, chunk_size
        self.nheads = self.d_inner // headdim
        conv_dim = self.d_inner + 2 * d_state
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner + 2 * d_state + self.nheads, bias=False)
        self.conv1d = nn.Conv1d(conv_dim, conv_dim, d_conv, groups=conv_dim, padding=d_conv - 1)
        self.dt_bias = nn.Parameter(torch.empty(self.nheads))
        self.A_log = nn.Parameter(torch.empty(self.nheads))
        self.D = nn.Parameter(torch.empty(self.nheads))
        self.norm = GatedRMSNorm(self.d_inner)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)
        self.use_scan_kernels = True
        self.reset_special_parameters()

    @torch.no_grad()
    def reset_special_parameters(self) -> None:
        self.dt_bias.copy_(_dt_bias_init(self.nheads))
        self.A_log.copy_(torch.log(torch.empty(self.nheads).uniform_(1, 16)))
        self.D.fill_(1.0)
        self.conv1d.reset_parameters()

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        b, length, _ = hidden.shape
        z, xbc, dt = self.in_proj(hidden).split([self.d_inner, self.d_inner + 2 * self.d_state, self.nheads], dim=-1)
        xbc = F.silu(self.conv1d(xbc.transpose(1, 2))[..., :length]).transpose(1, 2)
        x, B, C = xbc.split([self.d_inner, self.d_state, self.d_state], dim=-1)
        x = x.reshape(b, length, self.nheads, self.headdim)
        A = -torch.exp(_f32(self.A_log)[0])
        if self.use_scan_kernels and _cuda_chunk_scan is not None and x.is_cuda:
            y = _cuda_chunk_scan(
                x,
                dt,
                A,
                B.unsqueeze(2),
                C.unsqueeze(2),
                self.chunk_size,
                D=self.D,
                dt_bias=self.dt_bias,
                dt_softplus=True,
            )
        else:
            (dt,) = _f32(F.softplus(dt + self.dt_bias))
            y = ssd_scan(x, dt, A, B, C, self.chunk_size)
            y = y + _f32(x)[0] * self.D.to(y.dtype)[:, None]
        y = self.norm(y.reshape(b, length, self.d_inner), z)
        return self.out_proj(y.to(hidden.dtype))


# ------------------------------------------------------------------------------------------- model
class GatedMLP(nn.Module):
    def __init__(self, hidden: int, intermediate: int, activation: str) -> None:
        super().__init__()
        self.fc1 = nn.Linear(hidden, 2 * intermediate, bias=False)
        self.act = mlp_activation(activation)
        self.fc2 = nn.Linear(intermediate, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, gate = self.fc1(x).chunk(2, dim=-1)
        return self.fc2(y * self.act(gate))


class MambaLayer(nn.Module):
    """Pre-norm mixer and (``intermediate_size > 0``) pre-norm gated MLP, each a residual branch. With
    ``reverse_mixer`` (bidirectional, ``bimamba="add"``) a second mixer runs on the reversed real tokens and
    its output is added to the first one's, before the one MLP."""

    def __init__(self, config: ModelConfig, reverse_mixer: bool = False) -> None:
        super().__init__()
        h = config.hidden_size

        def mixer() -> nn.Module:
            if config.ssm_layer == "Mamba2":
                return Mamba2(h, config.d_state, config.d_conv, config.expand, config.headdim, config.chunk_size)
            return Mamba(h, config.d_state, config.d_conv, config.expand)

        self.norm = nn.RMSNorm(h, eps=1e-5)
        self.mixer = mixer()
        self.mixer_rev = mixer() if reverse_mixer else None
        self.norm2 = nn.RMSNorm(h, eps=1e-5) if config.intermediate_size else None
        self.mlp = GatedMLP(h, config.intermediate_size, config.activation) if config.intermediate_size else None
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, rev: torch.Tensor | None) -> torch.Tensor:
        h = self.norm(x)
        y = self.mixer(h)
        if self.mixer_rev is not None:  # reversed real tokens of each row; pads stay behind them
            y = y + gather_positions(self.mixer_rev(gather_positions(h, rev)), rev)
        x = x + self.drop(y)
        if self.mlp is not None:
            x = x + self.drop(self.mlp(self.norm2(x)))
        return x

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        """What ``forward(x, None)`` adds to x (mixer branch, then MLP branch on x + mixer branch), for
        ``BiMambaLayer``; forward keeps its own sums so checkpoints of the add layout give the same bits."""
        y = self.drop(self.mixer(self.norm(x)))
        if self.mlp is not None:
            y = y + self.drop(self.mlp(self.norm2(x + y)))
        return y


class BiMambaLayer(nn.Module):
    """``bimamba="concat"`` (the paper's Bi-Mamba layout): a forward block and a backward block, each a whole
    ``MambaLayer`` with its own weights, the backward one run on the reversed real tokens; ``proj`` maps the
    concatenation of their residual branches (2 x hidden) back to hidden and is added to the layer input, so the
    identity path runs through every layer as in the add layout (where the residual sits is our choice, the
    parameters are the reference's: docs/ARCHITECTURE.md)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.fwd = MambaLayer(config)
        self.bwd = MambaLayer(config)
        self.proj = nn.Linear(2 * config.hidden_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor, rev: torch.Tensor) -> torch.Tensor:
        forward = self.fwd.branch(x)
        backward = gather_positions(self.bwd.branch(gather_positions(x, rev)), rev)
        return x + self.proj(torch.cat([forward, backward], dim=-1))


class MambaBody(EmbeddingMixin):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.pos_embedding == "rotary":
            raise ValueError("mamba: rotary position embedding needs attention; use 'absolute' or 'none'")
        self.config = config
        self._build_embeddings(config)
        self.drop = nn.Dropout(config.dropout)
        concat = config.bidirectional and config.bimamba == "concat"
        self.layers = nn.ModuleList(
            BiMambaLayer(config) if concat else MambaLayer(config, reverse_mixer=config.bidirectional)
            for _ in range(config.num_layers)
        )
        self.norm_f = nn.RMSNorm(config.hidden_size, eps=1e-5)

    def forward(self, input_ids, attention_mask=None, position_ids=None) -> torch.Tensor:
        mask = real_token_mask(input_ids, attention_mask)
        x = self.drop(self._embed_tokens(input_ids, position_ids))
        b, length = input_ids.shape
        order = None
        lengths = torch.full((b,), length, device=input_ids.device)
        if mask is not None:  # pack real tokens first; every layer is position-wise except the causal scan
            order = pack_order(mask)
            x = gather_positions(x, order)
            lengths = mask.sum(1)
        rev = reverse_index(lengths, length) if self.config.bidirectional else None
        for layer in self.layers:
            x = layer(x, rev)
        x = self.norm_f(x)
        return x if order is None else scatter_positions(x, order)


class MambaLM(HelmLM):
    arch = "mamba"

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.backbone = MambaBody(config)
        self._finish_init()
