"""A probe head saved by ``helm probe --save-head FILE`` and read back (``helm design --property-head FILE``).

The file (``torch.save``; read back as data only, by `helm.run.load_checkpoint`) holds the selected head of a
frozen probe of a helm run and what applying it to new sequences needs: the run whose last hidden states it reads
(its directory and the sha256 of its weights, so a retrained run is refused instead of silently mismatched), the
head kind (helm/downstream/heads.py) and its weights, the target standardisation it was trained with, and the
probe's framing (``max_len``; sequences are read from their first base). A ridge probe (``--head ridge``) is saved
as the linear head it equals on mean-pooled embeddings: ``y = ((pool - mu) / sd) . coef + b`` folded into one
weight vector and bias, in float64.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from helm.downstream.heads import build_head
from helm.files import atomic_path
from helm.run import MODEL_DIR, load_checkpoint

HEAD_FORMAT = "helm-probe-head/1"
HINT = "helm probe --run RUN --save-head FILE writes one"


@dataclass
class SavedHead:
    """A frozen probe head and the run whose embeddings it reads."""

    head: str  # textcnn | linear | mlp (a ridge probe is saved as linear)
    dim: int
    state: dict[str, torch.Tensor] = field(repr=False)
    target_mean: float
    target_std: float
    run_dir: str
    run_weights_sha256: str
    max_len: int
    info: dict[str, Any]  # task, metric, test / validation Spearman, the probe's head and selection

    def module(self) -> nn.Module:
        """The head with its weights, in eval mode (float64 for a saved ridge probe)."""
        dtype = next(iter(self.state.values())).dtype
        module = build_head(self.head, self.dim).to(dtype)
        try:
            module.load_state_dict(self.state)
        except RuntimeError as e:  # weights of another head kind or size
            raise ValueError(f"probe head {self.head!r} of size {self.dim}: its weights do not fit ({e})") from None
        return module.eval()


def weights_sha256(run_dir: str | Path) -> str:
    """sha256 over the files of a run's model/ folder (name and bytes, in name order)."""
    digest = hashlib.sha256()
    for file in sorted((Path(run_dir) / MODEL_DIR).iterdir()):
        digest.update(file.name.encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def ridge_as_linear(coef: np.ndarray, intercept: float, mu: np.ndarray, sd: np.ndarray) -> dict[str, torch.Tensor]:
    """The `LinearProbe` state of a ridge fitted on standardised mean-pooled embedding features."""
    w = np.asarray(coef, dtype=np.float64) / sd
    b = float(intercept) - float(w @ mu)
    return {"out.weight": torch.from_numpy(w[None, :].copy()), "out.bias": torch.tensor([b], dtype=torch.float64)}


def save_head(file: str | Path, saved: SavedHead) -> Path:
    """Write ``saved`` to ``file`` atomically."""
    payload = {"format": HEAD_FORMAT, **asdict(saved)}
    payload["state"] = {k: v.detach().cpu().contiguous() for k, v in saved.state.items()}
    with atomic_path(file) as tmp:
        torch.save(payload, tmp)
    return Path(file)


def load_head(file: str | Path) -> SavedHead:
    """Read a head file; a missing, foreign or damaged one is a one-line error naming the file."""
    file = Path(file)
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no such probe head file ({HINT})")
    try:
        payload = load_checkpoint(file)
    except ValueError as e:
        raise ValueError(f"{e} ({HINT})") from None
    if not isinstance(payload, dict) or payload.get("format") != HEAD_FORMAT:
        raise ValueError(f"{file}: not a helm probe head (no {HEAD_FORMAT!r} format tag; {HINT})")
    names = [f for f in SavedHead.__dataclass_fields__ if f not in payload]
    if names:
        raise ValueError(f"{file}: damaged probe head ({', '.join(names)} missing)")
    return SavedHead(**{k: payload[k] for k in SavedHead.__dataclass_fields__})
