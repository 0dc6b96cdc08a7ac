"""`helm annotate`: antibody region annotation (FWR/CDR per codon) from frozen embeddings.

    helm annotate --run RUN_DIR --out FILE.json [--corpus PREPARED_DIR | none] [--data OAS_FILE | --mirror DIR]
        [--num-rows 2000] [--epochs 30] [--patience 5] [--lr 1e-3] [--batch-size 32] [--hidden 0] [--seed 0]

Rows of an OAS unit (default: pretrain/oas_parameswaran2013_heavy_100k.csv.gz, sha256-checked in the mirror)
go through ``helm.io.oas_codon_regions``: the CDS ``helm prepare`` keeps and one label per codon. In that file
FWR2, CDR2, FWR3, CDR3 and FWR4 are present in nearly every row; FWR1/CDR1 only in ~13-15% (5'-truncated 454
reads); codons outside every annotated region are labelled ``none``.

Held-out rows (the paper used 2,000 OAS sequences never seen in pretraining): a row is used only when it lies
outside the training split of the run's pretraining corpus (``--corpus``, default the run's
``derived.prepared_data``). The test is the one ``helm prepare`` applies: the key of the row as prepare computes
it (``helm.prepare.process_chunk`` under the corpus's settings: blake2b-64 of the in-frame CDS, of its
translation for an aa corpus) and ``helm.splits.split_of`` with the corpus's seed and fractions; a row whose key
is in ``train/*.hashes`` is skipped too (explicit-split corpora are decided by that alone). The first
``--num-rows`` held-out rows in file order are kept (a CDS seen before among them is skipped as a duplicate), then
split 8/1/1 (seeded). The run's frozen per-token embeddings feed a per-token linear (or MLP, ``--hidden``)
classifier trained with cross entropy; the epoch is chosen on validation macro F1. Reported on test: accuracy,
macro F1 over the classes present in test, and per-region accuracy (the share of that region's codons labelled
correctly). Codon (3mer) runs label each codon token; nucleotide runs repeat the codon's label on its 3 bases.
``--corpus none`` skips the filter (rows may overlap pretraining; a warning, ``heldout_source: "none"``).
There is no ``--hf`` (foreign checkpoints, docs/PROTOCOL.md): labels are aligned to our tokenizers' tokens (one
per codon or base) and held-out rows need the checkpoint's pretraining corpus; a foreign model has neither.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from helm.args import HelmParser
from helm.codons import IGNORE_INDEX
from helm.downstream.command import EvalRecord, FromRun, Output, recorded, run_command, settings_parser
from helm.downstream.common import InputError
from helm.io import OAS_FIELDS, OAS_REGIONS, OasRow  # numpy, no torch: --help stays instant
from helm.prepare import SUMMARY_FILE
from helm.splits import SPLITS

if TYPE_CHECKING:
    import numpy as np
    import torch

DEFAULT_FILE = "pretrain/oas_parameswaran2013_heavy_100k.csv.gz"
DEFAULT_SHA256 = "e8392df2b4a0ffe65cde3d34d645d73a8b5d9da23153ef27571e8c18245eaa2d"  # data/MANIFEST.md
CLASSES = (*OAS_REGIONS, "none")
CHUNK_ROWS = 8192


@dataclass
class AnnotateSettings(FromRun, Output):
    """The rows and the token classifier."""

    data: str | None = None
    """OAS unit (CSV, optionally gzipped); unset: pretrain/oas_parameswaran2013_heavy_100k.csv.gz found in --mirror
    (sha256-checked)"""
    mirror: str | None = None
    """local data mirror (unset: $HELM_DATA_MIRROR)"""
    corpus: str | None = None
    """the run's prepared pretraining corpus (unset: config.yaml derived.prepared_data); rows in its training split
    are skipped; 'none' = no check (rows may overlap pretraining)"""
    num_rows: int = 2000
    """held-out rows to use (the paper: 2,000)"""
    epochs: int = 30
    """most epochs of the token classifier"""
    patience: int = 5
    """early-stopping patience (epochs, validation macro F1)"""
    lr: float = 1e-3
    """classifier learning rate (Adam)"""
    batch_size: int = 32
    """sequences per training step"""
    hidden: int = 0
    """0 = linear head, else MLP width"""
    seed: int = 0
    """seed of the 8/1/1 split and the classifier"""
    quiet: bool = False
    """no progress bars"""


RECORDED = ("epochs", "lr", "batch_size", "hidden")


def keys_in_split(split_dir: Path, keys: np.ndarray) -> np.ndarray:
    """Mask of ``keys`` present in a prepared split's ``shard-*.hashes`` (streamed: memory holds one block)."""
    import numpy as np

    found = np.zeros(len(keys), dtype=bool)
    index_path = split_dir / "index.json"
    if not len(keys) or not index_path.is_file():
        return found
    index = json.loads(index_path.read_text())
    uniq, inverse = np.unique(np.asarray(keys, dtype=np.uint64), return_inverse=True)
    hit_u = np.zeros(len(uniq), dtype=bool)
    for shard in index["shards"]:
        hashes = np.memmap(split_dir / f"{shard['name']}.hashes", dtype=index.get("hashes_dtype", "<u8"), mode="r")
        for a in range(0, len(hashes), 1 << 22):
            block = np.asarray(hashes[a : a + (1 << 22)], dtype=np.uint64)
            pos = np.minimum(np.searchsorted(uniq, block), len(uniq) - 1)
            hit_u[pos[uniq[pos] == block]] = True
    return hit_u[inverse.reshape(-1)]


class HeldOutFilter:
    """Which OAS rows lie outside the training split of a prepared corpus (see the module docstring)."""

    def __init__(self, corpus: str | Path, found_by: str):
        from helm.tokenizers import load_tokenizer

        self.path = Path(corpus)
        try:
            summary = json.loads((self.path / SUMMARY_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"{self.path}: not a prepared corpus (summary.json unreadable: {exc})") from exc
        if not summary.get("complete"):
            raise InputError(f"{self.path}: prepared corpus is not complete (summary.json)")
        s = summary["settings"]
        self.seed, self.val_fraction, self.test_fraction = int(s["seed"]), s["val_fraction"], s["test_fraction"]
        self.explicit = bool(s.get("explicit_splits"))
        tok = load_tokenizer(self.path)
        self.tokenizer = tok.name
        kmer = (tok.k, tok.stride) if hasattr(tok, "stride") else None
        # the trailing arguments of helm.prepare.process_chunk, as `helm prepare` used them for this corpus
        self.chunk_args = (s.get("orf", "none"), int(s.get("min_length", 3)), kmer, s.get("alphabet", "nuc"),
                           s.get("internal_stops", "keep"))  # corpora prepared before the policy kept them  # fmt: skip
        self.found_by = found_by

    def in_train(self, rows: list[OasRow]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per row: (key as prepare computes it, 0 if prepare would reject the row; in the training split by
        prepare's rule or found in train/*.hashes; found in train/*.hashes)."""
        import numpy as np

        from helm.prepare import process_chunk
        from helm.splits import split_of

        processed = process_chunk("oas", rows, *self.chunk_args)  # (seqs, reasons, keys, ...)
        reasons, key_list = processed[1], processed[2]
        keys = np.array(key_list, dtype=np.uint64)
        kept = np.array([r is None for r in reasons], dtype=bool)  # a row prepare rejects is in no split
        in_shards = kept & keys_in_split(self.path / "train", keys)
        by_rule = np.zeros(len(rows), dtype=bool)
        if not self.explicit:
            by_rule = kept & (split_of(keys, self.seed, self.val_fraction, self.test_fraction) == 0)
        return keys, by_rule | in_shards, in_shards

    def where(self, keys: np.ndarray) -> dict[str, int]:
        """How many of ``keys`` lie in the corpus's train (0 for held-out rows), val and test shards, and how many
        in none of its splits (a data file that was not among the corpus's inputs)."""
        import numpy as np

        out = {}
        rest = np.ones(len(keys), dtype=bool)
        for split in SPLITS:
            hit = keys_in_split(self.path / split, keys) & rest
            out[split] = int(hit.sum())
            rest &= ~hit
        out["outside_corpus"] = int(rest.sum())
        return out

    def describe(self) -> dict[str, Any]:
        rule = "key not in train/*.hashes (explicit split files)" if self.explicit else (
            "helm.splits.split_of(key, seed, val_fraction, test_fraction) != train and key not in train/*.hashes"
        )  # fmt: skip
        return {
            "corpus": str(self.path),
            "found_by": self.found_by,
            "splits": ["val", "test"],
            "rule": rule,
            "key": "helm.prepare.process_chunk('oas', ...) under the corpus settings (blake2b-64 of the in-frame CDS)",
            "seed": self.seed,
            "val_fraction": self.val_fraction,
            "test_fraction": self.test_fraction,
            "explicit_splits": self.explicit,
            "tokenizer": self.tokenizer,
        }


@dataclass
class OasRegionRows:
    """The OAS rows annotate uses: CDS, per-codon labels, 1-based file lines and what was skipped, by why."""

    cds: list[str] = field(default_factory=list)
    labels: list[list[str]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    keys: list[int] = field(default_factory=list)  # as the corpus keys them (for HeldOutFilter.where)
    rows_scanned: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    in_pretraining_train: int = 0
    in_train_shards: int = 0
    duplicate: int = 0


def read_oas_regions(path: str | Path, num_rows: int, heldout: HeldOutFilter | None = None) -> OasRegionRows:
    """The first ``num_rows`` usable rows of an OAS unit, outside ``heldout``'s training split when given.

    Rows are read with the parser ``helm prepare`` uses (``helm.io``), so ``lines`` match its rejects.tsv."""
    import numpy as np

    from helm.io import _csv_values, oas_cds_batch, oas_codon_regions
    from helm.splits import sequence_key

    path = Path(path)
    out = OasRegionRows()
    seen: set[int] = set()
    chunk: list[tuple[int, dict[str, str]]] = []

    def take() -> bool:
        """Handle ``chunk``; True once ``num_rows`` rows are kept."""
        oas = [OasRow(*(row[c] for c in OAS_FIELDS)) for _, row in chunk]
        cds_info = oas_cds_batch(oas)
        corpus_keys = np.zeros(len(chunk), dtype=np.uint64)
        skip = in_shards = np.zeros(len(chunk), dtype=bool)
        if heldout is not None:
            corpus_keys, skip, in_shards = heldout.in_train(oas)
        for j, (line, row) in enumerate(chunk):
            out.rows_scanned += 1
            if cds_info[j][1] is not None:
                out.rejected[cds_info[j][1]] = out.rejected.get(cds_info[j][1], 0) + 1
                continue
            if skip[j]:
                out.in_pretraining_train += 1
                out.in_train_shards += int(in_shards[j])
                continue
            try:
                cds, lab = oas_codon_regions(row)
            except ValueError:  # an unreadable v_sequence_start / region coordinate
                out.rejected["bad_region_coordinates"] = out.rejected.get("bad_region_coordinates", 0) + 1
                continue
            key = sequence_key(cds)
            if key in seen:
                out.duplicate += 1
                continue
            seen.add(key)
            out.cds.append(cds)
            out.labels.append(lab)
            out.lines.append(line)
            out.keys.append(int(corpus_keys[j]))
            if len(out.cds) == num_rows:
                return True
        return False

    checked = False
    # ~10% of rows are held out: one chunk usually holds enough, so the train hashes are read once
    chunk_rows = min(65536, max(CHUNK_ROWS, 12 * num_rows))
    for line, values, header in _csv_values(path, skip_metadata=True):
        if not checked:
            missing = [c for c in (*OAS_FIELDS, "v_sequence_start") if c not in header]
            if missing:
                raise InputError(f"{path}: OAS unit lacks column(s) {', '.join(missing)}")
            checked = True
        chunk.append((line, dict(zip(header, values))))
        if len(chunk) == chunk_rows:
            if take():
                return out
            chunk = []
    if chunk:
        take()
    return out


def resolve_corpus(arg: str | None, run) -> HeldOutFilter | None:
    """``--corpus DIR``, else the corpus the run was trained on (config.yaml ``derived.prepared_data``);
    ``--corpus none`` = no filter. A missing corpus is an error, not a silent fallback to overlapping rows."""
    if arg is not None and arg.lower() == "none":
        return None
    hint = "pass --corpus PREPARED_DIR (the directory `helm prepare` wrote for the run), or --corpus none to use "
    hint += "rows the backbone may have seen in pretraining"
    if arg is not None:
        corpus, found_by = Path(arg), "--corpus"
    else:
        recorded = (run.config.get("derived") or {}).get("prepared_data")
        if not recorded:
            raise InputError(f"{run.path}: config.yaml records no pretraining corpus (derived.prepared_data); {hint}")
        corpus, found_by = Path(recorded), "run config.yaml derived.prepared_data"
        if not (corpus / SUMMARY_FILE).is_file():
            raise InputError(f"{run.path}: the run's corpus {corpus} (derived.prepared_data) is not there; {hint}")
    heldout = HeldOutFilter(corpus, found_by)
    if heldout.tokenizer != run.tokenizer.name:
        raise InputError(
            f"{corpus}: prepared with the {heldout.tokenizer} tokenizer but the run uses {run.tokenizer.name}: "
            "not the run's pretraining corpus"
        )
    return heldout


def token_labels(labels: list[list[str]], tokenizer, width: int, mode: str) -> torch.Tensor:
    """[N, width] class ids aligned with the framed tokens (``<cls>`` first); -100 on specials, pads, cut tail."""
    import numpy as np
    import torch

    name = getattr(tokenizer, "name", "")
    if name == "3mer":
        repeat = 1
    elif name == "nuc":
        repeat = 3
    else:
        raise InputError(f"region annotation needs a codon (3mer) or nuc run, not a {name!r} tokenizer")
    index = {c: i for i, c in enumerate(CLASSES)}
    out = torch.full((len(labels), width), IGNORE_INDEX, dtype=torch.long)
    room = width - (2 if mode == "mlm" else 1)
    for i, lab in enumerate(labels):
        ids = np.repeat([index[x] for x in lab], repeat)[:room]
        out[i, 1 : 1 + len(ids)] = torch.as_tensor(ids)
    return out


def classification_report(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import f1_score

    present = sorted(set(y.tolist()))
    m = {
        "accuracy": float((y == pred).mean()),
        "macro_f1": float(f1_score(y, pred, labels=present, average="macro", zero_division=0)),
    }
    for c in present:
        m[f"acc_{CLASSES[c]}"] = float((pred[y == c] == c).mean())
    return m


def heldout_rows(args: AnnotateSettings, run) -> tuple[Path, HeldOutFilter | None, OasRegionRows]:
    """The OAS file, the held-out filter (None: ``--corpus none``) and the rows read (at least 10)."""
    from helm.fetch import locate_file

    heldout = resolve_corpus(args.corpus, run)
    if heldout is None:
        print(
            "helm annotate: warning: --corpus none: rows are not checked against the pretraining corpus, "
            "the backbone may have seen them (heldout_source: none)",
            file=sys.stderr,
        )
    path = args.data or locate_file(DEFAULT_FILE, sha256=DEFAULT_SHA256, mirror=args.mirror)
    oas = read_oas_regions(path, args.num_rows, heldout)
    if len(oas.cds) < 10:
        raise InputError(
            f"{path}: only {len(oas.cds)} usable held-out OAS rows of {oas.rows_scanned} "
            f"(rejected: {oas.rejected}, in the pretraining training split: {oas.in_pretraining_train})"
        )
    if len(oas.cds) < args.num_rows:
        print(f"helm annotate: warning: {path}: only {len(oas.cds)} of --num-rows {args.num_rows} held-out rows",
              file=sys.stderr)  # fmt: skip
    return path, heldout, oas


def train_token_head(args: AnnotateSettings, feats: torch.Tensor, y: torch.Tensor,
                     parts: dict[str, np.ndarray]) -> tuple[dict[str, dict[str, float]], int]:  # fmt: skip
    """The per-token classifier, trained by the probes' head trainer (cross entropy, epoch chosen on validation
    macro F1, no lr schedule): ({"val": report, "test": report}, best epoch)."""
    import torch
    from torch import nn

    from helm.downstream.harness import FitConfig, train_head
    from helm.downstream.heads import TokenHead

    head = TokenHead(feats.shape[-1], len(CLASSES), hidden=args.hidden)
    loss_fn = nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX)
    train_rows = torch.as_tensor(parts["train"])

    def predict(rows) -> tuple[np.ndarray, np.ndarray]:
        head.eval()
        with torch.no_grad():
            logits = head(feats[rows].float())
        keep = y[rows] != IGNORE_INDEX
        return y[rows][keep].numpy(), logits.argmax(-1)[keep].numpy()

    def loss(positions: torch.Tensor) -> torch.Tensor:
        rows = train_rows[positions]
        return loss_fn(head(feats[rows].float()).flatten(0, 1), y[rows].flatten())

    def validate() -> float:
        return classification_report(*predict(torch.as_tensor(parts["val"])))["macro_f1"]

    cfg = FitConfig(epochs=args.epochs, patience=args.patience, batch_size=args.batch_size, lr=args.lr,
                    plateau_patience=None, seed=args.seed)  # fmt: skip
    best_epoch = train_head(head, [{"params": list(head.parameters()), "lr": args.lr}], len(train_rows), loss,
                            validate, cfg)[0]  # fmt: skip
    return {p: classification_report(*predict(torch.as_tensor(parts[p]))) for p in ("val", "test")}, best_epoch


def annotate(args: AnnotateSettings) -> EvalRecord:
    import numpy as np
    import torch

    from helm.downstream.embed import check_compatible, embed_tokens, encode, run_mode
    from helm.run import load_run

    t0 = time.time()
    torch.manual_seed(args.seed)
    run = load_run(args.run)
    check_compatible(run.model, run.tokenizer, where=str(args.run))
    path, heldout, oas = heldout_rows(args, run)
    cds, labels = oas.cds, oas.labels
    mode = run_mode(run.config)
    enc = encode(run.tokenizer, cds, int(run.model.config.max_seq_len), mode=mode, where=str(path))
    y = token_labels(labels, run.tokenizer, enc.ids.shape[1], mode)
    feats = embed_tokens(run.model, enc, 64, progress=not args.quiet)
    order = np.random.default_rng(args.seed).permutation(len(cds))
    n_val = n_test = max(1, len(cds) // 10)
    parts = {"test": order[:n_test], "val": order[n_test : n_test + n_val], "train": order[n_test + n_val :]}
    reports, best_epoch = train_token_head(args, feats, y, parts)
    val, test = reports["val"], reports["test"]
    metrics = {**test, "val_macro_f1": val["macro_f1"], "val_accuracy": val["accuracy"], "n_rows": len(cds),
               "n_truncated": enc.n_truncated}  # fmt: skip
    found = heldout is not None
    provenance = {
        "kind": "annotate", "run_dir": str(args.run), "data": str(path),
        "heldout_source": heldout.describe() if found else "none", "rows_scanned": oas.rows_scanned,
        "rows_in_pretraining_train": oas.in_pretraining_train if found else None,
        "rows_in_train_shards": oas.in_train_shards if found else None, "rows_duplicate": oas.duplicate,
        "rows_rejected": oas.rejected,
        "rows_by_corpus_split": heldout.where(np.array(oas.keys, dtype=np.uint64)) if found else None,
        "rows_used": {k: sorted(int(oas.lines[i]) for i in v) for k, v in parts.items()},
        "codons_per_region": {c: sum(lab.count(c) for lab in labels) for c in CLASSES}, "classes": list(CLASSES),
        "split_rows": {k: len(v) for k, v in parts.items()}, "best_epoch": best_epoch,
        "seconds": round(time.time() - t0, 2),
    }  # fmt: skip
    return EvalRecord(run.run_id, "region_annotation", args.seed, metrics, recorded(args, RECORDED), provenance)


def build_parser() -> HelmParser:
    return settings_parser("helm annotate", __doc__.splitlines()[0], AnnotateSettings, ("run", "out"))


def summary(p: dict[str, Any]) -> str:
    return (
        f"{p['run']}: region annotation accuracy {p['metrics']['accuracy']:.3f}, "
        f"macro F1 {p['metrics']['macro_f1']:.3f}"
    )


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), annotate, argv, summary)


if __name__ == "__main__":
    sys.exit(main())
