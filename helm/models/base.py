"""What every backbone shares: token/position embeddings, the LM head (vocab padding, tying), init, save/load.

A backbone subclasses ``HelmLM`` and implements ``embed``; ``forward`` adds the LM head and slices the padded
vocabulary back to ``config.vocab_size``. Checkpoints are ``config.json`` + ``model.safetensors``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import ClassVar

import torch
from safetensors.torch import save_model
from torch import nn

from helm.models.config import ModelConfig

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def default_positions(input_ids: torch.Tensor, position_ids: torch.Tensor | None) -> torch.Tensor:
    if position_ids is not None:
        return position_ids
    return torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)


class EmbeddingMixin(nn.Module):
    """Token embedding ``wte`` plus the optional absolute position embedding ``wpe`` (GPT-2's names).

    ``pos_embedding_apply='add'`` adds a [max_seq_len, hidden] table; ``'concat'`` makes the token embedding
    ``hidden - pos_embedding_dim`` wide and appends ``pos_embedding_dim`` positional channels.
    """

    def _build_embeddings(self, config: ModelConfig) -> None:
        self.concat_pos = config.pos_embedding == "absolute" and config.pos_embedding_apply == "concat"
        pos_dim = config.pos_embedding_dim if self.concat_pos else config.hidden_size
        tok_dim = config.hidden_size - pos_dim if self.concat_pos else config.hidden_size
        self.wte = nn.Embedding(config.padded_vocab_size, tok_dim)
        self.wpe = nn.Embedding(config.max_seq_len, pos_dim) if config.pos_embedding == "absolute" else None

    def _embed_tokens(self, input_ids: torch.Tensor, position_ids: torch.Tensor | None) -> torch.Tensor:
        x = self.wte(input_ids)
        if self.wpe is None:
            return x
        positions = default_positions(input_ids, position_ids)
        if int(positions.max()) >= self.wpe.num_embeddings:
            raise ValueError(
                f"position {int(positions.max())} is past max_seq_len={self.wpe.num_embeddings}; "
                "raise --max_seq_len or truncate the sequences"
            )
        pos = self.wpe(positions)
        return torch.cat([x, pos], dim=-1) if self.concat_pos else x + pos


def real_token_mask(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """Bool [B, L] (True = real token), or None when every token is real (lets backbones take fast paths)."""
    if attention_mask is None:
        return None
    if attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask shape {tuple(attention_mask.shape)} != input_ids {tuple(input_ids.shape)}")
    mask = attention_mask.bool()
    return None if bool(mask.all()) else mask


class Conv1D(nn.Module):
    """A linear layer stored as GPT-2 stores it (weight [in, out]), so state dicts load into HF GPT-2."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # explicit sizes, not -1: with --intermediate_size 0 one side has no features and -1 would be ambiguous
        rows = math.prod(x.shape[:-1])
        return torch.addmm(self.bias, x.reshape(rows, x.shape[-1]), self.weight).view(*x.shape[:-1], self.bias.shape[0])


class HelmLM(nn.Module):
    """Base class: subclasses build their body, then call ``self._finish_init()``.

    The defaults below serve bodies stored as ``self.backbone`` with a ``wte`` token embedding (mamba, hyena);
    gpt2 and bert keep HF's attribute names (``transformer``, ``bert``) so their weights map onto HF's.
    """

    arch: ClassVar[str] = ""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config

    # -- what a backbone provides
    def get_input_embeddings(self) -> nn.Embedding:
        return self.backbone.wte

    def embed(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Final hidden states [B, L, hidden] (after the last norm), for the LM head and downstream use."""
        return self.backbone(input_ids, attention_mask, position_ids)

    # -- shared
    def _finish_init(self) -> None:
        cfg = self.config
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.padded_vocab_size, bias=False)
        self.init_weights()
        if cfg.tie_embeddings:
            self.lm_head.weight = self.get_input_embeddings().weight

    def init_weights(self) -> None:
        """GPT-2 init: N(0, 0.02) for linear/embedding weights, zero biases, residual outputs scaled by
        1/sqrt(2 * layers); modules with their own scheme (SSM parameters) define ``reset_special_parameters``."""
        std = 0.02
        for name, module in self.named_modules():
            if isinstance(module, (nn.Linear, nn.Embedding, Conv1D)):
                scale = 1 / math.sqrt(2 * self.config.num_layers) if name.endswith(("c_proj", "out_proj", "fc2")) else 1
                nn.init.normal_(module.weight, std=std * scale)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
        for module in self.modules():
            if module is not self and hasattr(module, "reset_special_parameters"):
                module.reset_special_parameters()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        hidden = self.embed(input_ids, attention_mask, position_ids)
        logits = self.lm_head(hidden)
        if self.config.padded_vocab_size != self.config.vocab_size:
            logits = logits[..., : self.config.vocab_size]
        return logits

    def num_parameters(self) -> int:
        """Distinct parameters (a tied head counts once)."""
        return sum(p.numel() for p in self.parameters())

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (tied weights stored once)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {"model_type": self.arch, **self.config.to_dict()}
        (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
        save_model(self, str(directory / WEIGHTS_NAME))
        # safetensors creates the file 0600: give it the user's umask like every other file of the run
        mask = os.umask(0o022)
        os.umask(mask)
        os.chmod(directory / WEIGHTS_NAME, 0o666 & ~mask)
        return directory


def mlp_activation(name: str) -> nn.Module:
    from transformers.activations import ACT2FN

    return ACT2FN[name]


def gather_positions(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x[b, index[b, l]] for x [B, L, ...] and index [B, L]."""
    return x.gather(1, index.view(*index.shape, *([1] * (x.dim() - 2))).expand_as(x))


def pack_order(mask: torch.Tensor) -> torch.Tensor:
    """Per row, the positions of the real tokens first (in order), then the pads: a stable sort on ~mask.

    Sequence mixers that are not attention (SSM scans, convolutions) run on the packed order, so pads
    anywhere in a row never sit between real tokens.
    """
    return torch.sort((~mask).to(torch.int8), dim=1, stable=True).indices


def scatter_positions(y: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Inverse of ``gather_positions(x, order)`` for a permutation ``order``."""
    out = torch.empty_like(y)
    return out.scatter(1, order.view(*order.shape, *([1] * (y.dim() - 2))).expand_as(y), y)


def reverse_index(lengths: torch.Tensor, seq_len: int) -> torch.Tensor:
    """[B, L] index that reverses the first ``lengths[b]`` positions of each row and keeps the rest in place."""
    pos = torch.arange(seq_len, device=lengths.device).expand(len(lengths), seq_len)
    lengths = lengths.view(-1, 1)
    return torch.where(pos < lengths, lengths - 1 - pos, pos)


__all__ = [
    "CONFIG_NAME",
    "Conv1D",
    "WEIGHTS_NAME",
    "EmbeddingMixin",
    "HelmLM",
    "default_positions",
    "gather_positions",
    "mlp_activation",
    "pack_order",
    "real_token_mask",
    "reverse_index",
    "scatter_positions",
]
