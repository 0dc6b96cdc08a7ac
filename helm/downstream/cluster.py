"""`helm cluster`: do a run's embeddings group synonymous variants of the same protein?

    helm cluster (--run RUN_DIR | --hf HF_DIR [--hf-* ...]) --reference PREPARED_DIR_or_FILE --out FILE.json \
        [--num-proteins 20] [--variants 10] [--max-len N] [--seed 0]

For each of ``--num-proteins`` held-out CDS with distinct proteins, ``--variants`` synonymous variants are drawn
by resampling every codon uniformly among the codons of its amino acid (stop among stops; the protein is
kept exactly). The original is one of the variants. Mean-pooled embeddings -> silhouette score with the
protein as the cluster label (euclidean and cosine). 1 = variants of a protein sit together, 0 = no structure.
"""

from __future__ import annotations

import functools
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from helm.args import HelmParser
from helm.downstream.command import (
    EvalRecord,
    FromHf,
    FromRun,
    Output,
    Reference,
    SourceChecked,
    recorded,
    run_command,
    settings_parser,
)
from helm.downstream.common import InputError
from helm.downstream.source import load_source

if TYPE_CHECKING:
    import numpy as np


@functools.cache
def synonyms() -> dict[str, list[str]]:
    """Amino acid (``*`` for stop) -> its codons."""
    from helm.codons import CODONS, GENETIC_CODE

    out: dict[str, list[str]] = {}
    for codon in CODONS:
        out.setdefault(GENETIC_CODE[codon], []).append(codon)
    return out


def synonymous_variant(cds: str, rng: np.random.Generator) -> str:
    """Same protein, every codon redrawn uniformly among its synonyms; codons with N are kept as they are."""
    from helm.codons import GENETIC_CODE

    table = synonyms()
    out = []
    for i in range(0, len(cds) - len(cds) % 3, 3):
        codon = cds[i : i + 3]
        options = table.get(GENETIC_CODE.get(codon, ""), [codon])
        out.append(options[rng.integers(len(options))])
    return "".join(out)


def variant_sets(cds_list: list[str], num_proteins: int, variants: int, seed: int) -> tuple[list[str], np.ndarray]:
    """(sequences, protein label per sequence): the original plus ``variants - 1`` resampled copies each."""
    import numpy as np

    from helm.codons import translate

    rng = np.random.default_rng(seed)
    seen, seqs, labels = set(), [], []
    for cds in cds_list:
        cds = cds[: len(cds) - len(cds) % 3]
        protein = translate(cds)
        if not protein or protein in seen or "X" in protein:
            continue
        seen.add(protein)
        group = [cds] + [synonymous_variant(cds, rng) for _ in range(variants - 1)]
        seqs += group
        labels += [len(seen) - 1] * len(group)
        if len(seen) == num_proteins:
            break
    return seqs, np.array(labels)


@dataclass
class ClusterSettings(SourceChecked, FromRun, FromHf, Reference, Output):
    """The variant sets."""

    num_proteins: int = 20
    """distinct proteins (clusters)"""
    variants: int = 10
    """sequences per protein, the original included"""
    batch_size: int = 64
    """sequences per forward pass"""
    max_len: int | None = None
    """token cap (unset: the model's limit)"""
    seed: int = 0
    """seed of the synonymous resampling"""


RECORDED = ("reference", "variants", "num_proteins")


def cluster(args: ClusterSettings) -> EvalRecord:
    from sklearn.metrics import silhouette_score

    from helm.downstream.embed import embed_pooled
    from helm.downstream.generate import read_reference

    t0 = time.time()
    src = load_source(args)
    refs, _ = read_reference(args.reference, args.num_proteins * 5)  # a prepared dir decodes with its own tokenizer
    seqs, labels = variant_sets(refs, args.num_proteins, args.variants, args.seed)
    n_proteins = len(set(labels.tolist()))
    if n_proteins < 2 or args.variants < 2:
        raise InputError(f"{args.reference}: need >= 2 distinct proteins and --variants >= 2 (got {n_proteins})")
    enc = src.encode(seqs, src.resolve_max_len(args.max_len), where=str(args.reference))
    emb = embed_pooled(src.model, enc, args.batch_size).numpy()
    metrics = {
        "silhouette_euclidean": float(silhouette_score(emb, labels, metric="euclidean")),
        "silhouette_cosine": float(silhouette_score(emb, labels, metric="cosine")),
        "num_proteins": n_proteins,
        "num_sequences": len(seqs),
        "n_truncated": enc.n_truncated,
    }
    provenance = {
        "kind": "cluster",
        "run_dir": src.run_dir,
        "hf": src.meta["hf"],
        "seconds": round(time.time() - t0, 2),
    }
    return EvalRecord(src.run_id, "synonymous_clustering", args.seed, metrics, recorded(args, RECORDED), provenance)


def build_parser() -> HelmParser:
    return settings_parser("helm cluster", __doc__.splitlines()[0], ClusterSettings, ("reference", "out"))


def summary(p: dict[str, Any]) -> str:
    return (
        f"{p['run']}: silhouette {p['metrics']['silhouette_euclidean']:.3f} "
        f"(cosine {p['metrics']['silhouette_cosine']:.3f}) over {p['metrics']['num_proteins']} proteins"
    )


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), cluster, argv, summary)


if __name__ == "__main__":
    sys.exit(main())
