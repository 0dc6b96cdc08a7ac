"""Our LoRA wrapper: starts at the pretrained function, trains only the adapters."""

from __future__ import annotations

import torch

from helm.downstream.lora import LoRALinear, apply_lora
from helm.models import create_model


def test_lora_starts_identical_and_trains_only_adapters():
    torch.manual_seed(0)
    model = create_model("gpt2", num_layers=2, hidden_size=32, num_heads=2, intermediate_size=64, max_seq_len=32)
    ids = torch.randint(6, 70, (2, 10))
    before = model.embed(ids).detach()
    n = apply_lora(model, r=4)
    assert n > 0 and sum(isinstance(m, LoRALinear) for m in model.modules()) == n
    torch.testing.assert_close(model.embed(ids), before)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    for _ in range(2):  # B starts at zero: the first step moves B, the second changes the output
        opt.zero_grad()
        model.embed(ids).pow(2).mean().backward()
        opt.step()
    assert not torch.allclose(model.embed(ids), before)
