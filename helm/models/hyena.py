"""Hyena backbone: our own order-2 Hyena operator (Poli et al. 2023).

operator(x): u = in_proj(x) -> short depthwise conv -> (x1, x2, v);  y = x2 * (h * (x1 * v) + bias * x1 * v)
where h is a long filter (as long as the sequence) produced by an implicit MLP over positional features
(t, sin/cos of t at several frequencies) and windowed by a per-channel exponential decay, applied with an FFT
convolution. Causal: h acts on the past only. Bidirectional: a second filter acts on the future.
Rows are packed (real tokens first) and pads zeroed before every convolution, so pads never reach a real
token's output and never change the offsets between real tokens.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from helm.models.base import (
    EmbeddingMixin,
    HelmLM,
    gather_positions,
    mlp_activation,
    pack_order,
    real_token_mask,
    scatter_positions,
)
from helm.models.config import ModelConfig


def fft_long_conv(v: torch.Tensor, h_past: torch.Tensor, h_future: torch.Tensor | None = None) -> torch.Tensor:
    """y[t] = sum_{s<=t} h_past[t-s] v[s]  (+ sum_{s>t} h_future[s-t] v[s]), along the last dim.

    v [B, C, L]; filters [C, L] (h_future[..., 0] is unused). One FFT of length 2L: the kernel is laid out
    circularly (past offsets at 0..L-1, future offsets at 2L-1 down to L+1), which never wraps since
    |t - s| < L. Channels-first because FFTs and depthwise convolutions along the last dim are faster on CPU.
    """
    length = v.shape[-1]
    n = 2 * length
    dtype = torch.promote_types(v.dtype, torch.float32)  # FFTs in float32 at least (bf16 under AMP)
    kernel = torch.zeros(h_past.shape[0], n, dtype=dtype, device=v.device)
    kernel[:, :length] = h_past
    if h_future is not None:
        kernel[:, length + 1 :] = h_future[:, 1:].flip(-1)
    spectrum = torch.fft.rfft(v.to(dtype), n=n) * torch.fft.rfft(kernel, n=n)
    return torch.fft.irfft(spectrum, n=n)[..., :length].to(v.dtype)


class Sin(nn.Module):
    """sin(freq * x) with a learned frequency per channel (the Hyena filter activation)."""

    def __init__(self, dim: int, freq: float = 1.0) -> None:
        super().__init__()
        self.freq = nn.Parameter(torch.full((dim,), freq))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.freq * x)


class ImplicitFilter(nn.Module):
    """Long filters h[c, t] = MLP(features(t))[c] * exp(-decay_c * t / max_len)."""

    def __init__(self, channels: int, max_len: int, emb_dim: int = 33, order: int = 64, num_filters: int = 1) -> None:
        super().__init__()
        if emb_dim < 3 or emb_dim % 2 == 0:
            raise ValueError(f"filter_emb_dim={emb_dim} must be odd and >= 3 (1 + 2 * frequency bands)")
        self.channels, self.max_len, self.num_filters = channels, max_len, num_filters
        self.register_buffer(
            "bands", torch.linspace(1e-4, (emb_dim - 1) // 2 - 1, (emb_dim - 1) // 2), persistent=False
        )
        self.mlp = nn.Sequential(
            nn.Linear(emb_dim, order), Sin(order), nn.Linear(order, order), Sin(order),
            nn.Linear(order, channels * num_filters, bias=False),
        )  # fmt: skip
        # fast to slow decays across channels (Hyena's exponential modulation), fixed
        decay = torch.linspace(math.log(1e-2) / 0.3, math.log(1e-2) / 1.5, channels).abs()
        self.register_buffer("decay", decay, persistent=False)

    @torch.no_grad()
    def reset_special_parameters(self) -> None:
        # PyTorch's default (fan-in) init, not GPT-2's 0.02: the filter MLP must start with O(1) outputs
        for module in self.mlp:
            if isinstance(module, nn.Linear):
                module.reset_parameters()

    def features(self, length: int, device: torch.device) -> torch.Tensor:
        t = torch.arange(length, device=device, dtype=self.decay.dtype)[:, None] / self.max_len  # [L, 1]
        angle = 2 * math.pi * t * self.bands
        return torch.cat([t, angle.cos(), angle.sin()], dim=-1)  # [L, emb_dim]

    def forward(self, length: int, device: torch.device) -> list[torch.Tensor]:
        t = self.features(length, device)
        h = self.mlp(t).view(length, self.num_filters, self.channels)
        window = torch.exp(-t[:, :1] * self.decay)  # [L, C]
        return [(h[:, i] * window).transpose(0, 1) for i in range(self.num_filters)]  # each [C, L]


class HyenaOperator(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        h = config.hidden_size
        self.hidden = h
        self.bidirectional = config.bidirectional
        self.in_proj = nn.Linear(h, 3 * h)
        # short filter: causal (kernel 3 on the past) or centred (one step each side)
        self.short_filter = nn.Conv1d(3 * h, 3 * h, 3, groups=3 * h, padding=1 if self.bidirectional else 2)
        self.filter = ImplicitFilter(
            h, config.max_seq_len, config.filter_emb_dim, config.filter_order, 2 if self.bidirectional else 1
        )
        self.bias = nn.Parameter(torch.randn(h))
        self.out_proj = nn.Linear(h, h)

    @torch.no_grad()
    def reset_special_parameters(self) -> None:
        self.short_filter.reset_parameters()
        self.bias.normal_()

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        length = x.shape[1]
        u = self.in_proj(x)  # [B, L, 3H]
        if keep is not None:
            u = u * keep
        u = self.short_filter(u.transpose(1, 2))[..., :length]  # [B, 3H, L]
        x1, x2, v = u.split(self.hidden, dim=1)
        v = x1 * v
        if keep is not None:
            v = v * keep.transpose(1, 2)
        y = fft_long_conv(v, *self.filter(length, x.device)) + self.bias[:, None] * v
        return self.out_proj((x2 * y).transpose(1, 2))


class HyenaBlock(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        h = config.hidden_size
        self.ln_1 = nn.LayerNorm(h)
        self.mixer = HyenaOperator(config)
        self.ln_2 = nn.LayerNorm(h)
        self.fc1 = nn.Linear(h, config.intermediate_size)
        self.act = mlp_activation(config.activation)
        self.fc2 = nn.Linear(config.intermediate_size, h)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        x = x + self.drop(self.mixer(self.ln_1(x), keep))
        return x + self.drop(self.fc2(self.act(self.fc1(self.ln_2(x)))))


class HyenaBody(EmbeddingMixin):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.pos_embedding == "rotary":
            raise ValueError("hyena: rotary position embedding needs attention; use 'absolute' or 'none'")
        self._build_embeddings(config)
        self.drop = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(HyenaBlock(config) for _ in range(config.num_layers))
        self.ln_f = nn.LayerNorm(config.hidden_size)

    def forward(self, input_ids, attention_mask=None, position_ids=None) -> torch.Tensor:
        mask = real_token_mask(input_ids, attention_mask)
        x = self.drop(self._embed_tokens(input_ids, position_ids))
        keep = order = None
        if mask is not None:
            # pack real tokens first, so offsets between them (what the filters see) ignore pads in between
            order = pack_order(mask)
            x = gather_positions(x, order)
            keep = gather_positions(mask, order)[..., None].to(x.dtype)  # [B, L, 1]
        for layer in self.layers:
            x = layer(x, keep)
        x = self.ln_f(x)
        return x if order is None else scatter_positions(x, order)


class HyenaLM(HelmLM):
    arch = "hyena"

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.backbone = HyenaBody(config)
        self._finish_init()
