"""Model configuration shared by every backbone, and the named size presets.

Field names mirror the seed's ``train.py`` flags (``--hidden_size`` -> ``hidden_size``), so the trainer can
pass its parsed arguments straight through. Defaults are the seed's defaults.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any, Literal

from helm.codons import PAD_ID
from helm.errors import ConfigError

POS_EMBEDDINGS = ("none", "absolute", "rotary")
POS_EMBEDDING_APPLY = ("add", "concat")
SSM_LAYERS = ("Mamba", "Mamba2")
BIMAMBA_LAYOUTS = ("add", "concat")


@dataclass
class ModelConfig:
    """Model: backbone size and layout (shared by every backbone; the seed's flag names and defaults)."""

    vocab_size: int = 70
    """token rows of the embedding and LM head (a trainer sets it from the tokenizer)"""
    hidden_size: int = 256
    """model width"""
    num_layers: int = 4
    """number of layers"""
    num_heads: int = 4
    """attention heads"""
    intermediate_size: int = 1024
    """MLP width (gpt2/bert/hyena; mamba: gated MLP after each mixer, 0 = none)"""
    max_seq_len: int = 256
    """maximum tokens per sequence, specials included (longer ones are cut); also the positions of the absolute
    embedding. The seed's default; every paper command passes 444 (docs/PROTOCOL.md)"""
    dropout: float = 0.0
    """dropout"""
    attn_dropout: float = 0.0
    """attention dropout"""
    activation: str = "gelu"
    """activation (any transformers ACT2FN name)"""
    pos_embedding: Literal[POS_EMBEDDINGS] = "absolute"
    """position embedding: none, absolute, rotary (rotary: attention backbones only)"""
    pos_embedding_apply: Literal[POS_EMBEDDING_APPLY] = "add"
    """add the absolute position embedding or concat it (concat: the last pos_embedding_dim channels are
    positional)"""
    pos_embedding_dim: int | None = None
    """channels of a concatenated position embedding / rotary dims per head"""
    tie_embeddings: bool = False
    """tie input embedding and LM head"""
    pad_vocab_size_multiple: int = 1
    """pad the embedding/LM-head rows to a multiple of this (speed)"""
    bidirectional: bool = False
    """non-causal backbone; implied by --mode mlm, an error with --mode clm"""
    ssm_layer: Literal[SSM_LAYERS] = "Mamba"
    """mamba block type"""
    bimamba: Literal[BIMAMBA_LAYOUTS] = "add"
    """bidirectional mamba layer: add (a reversed mixer summed with the forward one before one MLP) or concat (a
    forward and a backward block, each with its MLP, projected from their concatenation: the paper's Bi-Mamba, set
    by the mamba-<size>-mlm presets; docs/ARCHITECTURE.md) [beyond the seed]"""
    pad_token_id: int = PAD_ID
    """id of the pad token (helm.codons)"""
    d_state: int = 16
    """mamba: SSM state size (mamba_ssm's default) [beyond the seed]"""
    d_conv: int = 4
    """mamba: causal convolution width [beyond the seed]"""
    expand: int = 2
    """mamba: inner width / hidden size [beyond the seed]"""
    headdim: int = 64
    """Mamba2: head size [beyond the seed]"""
    chunk_size: int = 64
    """Mamba2: SSD chunk length [beyond the seed]"""
    filter_order: int = 64
    """hyena: implicit filter MLP width [beyond the seed]"""
    filter_emb_dim: int = 33
    """hyena: positional features of the implicit filter (1 + 2 x bands) [beyond the seed]"""

    def __post_init__(self) -> None:
        from transformers.activations import ACT2FN  # here, not at import: `helm train --help` stays instant

        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(name, getattr(self, name), why, owner="ModelConfig")

        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "max_seq_len", "pad_vocab_size_multiple"):
            if int(getattr(self, name)) < 1:
                raise bad(name, "must be >= 1")
        if self.intermediate_size < 0:
            raise bad("intermediate_size", "must be >= 0")
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise bad("pad_token_id", f"must lie in [0, vocab_size={self.vocab_size})")
        for name in ("dropout", "attn_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise bad(name, "must lie in [0, 1)")
        if self.activation not in ACT2FN:
            raise bad("activation", f"choose one of {sorted(ACT2FN)}")
        if self.pos_embedding not in POS_EMBEDDINGS:
            raise bad("pos_embedding", f"choose one of {POS_EMBEDDINGS}")
        if self.pos_embedding_apply not in POS_EMBEDDING_APPLY:
            raise bad("pos_embedding_apply", f"choose one of {POS_EMBEDDING_APPLY}")
        if self.ssm_layer not in SSM_LAYERS:
            raise bad("ssm_layer", f"choose one of {SSM_LAYERS}")
        if self.bimamba not in BIMAMBA_LAYOUTS:
            raise bad("bimamba", f"choose one of {BIMAMBA_LAYOUTS}")
        concat = self.pos_embedding == "absolute" and self.pos_embedding_apply == "concat"
        if concat:
            if self.pos_embedding_dim is None or not 0 < self.pos_embedding_dim < self.hidden_size:
                raise bad("pos_embedding_dim", "concat needs 0 < pos_embedding_dim < hidden_size")
            if self.tie_embeddings:
                raise bad(
                    "tie_embeddings", "cannot tie when the token embedding is narrower (pos_embedding_apply=concat)"
                )
        elif self.pos_embedding == "absolute" and self.pos_embedding_dim not in (None, self.hidden_size):
            raise bad("pos_embedding_dim", "an added absolute embedding has hidden_size channels; use concat")

    @property
    def padded_vocab_size(self) -> int:
        m = self.pad_vocab_size_multiple
        return (self.vocab_size + m - 1) // m * m

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "model config") -> ModelConfig:
        """Build from a mapping; unknown keys raise naming the valid ones, ``None`` values mean the default."""
        valid = cls.field_names()
        unknown = sorted(set(values) - set(valid))
        if unknown:
            raise TypeError(f"{where}: unknown field(s) {unknown}; valid fields: {valid}")
        return cls(**{k: v for k, v in values.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------------------------ presets
# (layers, hidden, intermediate) per backbone and size tag. Each tag is the parameter count at the codon
# vocabulary (70 tokens) to within 10% for every backbone (tests/models/test_model_registry.py), so the grid
# compares architectures at equal size. gpt2 50m/100m/150m are the seed's shapes; the seed's smallest one
# (12 x 384) counts 21.5M, so 25m takes two more layers. hyena 50m is the paper's 7 x 768. 1m (4 x 144) is the
# laptop study's size (config/study.yaml): about 14k tokens/s on 2 CPU cores.
SHAPES: dict[str, dict[str, tuple[int, int, int]]] = {
    "gpt2": {"tiny": (2, 64, 128), "1m": (4, 144, 576), "25m": (14, 384, 1536), "50m": (10, 640, 2560),
             "100m": (14, 768, 3072), "150m": (12, 1024, 4096)},
    "bert": {"tiny": (2, 64, 128), "1m": (4, 144, 576), "25m": (14, 384, 1536), "50m": (10, 640, 2560),
             "100m": (14, 768, 3072), "150m": (12, 1024, 4096)},
    "hyena": {"tiny": (2, 64, 128), "25m": (14, 384, 1536), "50m": (7, 768, 3072), "100m": (14, 768, 3072),
              "150m": (12, 1024, 4096)},
}  # fmt: skip
# mamba: (causal layers, Bi-Mamba layers, hidden), intermediate 4 x hidden. A Bi-Mamba layer (bimamba="concat")
# holds two blocks and a projection, so at equal size it has half the layers: the paper's 50m is 40 x 256
# causal (`mamba-50m-clm`) and 20 x 256 bidirectional (`mamba-50m-mlm`); the other sizes follow that pattern.
MAMBA_SHAPES: dict[str, tuple[int, int, int]] = {
    "25m": (20, 10, 256),
    "50m": (40, 20, 256),
    "100m": (20, 10, 512),
    "150m": (30, 15, 512),
}


def _preset(model: str, layers: int, hidden: int, inter: int, **extra: Any) -> dict[str, Any]:
    heads = max(1, hidden // 64) if hidden >= 64 else 2  # head size 64 (tiny: 2 heads of 32)
    return {"model": model, "num_layers": layers, "hidden_size": hidden, "intermediate_size": inter,
            "num_heads": heads, **extra}  # fmt: skip


def _build_presets() -> dict[str, dict[str, Any]]:
    presets: dict[str, dict[str, Any]] = {}
    for model, shapes in SHAPES.items():
        for tag, (layers, hidden, inter) in shapes.items():
            presets[f"{model}-{tag}"] = _preset(model, layers, hidden, inter)
    presets["mamba-tiny"] = _preset("mamba", *SHAPES["gpt2"]["tiny"])
    for tag, (causal, bidirectional, hidden) in MAMBA_SHAPES.items():
        presets[f"mamba-{tag}-clm"] = _preset("mamba", causal, hidden, 4 * hidden)
        presets[f"mamba-{tag}-mlm"] = _preset("mamba", bidirectional, hidden, 4 * hidden, bidirectional=True,
                                              bimamba="concat")  # fmt: skip
    return dict(sorted(presets.items()))


PRESETS = _build_presets()
