"""GPT-2 backbone, nanoGPT-style, with Hugging Face's parameter names and layout.

``GPT2LM.transformer`` has exactly ``transformers.GPT2Model``'s state dict (wte, wpe, h.i.ln_1, attn.c_attn,
attn.c_proj, ln_2, mlp.c_fc, mlp.c_proj, ln_f; Conv1D weights stored [in, out]), so weights move between the
two. Attention goes through ``scaled_dot_product_attention``: causal for CLM, fully bidirectional for MLM on
every device. A batch with pads gets an explicit mask (pads masked as keys); a batch without any gets none
(``is_causal=True`` for CLM, no mask for MLM), which keeps the fused/flash kernels eligible on GPU; both
compute the same attention (bitwise equal on CPU: ``tests/models/test_attention_fast_path.py``). In bf16 on the
CPU (``--amp``) attention runs as two bf16 matmuls around a softmax (``Bf16CpuAttention``): PyTorch's CPU flash
kernel gains nothing from bf16 and took 43 % of a bf16 training step at width 256.
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


# bf16 CPU attention keeps the [L, L] probabilities per head (what a math-path attention keeps); above this length
# the flash kernel's O(L) memory matters more than its speed
BF16_CPU_MATH_MAX_LEN = 1024


class Bf16CpuAttention(torch.autograd.Function):
    """softmax(q k^T / sqrt(d) masked) v with bf16 matmuls and a bf16 softmax (fp32 inside), probabilities kept for
    the backward: 2.3x faster than SDPA's CPU flash kernel in bf16 at batch 8 x 4 heads x 444 x 64, fwd + bwd.
    ``allowed``: a bool mask broadcastable to [b, heads, L, L] (True = attend), or None for full attention. It
    stands in for the flash kernel, so like that one it has no double backward (create_graph raises)."""

    @staticmethod
    def forward(ctx, q, k, v, allowed):
        b, heads, length, dim = q.shape
        q, k, v = (t.reshape(b * heads, length, dim) for t in (q, k, v))
        scale = dim**-0.5
        scores = torch.baddbmm(q.new_empty(()), q, k.transpose(1, 2), beta=0, alpha=scale)  # scale inside the GEMM
        if allowed is not None:
            scores = scores.view(b, heads, length, length).masked_fill_(~allowed, float("-inf")).view_as(scores)
        probs = torch.softmax(scores, dim=-1)
        ctx.save_for_backward(q, k, v, probs)
        ctx.scale, ctx.shape = scale, (b, heads, length, dim)
        return torch.bmm(probs, v).view(ctx.shape)

    @staticmethod
    def backward(ctx, dy):
        if torch.is_grad_enabled():  # create_graph=True: this backward is not itself differentiable
            raise RuntimeError("gpt2's bf16 CPU attention has no double backward (SDPA's math kernel has)")
        q, k, v, probs = ctx.saved_tensors
        dy = dy.reshape(v.shape)
        grad_v = torch.bmm(probs.transpose(1, 2), dy)
        # ATen's softmax backward (one fused pass; torch has no public one): probs * (g - sum(g * probs))
        grad_scores = torch._softmax_backward_data(torch.bmm(dy, v.transpose(1, 2)), probs, -1, probs.dtype)
        none = q.new_empty(())
        grad_q = torch.baddbmm(none, grad_scores, k, beta=0, alpha=ctx.scale)
        grad_k = torch.baddbmm(none, grad_scores.transpose(1, 2), q, beta=0, alpha=ctx.scale)
        return grad_q.view(ctx.shape), grad_k.view(ctx.shape), grad_v.view(ctx.shape), None


def attention(q, k, v, mask: torch.Tensor | None, causal: bool, dropout: float) -> torch.Tensor:
    """Attention of q, k, v [b, heads, L, head_dim]; ``mask`` from ``attention_mask_4d`` (None: no pads). The bf16
    CPU kernel replaces SDPA's flash kernel only where that one is allowed (second-order optimizers restrict SDPA
    to its math backend for the double backward: helm/module.py), and not inside torch.compile (which fuses SDPA)."""
    length = q.shape[-2]
    cpu_bf16 = q.device.type == "cpu" and q.dtype == torch.bfloat16 and not torch.compiler.is_compiling()
    # flash_sdp_enabled: SDPA's global backend switch (off inside sdpa_kernel(MATH)), despite "cuda" in its name
    if cpu_bf16 and not dropout and length <= BF16_CPU_MATH_MAX_LEN and torch.backends.cuda.flash_sdp_enabled():
        if mask is None and causal:
            mask = torch.ones(length, length, dtype=torch.bool, device=q.device).tril()
        return Bf16CpuAttention.apply(q, k, v, mask)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=causal and mask is None)


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
        y = attention(q, k, v, mask, causal, self.attn_dropout if self.training else 0.0)
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
