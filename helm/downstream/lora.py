"""A small LoRA (Hu et al. 2021) for our backbones.

peft targets ``nn.Linear`` and transformers' own ``Conv1D``; our GPT-2 stores its projections in
``helm.models.base.Conv1D`` (weight [in, out]) and the SSM/Hyena backbones mix both, so we wrap either kind
here: ``y = base(x) + (dropout(x) @ A^T @ B^T) * alpha / r`` with B zero-initialised, so the wrapped model starts
exactly at the pretrained function. Only A and B train.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Module, in_features: int, out_features: int, r: int, alpha: float, dropout: float):
        super().__init__()
        self.base = base
        self.lora_a = nn.Parameter(torch.empty(r, in_features))
        self.lora_b = nn.Parameter(torch.zeros(out_features, r))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.scale = alpha / r
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (self.dropout(x) @ self.lora_a.T @ self.lora_b.T) * self.scale


def _features(module: nn.Module) -> tuple[int, int] | None:
    from helm.models.base import Conv1D

    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if isinstance(module, Conv1D):
        return module.weight.shape[0], module.weight.shape[1]
    return None


def apply_lora(model: nn.Module, r: int = 8, alpha: float = 16.0, dropout: float = 0.0, skip=("lm_head",)) -> int:
    """Freeze ``model`` and wrap every linear layer (except ``skip``) with LoRA; returns how many were wrapped."""
    for p in model.parameters():
        p.requires_grad_(False)
    targets = [
        (name, module)
        for name, module in model.named_modules()
        if _features(module) is not None and not any(name.split(".")[-1] == s for s in skip)
    ]
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        fin, fout = _features(module)
        setattr(parent, child, LoRALinear(module, fin, fout, r, alpha, dropout))
    if not targets:
        raise ValueError(f"no linear layers to adapt in {type(model).__name__}")
    return len(targets)
