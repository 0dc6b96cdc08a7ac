"""BERT backbone: ``transformers.BertModel`` (no pooler) under our LM head.

Bidirectional by default as BERT is; ``bidirectional=False`` turns it into a causal decoder (HF's ``is_decoder``).
With the default positions (``absolute`` + ``add``) ``self.bert`` is exactly HF's ``BertModel``, weights and outputs.
The other position options every attention backbone offers are added on top of HF's model, keeping its names:

- ``none`` / ``concat``: ``bert.embeddings`` is swapped for ``BertEmbeddings`` below (no table, or a narrower word
  embedding with ``pos_embedding_dim`` positional channels appended), then BERT's embedding LayerNorm + dropout.
- ``rotary``: no table; q and k of every self-attention are rotated (gpt2's ``Rotary``/``apply_rotary``) inside an
  attention function registered with transformers' ``AttentionInterface`` (the documented customization point, so
  HF's classes stay untouched). cos/sin are computed once per forward and reach it as a forward keyword, which
  ``BertModel`` hands down to every attention call.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AttentionInterface, AttentionMaskInterface, BertConfig, BertModel
from transformers.masking_utils import sdpa_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from helm.models.base import HelmLM, default_positions, real_token_mask
from helm.models.config import ModelConfig
from helm.models.gpt2 import apply_rotary, rotary_for

ROTARY_ATTENTION = "helm_rotary_sdpa"


def rotary_sdpa_attention(module, query, key, value, attention_mask, rotary=None, **kwargs):
    """HF's sdpa attention with q, k [B, heads, L, head_dim] rotated by ``rotary=(cos, sin)``."""
    if rotary is None:
        raise ValueError(f"{ROTARY_ATTENTION} attention needs rotary=(cos, sin) passed to BertModel.forward")
    query, key = apply_rotary(query, *rotary), apply_rotary(key, *rotary)
    return ALL_ATTENTION_FUNCTIONS["sdpa"](module, query, key, value, attention_mask, **kwargs)


AttentionInterface.register(ROTARY_ATTENTION, rotary_sdpa_attention)
AttentionMaskInterface.register(ROTARY_ATTENTION, sdpa_mask)  # same masks as sdpa (else HF builds none at all)


def hf_bert_config(config: ModelConfig) -> BertConfig:
    """The HF config our BERT body is built from (with the default positions, also what a user needs to load
    ``bert.*`` weights into a plain ``BertModel``)."""
    return BertConfig(
        vocab_size=config.padded_vocab_size,
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        intermediate_size=config.intermediate_size,
        hidden_act=config.activation,
        hidden_dropout_prob=config.dropout,
        attention_probs_dropout_prob=config.attn_dropout,
        max_position_embeddings=config.max_seq_len,
        type_vocab_size=1,
        pad_token_id=config.pad_token_id,
        is_decoder=not config.bidirectional,
        add_cross_attention=False,
        tie_word_embeddings=False,
        **({"attn_implementation": ROTARY_ATTENTION} if config.pos_embedding == "rotary" else {}),
    )


class BertEmbeddings(nn.Module):
    """HF's ``BertEmbeddings`` (same names, same forward keywords) for ``pos_embedding`` none / rotary (no
    ``position_embeddings``) and ``pos_embedding_apply='concat'`` (word embedding ``hidden - pos_embedding_dim``
    wide, the position table's ``pos_embedding_dim`` channels appended)."""

    def __init__(self, config: ModelConfig, layer_norm_eps: float) -> None:
        super().__init__()
        h = config.hidden_size
        self.concat = config.pos_embedding == "absolute" and config.pos_embedding_apply == "concat"
        pos_dim = config.pos_embedding_dim if self.concat else h
        self.word_embeddings = nn.Embedding(
            config.padded_vocab_size, h - pos_dim if self.concat else h, padding_idx=config.pad_token_id
        )
        self.position_embeddings = (
            nn.Embedding(config.max_seq_len, pos_dim) if config.pos_embedding == "absolute" else None
        )
        self.token_type_embeddings = nn.Embedding(1, h)
        self.LayerNorm = nn.LayerNorm(h, eps=layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, input_ids=None, token_type_ids=None, position_ids=None, inputs_embeds=None, cache_length=0):
        x = self.word_embeddings(input_ids) if inputs_embeds is None else inputs_embeds
        if self.position_embeddings is not None:
            if position_ids is None:
                position_ids = torch.arange(cache_length, cache_length + x.shape[1], device=x.device)[None]
            pos = self.position_embeddings(position_ids).expand(*x.shape[:2], -1)
            x = torch.cat([x, pos], dim=-1) if self.concat else x + pos
        if token_type_ids is None:
            token_type_ids = torch.zeros(x.shape[:2], dtype=torch.long, device=x.device)
        x = x + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))


class BertLM(HelmLM):
    arch = "bert"

    def __init__(self, config: ModelConfig) -> None:
        if config.hidden_size % config.num_heads:
            raise ValueError(f"hidden_size={config.hidden_size} is not divisible by num_heads={config.num_heads}")
        super().__init__(config)
        self.rotary = rotary_for(config)  # buffers only, not saved: the state dict is bert.* + lm_head
        hf_config = hf_bert_config(config)
        self.bert = BertModel(hf_config, add_pooling_layer=False)
        if config.pos_embedding != "absolute" or config.pos_embedding_apply != "add":
            self.bert.embeddings = BertEmbeddings(config, hf_config.layer_norm_eps)
        self._finish_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.bert.embeddings.word_embeddings

    def embed(self, input_ids, attention_mask=None, position_ids=None) -> torch.Tensor:
        mask = real_token_mask(input_ids, attention_mask)
        if self.bert.embeddings.position_embeddings is not None:  # a table: positions must fit in it
            limit = self.bert.embeddings.position_embeddings.num_embeddings
            if position_ids is not None and int(position_ids.max()) >= limit:
                raise ValueError(f"position {int(position_ids.max())} is past max_seq_len={limit}")
            if position_ids is None and input_ids.shape[1] > limit:
                raise ValueError(f"sequence length {input_ids.shape[1]} is past max_seq_len={limit}")
        extra = {}
        if self.rotary is not None:
            extra["rotary"] = self.rotary(default_positions(input_ids, position_ids))
        out = self.bert(
            input_ids=input_ids,
            attention_mask=None if mask is None else mask.long(),
            position_ids=position_ids,
            token_type_ids=torch.zeros_like(input_ids),
            use_cache=False,
            **extra,
        )
        return out.last_hidden_state
