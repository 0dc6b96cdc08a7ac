"""`helm embed`: a run's frozen per-token embeddings of one dataset, computed once and shared.

    helm embed (--run RUN_DIR | --hf HF_DIR [--hf-* ...]) --dataset NAME --out FEATURES.safetensors
        [--data-file F | --mirror DIR] [--max-rows N] [--max-len N] [--overlong truncate|error]
        [--embed-batch-size 64] [--bf16] [--threads N]

Every head and every downstream seed of a (run, dataset) pair reads the same file (`helm probe --features`),
so the backbone runs once per pair, not once per seed and head. ``--hf DIR`` embeds with any local Hugging Face
checkpoint instead (helm.downstream.source; its identity goes into the metadata as ``hf``). The file is
safetensors (tensors only, no pickle): ``features`` float16 [N, L, H] (pads zeroed), ``mask`` bool [N, L], and
string metadata: the run id, the dataset and its file, a digest of the sequences (``helm probe`` refuses
features of other rows), the framing (mode, tokenizer, max_len) and the counts of cut (``n_truncated``) and
tail-trimmed sequences.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from helm.args import HelmParser, command_errors
from helm.downstream.command import (
    Dataset,
    Embedding,
    FromHf,
    FromRun,
    Output,
    Runtime,
    SourceChecked,
    parse,
    recorded,
    settings_parser,
)
from helm.downstream.common import InputError, set_threads
from helm.downstream.source import load_source

if TYPE_CHECKING:
    import torch

    from helm.downstream.datasets import DownstreamData


@dataclass
class Features:
    x: torch.Tensor  # float16 [N, L, H]
    mask: torch.Tensor  # bool [N, L]
    meta: dict[str, Any]


def sequences_digest(sequences: list[str]) -> str:
    """sha256 of the cleaned sequences in order: ties a features file to the exact rows it embeds."""
    h = hashlib.sha256()
    for seq in sequences:
        h.update(seq.encode())
        h.update(b"\n")
    return h.hexdigest()


def save_features(path: str | Path, feats: Features) -> Path:
    """Write the features atomically (a killed job leaves no half file for the next rule to read)."""
    from safetensors.torch import save

    from helm.files import atomic_write

    tensors = {"features": feats.x.contiguous(), "mask": feats.mask.contiguous()}
    return atomic_write(path, save(tensors, metadata={k: json.dumps(v) for k, v in feats.meta.items()}))


def load_features(path: str | Path) -> Features:
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: features file not found (made by `helm embed`)")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = {k: json.loads(v) for k, v in (fh.metadata() or {}).items()}
            x, mask = fh.get_tensor("features"), fh.get_tensor("mask")
    except Exception as exc:  # a foreign or truncated file
        raise InputError(f"{path}: not a features file written by `helm embed` ({exc})") from None
    return Features(x, mask, meta)


def check_features(feats: Features, data: DownstreamData, where: str) -> None:
    """The features must embed exactly the rows of ``data`` as loaded (same dataset, subsample and sequences)."""
    meta = feats.meta
    if meta.get("dataset") != data.spec.name:
        raise InputError(f"{where}: features of dataset {meta.get('dataset')!r}, not {data.spec.name!r}")
    if meta.get("n_rows") != len(data.sequences) or meta.get("sequences_sha256") != sequences_digest(data.sequences):
        raise InputError(f"{where}: the features embed other rows ({meta.get('n_rows')} rows, max_rows "
                         f"{meta.get('max_rows')}) than the dataset as loaded ({len(data.sequences)} rows); "
                         "give the same --data-file and --max-rows as `helm embed`")  # fmt: skip


@dataclass
class EmbedSettings(SourceChecked, FromRun, FromHf, Dataset, Output, Embedding, Runtime):
    """`helm embed`."""

    out: str = ""
    """output features file (.safetensors)"""


def embed_dataset(args: EmbedSettings) -> tuple[Features, dict[str, Any]]:
    import torch

    from helm.downstream.datasets import load_dataset
    from helm.downstream.embed import embed_tokens

    t0 = time.time()
    set_threads(args.threads)
    src = load_source(args)
    data = load_dataset(args.dataset, registry=args.registry, mirror=args.mirror, path=args.data_file,
                        max_rows=args.max_rows)  # fmt: skip
    max_len = src.resolve_max_len(args.max_len)
    enc = src.encode(data.sequences, max_len, codon_frame=data.spec.codon_frame, overlong=args.overlong,
                     where=f"{data.path}")  # fmt: skip
    x = embed_tokens(src.model, enc, args.embed_batch_size, dtype=torch.float16, progress=not args.quiet,
                     bf16=args.bf16, compile=args.compile)  # fmt: skip
    meta = {
        "run": src.run_id, "run_dir": src.run_dir, "dataset": data.spec.name, "dataset_file": str(data.path),
        "sha256": data.spec.sha256, "n_rows": len(data.sequences), "sequences_sha256": sequences_digest(data.sequences),
        "mode": src.meta["mode"], "tokenizer": src.meta["tokenizer"], "max_len": max_len,
        "codon_frame": data.spec.codon_frame, "n_truncated": enc.n_truncated, "n_tail_trimmed": enc.n_tail_trimmed,
        "hidden_size": int(x.shape[-1]), "hf": src.meta["hf"], "seconds": round(time.time() - t0, 2),
        **recorded(args, ("max_rows", "overlong", "bf16", "compile")),
    }  # fmt: skip
    return Features(x, enc.mask, meta), meta


def build_parser() -> HelmParser:
    return settings_parser("helm embed", __doc__.splitlines()[0], EmbedSettings, ("dataset", "out"))


def main(argv: list[str] | None = None) -> int:
    args = parse(build_parser(), argv)
    with command_errors("helm embed"):
        feats, meta = embed_dataset(args)
        save_features(args.out, feats)
    shape = "x".join(map(str, feats.x.shape))
    print(f"{meta['run']} {meta['dataset']}: {shape} features, {meta['n_truncated']} cut, "
          f"{meta['seconds']:.1f} s -> {args.out}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
