"""Prediction heads on per-token embeddings ``x [B, L, D]`` with a real-token mask ``mask [B, L]``.

``TextCNN`` is the paper's head (docs/PROTOCOL.md): per-token linear d -> 2d, 1-D convolutions with kernels 3, 4, 5
(100 channels each), ReLU, global max-pool over the *real* positions (pads masked), concat (300), dropout 0.2,
linear. ``LinearProbe`` / ``MLPProbe`` mean-pool the real tokens first. ``TokenHead`` classifies every token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from helm.downstream.common import HEADS  # the names `build_head` takes (--head: common.PROBE_HEADS)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp_min(1)


class TextCNN(nn.Module):
    def __init__(
        self,
        dim: int,
        out_dim: int = 1,
        kernels: tuple[int, ...] = (3, 4, 5),
        channels: int = 100,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, 2 * dim)
        self.convs = nn.ModuleList(nn.Conv1d(2 * dim, channels, k) for k in kernels)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(channels * len(kernels), out_dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.proj(x) * mask.unsqueeze(-1).to(x.dtype)  # pads contribute zeros to every window
        h = h.transpose(1, 2)  # [B, 2d, L]
        lengths = mask.sum(1)
        pooled = []
        for conv in self.convs:
            k = conv.kernel_size[0]
            if h.shape[-1] < k:  # batch shorter than the kernel: pad on the right with zeros
                h_k = F.pad(h, (0, k - h.shape[-1]))
            else:
                h_k = h
            c = F.relu(conv(h_k))  # [B, C, L - k + 1]
            # a window is valid when it lies inside the real tokens; rows shorter than k keep window 0
            valid = torch.arange(c.shape[-1], device=c.device)[None, :] < (lengths - k + 1).clamp_min(1)[:, None]
            pooled.append(c.masked_fill(~valid.unsqueeze(1), float("-inf")).amax(-1))
        return self.out(self.dropout(torch.cat(pooled, dim=-1))).squeeze(-1)


class LinearProbe(nn.Module):
    def __init__(self, dim: int, out_dim: int = 1) -> None:
        super().__init__()
        self.out = nn.Linear(dim, out_dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.out(masked_mean(x, mask)).squeeze(-1)


class MLPProbe(nn.Module):
    def __init__(self, dim: int, out_dim: int = 1, hidden: int = 256, dropout: float = 0.2) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.net(masked_mean(x, mask)).squeeze(-1)


class TokenHead(nn.Module):
    """Per-token classifier (region annotation): linear, or a one-hidden-layer MLP when ``hidden`` > 0."""

    def __init__(self, dim: int, num_classes: int, hidden: int = 0, dropout: float = 0.1) -> None:
        super().__init__()
        if hidden:
            self.net = nn.Sequential(
                nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, num_classes)
            )
        else:
            self.net = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build_head(name: str, dim: int, out_dim: int = 1) -> nn.Module:
    if name == "textcnn":
        return TextCNN(dim, out_dim)
    if name == "linear":
        return LinearProbe(dim, out_dim)
    if name == "mlp":
        return MLPProbe(dim, out_dim)
    raise ValueError(f"unknown head {name!r}; choose one of {', '.join(HEADS)}")
