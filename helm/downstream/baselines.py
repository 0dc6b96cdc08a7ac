"""`helm baseline`: simple baselines through the same splits and selection rule as `helm probe`.

    helm baseline --kind onehot-textcnn|kmer-ridge|tfidf-ridge --dataset NAME --seed S --out FILE.json \
        [--registry ...] [--mirror DIR | --data-file F] [--max-train N]
        onehot-textcnn: [--tokenizer 3mer|nuc] [--max-len 1024] [--epochs ...] [--batch-sizes ...] [--lrs ...]
        kmer-ridge:     [--ks 3 4 5] [--alphas ...]      nucleotide k-mer frequencies (overlapping) + ridge
        tfidf-ridge:    [--ngrams 1 2] [--alphas ...]    TF-IDF over codon words (1..n-grams) + ridge

Every hyper-parameter (k, n-gram range, ridge alpha, batch size, lr, epoch) is chosen on validation
Spearman; test is scored once, for the selected configuration. The JSON has the shape of `helm probe`'s
with ``run = "baseline-<kind>"``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from helm.args import HelmParser
from helm.downstream.command import (
    Dataset,
    EvalRecord,
    HeadGrid,
    Output,
    Runtime,
    recorded,
    regression_summary,
    run_command,
    settings_parser,
)
from helm.downstream.common import load_data, ridge_select, set_threads, test_predictions
from helm.splits import SPLITS

if TYPE_CHECKING:
    from helm.downstream.datasets import DownstreamData

KINDS = ("onehot-textcnn", "kmer-ridge", "tfidf-ridge")


@dataclass
class BaselineSettings(Dataset, Output, HeadGrid, Runtime):
    """The baseline."""

    kind: Literal[KINDS] | None = None
    """which baseline (see above)"""
    tokenizer: Literal["3mer", "nuc"] = "3mer"
    """one-hot alphabet"""
    max_len: int = 1024
    """one-hot TextCNN token cap (specials included)"""
    ks: list[int] = field(default_factory=lambda: [3, 4, 5])
    """k-mer sizes tried (kmer-ridge)"""
    ngrams: list[int] = field(default_factory=lambda: [1, 2])
    """codon n-gram ranges tried (tfidf)"""


# the settings every baseline JSON records, and those of the one-hot TextCNN
RECORDED = ("max_train",)
RECORDED_ONEHOT = ("tokenizer", "max_len", "epochs", "patience", "batch_sizes", "lrs")


def codon_words(seq: str, frame: int = 0) -> str:
    return " ".join(seq[i : i + 3] for i in range(frame, len(seq) - 2, 3))


def _parts(data: DownstreamData) -> tuple[dict[str, Any], dict[str, Any]]:
    parts = {p: data.indices(p) for p in SPLITS}
    return parts, {p: data.targets[idx] for p, idx in parts.items()}


def kmer_ridge(data: DownstreamData, ks: list[int], alphas: list[float]) -> dict[str, Any]:
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.preprocessing import normalize

    parts, y = _parts(data)

    def builder(k: int):
        def build():
            vec = CountVectorizer(analyzer="char", ngram_range=(k, k), lowercase=False)
            vec.fit([data.sequences[i] for i in parts["train"]])  # vocabulary from train only
            return {
                p: normalize(vec.transform([data.sequences[i] for i in idx]), norm="l1") for p, idx in parts.items()
            }

        return build

    return ridge_select({f"k={k}": builder(k) for k in ks}, y, alphas)


def tfidf_ridge(data: DownstreamData, ngrams: list[int], alphas: list[float]) -> dict[str, Any]:
    from sklearn.feature_extraction.text import TfidfVectorizer

    words = [codon_words(s, data.spec.codon_frame) for s in data.sequences]
    parts, y = _parts(data)

    def builder(n: int):
        def build():
            vec = TfidfVectorizer(analyzer="word", token_pattern=r"\S+", lowercase=False, ngram_range=(1, n))
            vec.fit([words[i] for i in parts["train"]])  # idf from train only
            return {p: vec.transform([words[i] for i in idx]) for p, idx in parts.items()}

        return build

    return ridge_select({f"ngram=1..{n}": builder(n) for n in ngrams}, y, alphas)


def onehot_textcnn(data: DownstreamData, args: BaselineSettings) -> dict[str, Any]:
    import torch

    from helm.downstream.embed import encode
    from helm.downstream.harness import FitConfig, OneHotEncoder, grid_rows, splits_of, sweep
    from helm.tokenizers import create_tokenizer

    tok = create_tokenizer(args.tokenizer)
    enc = encode(
        tok,
        data.sequences,
        args.max_len,
        mode="mlm",
        codon_frame=data.spec.codon_frame,
        overlong=args.overlong,
        where=str(data.path),
    )
    parts = splits_of(data, enc.ids, enc.mask)
    base = FitConfig(head="textcnn", epochs=args.epochs, patience=args.patience, seed=args.seed)
    torch.manual_seed(args.seed)
    result = sweep(
        parts["train"],
        parts["val"],
        parts["test"],
        len(tok),
        base,
        args.batch_sizes,
        args.lrs,
        make_encoder=lambda: OneHotEncoder(len(tok)),
        progress=not args.quiet,
    )
    result.pop("model")
    result["grid"] = grid_rows(result["grid"])
    result["metrics"].update(n_truncated=enc.n_truncated, n_tail_trimmed=enc.n_tail_trimmed)
    return result


def baseline(args: BaselineSettings) -> EvalRecord:
    t0 = time.time()
    set_threads(args.threads)
    data = load_data(args)
    if args.kind == "kmer-ridge":
        result = kmer_ridge(data, args.ks, args.alphas)
    elif args.kind == "tfidf-ridge":
        result = tfidf_ridge(data, args.ngrams, args.alphas)
    else:
        result = onehot_textcnn(data, args)
    settings = recorded(args, RECORDED + (RECORDED_ONEHOT if args.kind == "onehot-textcnn" else ()))
    provenance = {
        "kind": "baseline", "baseline": args.kind, "selected": result["selected"], "grid": result["grid"],
        "dataset_file": str(data.path), "sha256": data.spec.sha256, "metric": data.spec.metric,
        "codon_frame": data.spec.codon_frame, **data.split_info,  # split kind, split_seed (+ similarity settings)
        "seconds": round(time.time() - t0, 2),
    }  # fmt: skip
    return EvalRecord(f"baseline-{args.kind}", data.spec.name, args.seed, {**result["metrics"], **data.stats},
                      settings, provenance, test_predictions(data, result["test_pred"]))  # fmt: skip


def build_parser() -> HelmParser:
    return settings_parser("helm baseline", __doc__.splitlines()[0], BaselineSettings, ("kind", "dataset", "out"))


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), baseline, argv, regression_summary)


if __name__ == "__main__":
    sys.exit(main())
