"""GPT-2 backbone, nanoGPT-style, with Hugging Face's parameter names and layout.

``GPT2LM.transformer`` has exactly ``transformers.GPT2Model``'s state dict (wte, wpe, h.i.ln_1, attn.c_attn,
attn.c_proj, ln_2, mlp.c_fc, mlp.c_proj, ln_f; Conv1D weights stored [in, out]), so weights move between the
two. Attention goes through ``scaled_dot_product_attention``: causal for CLM, fully bidirectional for MLM on
every device. A batch with pads gets an explicit mask (pads masked as keys); a batch without any gets none
(``is_causal=True`` for CLM, no mask for MLM), which keeps the fused/flash kernels eligible on GPU; both
compute the same attention (bitwise equal on CPU: ``tests/models/test_attention_fast_path.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from helm.models.base import Conv1D, EmbeddingMixin, HelmLM, default_positions, mlp_activation, real_token_mask
from helm.models.config import ModelConfig


class Rotary(nn.Module):
    """Rotary position embedding on the first ``dim`` channels of each head (rotate-half convention)."""

    def __init__(self, dim: int, base: float = 10000.0) -> None:
        super().__init__()
        self.dim = dim
        self.register_buffer("inv_freq", 1.0 / base ** (torch.arange(0, dim, 2).float() / dim), persistent=False)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = positions.float()[..., None] * self.inv_freq  # [B, L, dim/2]
        emb = torch.cat([freqs, freqs], dim=-1)[:, None]  # [B, 1, L, dim]: broadcast over heads
        return emb.cos(), emb.sin()


def rotary_for(config: ModelConfig) -> Rotary | None:
    """The ``Rotary`` of an attention backbone with ``pos_embedding='rotary'`` (else None); validates its dims."""
    if config.pos_embedding != "rotary":
        return None
    head_dim = config.hidden_size // config.num_heads
    dim = config.pos_embedding_dim or head_dim
    if dim % 2 or dim > head_dim:
        raise ValueError(f"pos_embedding_dim={dim}: rotary dims must be even and <= head size {head_dim}")
    return Rotary(dim)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    dim = cos.shape[-1]
    rot, rest = x[..., :dim], x[..., dim:]
    x1, x2 = rot.chunk(2, dim=-1)
    rot = rot * cos.to(x.dtype) + torch.cat([-x2, x1], dim=-1) * sin.to(x.dtype)
    return torch.cat([rot, rest], dim=-1)


def attention_mask_4d(
    mask: torch.Tensor | None, seq_len: int, causal: bool, device: torch.device
) -> torch.Tensor | None:
    """Bool [B, 1, L, L], True = may attend. Pads are masked as keys; every query also sees itself, so a pad
    query never has an empty row (NaN) and real rows are unchanged. None when there are no pads (``mask`` None):
    then attention passes ``is_causal`` instead of a mask, so SDPA may pick a fused kernel."""
    if mask is None:
        return None
    allowed = torch.ones(seq_len, seq_len, dtype=torch.bool, device=device)
    if causal:
        allowed = allowed.tril()
    allowed = allowed[None, None] & mask[:, None, None, :]
    return allowed | torch.eye(seq_len, dtype=torch.bool, device=device)


class Attention(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.hidden_size % config.num_heads:
            raise ValueError(f"hidden_size={config.hidden_size} is not divisible by num_heads={config.num_heads}")
        self.num_heads = config.num_heads
        self.c_attn = Conv1D(config.hidden_size, 3 * config.hidden_size)
        self.c_proj = Conv1D(config.hidden_size, config.hidden_size)
        self.attn_dropout = config.attn_dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, causal: bool, rotary) -> torch.Tensor:
        b, length, h = x.shape
        q, k, v = (t.view(b, length, self.num_heads, -1).transpose(1, 2) for t in self.c_attn(x).split(h, dim=-1))
        if rotary is not None:
            q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.attn_dropout if self.training else 0.0,
            is_causal=causal and mask is None,
        )
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).reshape(b, length, h)))


class MLP(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.c_fc = Conv1D(config.hidden_size, config.intermediate_size)
        self.act = mlp_activation(config.activation)
        self.c_proj = Conv1D(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.hidden_size, eps=1e-5)
        self.attn = Attention(config)
        self.ln_2 = nn.LayerNorm(config.hidden_size, eps=1e-5)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, causal: bool, rotary) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), mask, causal, rotary)
        return x + self.mlp(self.ln_2(x))


class GPT2Body(EmbeddingMixin):
    """Same parameter names as ``transformers.GPT2Model``."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self._build_embeddings(config)
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList(Block(config) for _ in range(config.num_layers))
        self.ln_f = nn.LayerNorm(config.hidden_size, eps=1e-5)
        self.rotary = rotary_for(config)

    def forward(self, input_ids, attention_mask=None, position_ids=None) -> torch.Tensor:
        mask = real_token_mask(input_ids, attention_mask)
        causal = not self.config.bidirectional
        mask4 = attention_mask_4d(mask, input_ids.shape[1], causal, input_ids.device)
        rotary = self.rotary(default_positions(input_ids, position_ids)) if self.rotary is not None else None
        x = self.drop(self._embed_tokens(input_ids, position_ids))
        for block in self.h:
            x = block(x, mask4, causal, rotary)
        return self.ln_f(x)


class GPT2LM(HelmLM):
    arch = "gpt2"

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.transformer = GPT2Body(config)
        self._finish_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.transformer.wte

    def embed(self, input_ids, attention_mask=None, position_ids=None) -> torch.Tensor:
        return self.transformer(input_ids, attention_mask, position_ids)
