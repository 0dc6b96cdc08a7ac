"""Backbone registry: ``create_model(name, **config)``, size presets, ``load_pretrained(dir)``, ``helm models``.

model = create_model("gpt2", preset="gpt2-50m", bidirectional=True)
logits = model(input_ids, attention_mask)          # [B, L, vocab_size]
hidden = model.embed(input_ids, attention_mask)    # [B, L, hidden_size]
model.save_pretrained("run/model"); same = load_pretrained("run/model")
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from helm.models.config import PRESETS, ModelConfig

if TYPE_CHECKING:
    import torch

    from helm.models.base import HelmLM

ARCHS = ("gpt2", "bert", "mamba", "hyena")  # the registry's names, known without importing torch


@functools.cache
def _registry() -> dict[str, type[HelmLM]]:
    """name -> backbone class; the backbones (and torch) are imported on first use, so `helm --help` is instant."""
    from helm.models.bert import BertLM
    from helm.models.gpt2 import GPT2LM
    from helm.models.hyena import HyenaLM
    from helm.models.mamba import MambaLM

    registry = {cls.arch: cls for cls in (GPT2LM, BertLM, MambaLM, HyenaLM)}
    assert tuple(registry) == ARCHS, tuple(registry)
    return registry


def __getattr__(name: str) -> Any:  # `from helm.models import MODELS / HelmLM` still works (PEP 562)
    if name == "MODELS":
        return _registry()
    if name == "HelmLM":
        from helm.models.base import HelmLM

        return HelmLM
    raise AttributeError(f"module 'helm.models' has no attribute {name!r}")


def list_models() -> list[str]:
    return list(ARCHS)


def list_presets(model: str | None = None) -> list[str]:
    """Preset names (all, or those of one backbone)."""
    return [name for name, p in PRESETS.items() if model is None or p["model"] == model]


def get_preset(name: str) -> dict[str, Any]:
    """``{"model": backbone, <ModelConfig field>: value, ...}`` of a named preset."""
    if name not in PRESETS:
        raise KeyError(f"unknown model preset {name!r}; valid presets: {list(PRESETS)}")
    return dict(PRESETS[name])


def nominal_size(name: str) -> int | None:
    """The parameter count a preset's name promises ("gpt2-50m" -> 50_000_000, "mamba-50m-mlm" too); None for
    names without a size tag (``*-tiny``)."""
    match = re.search(r"-(\d+(?:\.\d+)?)([mb])(?:-|$)", name)
    if match is None:
        return None
    return round(float(match.group(1)) * (1e6 if match.group(2) == "m" else 1e9))


def build_config(name: str, preset: str | None = None, **config: Any) -> tuple[str, ModelConfig]:
    """Resolve (backbone, ModelConfig): preset values first, explicit fields win (None = not given)."""
    if preset is None and name in PRESETS:  # create_model("gpt2-50m") means the preset
        preset = name
    values: dict[str, Any] = {}
    if preset is not None:
        values = get_preset(preset)
        arch = values.pop("model")
        if name not in (arch, preset):
            raise ValueError(f"preset {preset!r} is a {arch} preset, not {name!r}")
        name = arch
    if name not in ARCHS:
        raise KeyError(f"unknown model {name!r}; valid models: {list(ARCHS)} (presets: {list(PRESETS)})")
    values.update({k: v for k, v in config.items() if v is not None})
    return name, ModelConfig.from_dict(values, where=f"create_model({name!r})")


def create_model(name: str, preset: str | None = None, **config: Any) -> HelmLM:
    """Build a backbone + LM head. ``name`` is a backbone (``list_models()``) or a preset name; ``config``
    holds ModelConfig fields (the seed's flag names); unknown names raise listing the valid ones."""
    arch, cfg = build_config(name, preset, **config)
    return _registry()[arch](cfg)


def load_pretrained(directory: str | Path, map_location: str | torch.device = "cpu") -> HelmLM:
    """Rebuild a model written by ``save_pretrained`` (config.json + model.safetensors), in eval mode."""
    from safetensors.torch import load_model

    from helm.models.base import CONFIG_NAME, WEIGHTS_NAME

    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    for path in (config_path, weights_path):
        if not path.exists():
            raise FileNotFoundError(f"{path}: missing; a saved model directory holds {CONFIG_NAME} and {WEIGHTS_NAME}")
    try:
        values = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{config_path}: not valid JSON ({err})") from err
    arch = values.pop("model_type", None)
    if arch not in ARCHS:
        raise ValueError(f"{config_path}: model_type {arch!r} is not one of {list(ARCHS)}")
    model = _registry()[arch](ModelConfig.from_dict(values, where=str(config_path)))
    load_model(model, str(weights_path), strict=True, device=str(map_location))
    return model.eval()


def count_parameters(name: str, **config: Any) -> int:
    """Parameter count without allocating weights (built on the meta device)."""
    import torch

    with torch.device("meta"):
        return create_model(name, **config).num_parameters()


def main(argv: list[str] | None = None) -> int:
    """`helm models`: backbones, presets (shapes and the size their name promises), losses, tokenizers; instant.
    ``--params`` adds each preset's exact parameter count (builds every model on the meta device: seconds)."""
    import importlib.util

    from helm.args import HelmParser
    from helm.losses import LOSSES
    from helm.tokenizers import TOKENIZERS

    parser = HelmParser("helm models", "List backbones, size presets, losses and tokenizers.")
    parser.add_argument("--params", action="store_true", help="count each preset's parameters (a few seconds)")
    parser.add_argument("--vocab_size", type=int, default=70, help="vocabulary for --params")
    args = parser.parse_args(argv)
    print("backbones: " + ", ".join(list_models()))
    print(f"mamba_ssm (CUDA kernels) installed: {importlib.util.find_spec('mamba_ssm') is not None}")
    counted = f" and parameter counts for vocab_size={args.vocab_size}" if args.params else " (--params counts them)"
    print(f"\npresets: shapes{counted}")
    print(f"  {'preset':<16} {'model':<6} {'layers':>6} {'hidden':>6} {'inter':>6} {'size':>6}"
          + (f" {'params':>14} {'vs size':>8}" if args.params else ""))  # fmt: skip
    for name in list_presets():
        p = get_preset(name)
        size = nominal_size(name)
        row = f"{name:<16} {p['model']:<6} {p['num_layers']:>6} {p['hidden_size']:>6} {p['intermediate_size']:>6}"
        row += f" {f'{size / 1e6:g}M' if size else '-':>6}"
        if args.params:
            n = count_parameters(name, vocab_size=args.vocab_size)
            row += f" {n:>14,} {f'{100 * (n / size - 1):+.1f}%' if size else '-':>8}"
        layout = f"bidirectional, bimamba={p['bimamba']}" if "bimamba" in p else "bidirectional"
        print(f"  {row}" + (f"  ({layout})" if p.get("bidirectional") else ""))
    print("\nlosses: " + ", ".join(LOSSES))
    print("tokenizers: " + ", ".join(TOKENIZERS))
    return 0


__all__ = [
    "MODELS",
    "ModelConfig",
    "HelmLM",
    "build_config",
    "count_parameters",
    "create_model",
    "get_preset",
    "list_models",
    "list_presets",
    "load_pretrained",
    "main",
    "nominal_size",
]
