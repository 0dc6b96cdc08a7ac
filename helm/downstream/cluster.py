"""`helm cluster`: do a run's embeddings group synonymous variants of the same protein?

    helm cluster (--run RUN_DIR | --hf HF_DIR [--hf-* ...]) --reference PREPARED_DIR_or_FILE --out FILE.json \
        [--num-proteins 20] [--variants 10] [--max-len N] [--seed 0]

For each of ``--num-proteins`` held-out CDS with distinct proteins, ``--variants`` synonymous variants are drawn
by resampling every codon uniformly among the codons of its amino acid (stop among stops; the protein is
kept exactly). The original is one of the variants. Mean-pooled embeddings -> silhouette score with the
protein as the cluster label (euclidean and cosine). 1 = variants of a protein sit together, 0 = no structure.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from typing import TYPE_CHECKING, Any

from helm.args import HelmParser
from helm.downstream.common import InputError, add_reference_args, run_json_command
from helm.downstream.source import add_source_args, load_source, source_error

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


def cluster(args: argparse.Namespace) -> dict[str, Any]:
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
    return {
        "run": src.run_id,
        "task": "synonymous_clustering",
        "seed": args.seed,
        "metrics": metrics,
        "config": {
            "kind": "cluster",
            "run_dir": src.run_dir,
            "hf": src.meta["hf"],
            "reference": str(args.reference),
            "variants": args.variants,
            "num_proteins": args.num_proteins,
            "seconds": round(time.time() - t0, 2),
        },
    }


def build_parser() -> HelmParser:
    parser = HelmParser("helm cluster", __doc__.splitlines()[0])
    add_source_args(parser)
    add_reference_args(parser)
    parser.add_argument("--out", "--output", dest="out", required=True, help="output JSON file")
    parser.add_argument("--num-proteins", type=int, default=20, help="distinct proteins (clusters)")
    parser.add_argument("--variants", type=int, default=10, help="sequences per protein, the original included")
    parser.add_argument("--batch-size", type=int, default=64, help="sequences per forward pass")
    parser.add_argument("--max-len", type=int, default=None, help="token cap (unset: the model's limit)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synonymous resampling")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if err := source_error(args):
        parser.error(err)
    return run_json_command(
        "helm cluster",
        cluster,
        args,
        lambda p: (
            f"{p['run']}: silhouette {p['metrics']['silhouette_euclidean']:.3f} "
            f"(cosine {p['metrics']['silhouette_cosine']:.3f}) over {p['metrics']['num_proteins']} proteins"
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
