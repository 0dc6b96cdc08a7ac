"""The optional predicted property of a design: a head saved by ``helm probe --save-head`` applied to the design.

``helm design --property-head FILE`` loads the head (helm/downstream/saved_head.py) and the run whose frozen
embeddings it was trained on (which need not be the design run), checks that the run is the one the head saw
(same weights, same hidden size), and predicts, for every design and baseline alike, what the probe would have
predicted for that CDS as a dataset row: the CDS framed as in pretraining (helm/downstream/embed.py: ``<cls>
codons [<eos>]``), the run's last hidden states, the head, de-standardised to the target's own scale (e.g. the
mRFP dataset's log protein level). A CDS longer than the probe's ``max_len`` is refused, not cut.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch


class PropertyScorer:
    """``predict(cds)`` -> the head's property of each CDS; ``info`` describes the head for the record."""

    def __init__(self, file: str | Path, batch_size: int = 64, runs: dict[str, Any] | None = None) -> None:
        from helm.downstream.embed import check_compatible, run_mode
        from helm.downstream.saved_head import load_head, weights_sha256
        from helm.run import load_run

        self.file = Path(file)
        saved = load_head(self.file)
        run_dir = Path(saved.run_dir)
        if not run_dir.is_dir():
            raise FileNotFoundError(f"{self.file}: the head's run {run_dir} is missing (a head reads that run's "
                                    "embeddings)")  # fmt: skip
        if weights_sha256(run_dir) != saved.run_weights_sha256:
            raise ValueError(f"{self.file}: the weights of {run_dir} changed since this head was trained on them "
                             "(retrain the head with helm probe --save-head)")  # fmt: skip
        # the design run itself, when the head reads it (no second copy of the model)
        run = (runs or {}).get(str(run_dir.resolve())) or load_run(run_dir)
        check_compatible(run.model, run.tokenizer, where=str(run_dir))
        hidden = int(run.model.config.hidden_size)
        if hidden != saved.dim:
            raise ValueError(f"{self.file}: the head reads {saved.dim}-dim embeddings, {run_dir} gives {hidden}")
        self.run, self.mode, self.saved = run, run_mode(run.config), saved
        self.head = saved.module()
        self.batch_size = batch_size

    @property
    def info(self) -> dict[str, Any]:
        s = self.saved
        return {"file": str(self.file), "run_dir": s.run_dir, "run": self.run.run_id, "head": s.head,
                "max_len": s.max_len, **s.info}  # fmt: skip

    @torch.inference_mode()
    def predict(self, cds: list[str]) -> np.ndarray:
        from helm.downstream.embed import embed_tokens, encode

        enc = encode(self.run.tokenizer, cds, self.saved.max_len, mode=self.mode, overlong="error",
                     where=f"--property-head {self.file}")  # fmt: skip
        x = embed_tokens(self.run.model, enc, self.batch_size, progress=False)
        dtype = next(self.head.parameters()).dtype
        out = []
        for i in range(0, len(enc), self.batch_size):
            rows = slice(i, i + self.batch_size)
            out.append(self.head(x[rows].to(dtype), enc.mask[rows]).double())
        return torch.cat(out).numpy() * self.saved.target_std + self.saved.target_mean
