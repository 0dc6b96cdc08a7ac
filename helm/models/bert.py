"""BERT backbone: ``transformers.BertModel`` (no pooler) under our LM head.

Bidirectional by default as BERT is; ``bidirectional=False`` turns it into a causal decoder (HF's
``is_decoder``). Positions are BERT's own learned absolute table; other position schemes raise.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import BertConfig, BertModel

from helm.models.base import HelmLM, real_token_mask
from helm.models.config import ModelConfig


def hf_bert_config(config: ModelConfig) -> BertConfig:
    """The HF config our BERT body is built from (also what a user needs to load ``bert.*`` weights alone)."""
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
    )


class BertLM(HelmLM):
    arch = "bert"

    def __init__(self, config: ModelConfig) -> None:
        if config.pos_embedding != "absolute" or config.pos_embedding_apply != "add":
            raise ValueError(
                f"bert uses its own learned absolute positions (pos_embedding='absolute', pos_embedding_apply='add'); "
                f"got pos_embedding={config.pos_embedding!r}, pos_embedding_apply={config.pos_embedding_apply!r}. "
                "Use gpt2 for rotary or no position embedding."
            )
        if config.hidden_size % config.num_heads:
            raise ValueError(f"hidden_size={config.hidden_size} is not divisible by num_heads={config.num_heads}")
        super().__init__(config)
        self.bert = BertModel(hf_bert_config(config), add_pooling_layer=False)
        self._finish_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.bert.embeddings.word_embeddings

    def embed(self, input_ids, attention_mask=None, position_ids=None) -> torch.Tensor:
        mask = real_token_mask(input_ids, attention_mask)
        if position_ids is not None and int(position_ids.max()) >= self.config.max_seq_len:
            raise ValueError(f"position {int(position_ids.max())} is past max_seq_len={self.config.max_seq_len}")
        if position_ids is None and input_ids.shape[1] > self.config.max_seq_len:
            raise ValueError(f"sequence length {input_ids.shape[1]} is past max_seq_len={self.config.max_seq_len}")
        out = self.bert(
            input_ids=input_ids,
            attention_mask=None if mask is None else mask.long(),
            position_ids=position_ids,
            token_type_ids=torch.zeros_like(input_ids),
        )
        return out.last_hidden_state
