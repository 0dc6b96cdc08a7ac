"""The helm-free side of the export tests: code run in a fresh interpreter that refuses to import helm."""

from __future__ import annotations

import os
from pathlib import Path

# prepended to every script run on the transformers side: an import hook makes `import helm` fail there
NO_HELM = r"""
import importlib.abc
import json
import sys


class NoHelm(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "helm" or name.startswith("helm."):
            raise ImportError(f"an exported folder imported {name}")
        return None


sys.meta_path.insert(0, NoHelm())
"""


def helm_free_env(root: Path, **extra: str) -> dict[str, str]:
    """The environment of such a process: no PYTHONPATH, offline, its own transformers module cache, one thread."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TRANSFORMERS_VERBOSITY")}
    env.update(HF_MODULES_CACHE=str(root / "hf_modules"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1",
               TOKENIZERS_PARALLELISM="false", **extra)  # fmt: skip
    return env
