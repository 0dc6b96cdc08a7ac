"""`helm annotate`: antibody region annotation (FWR/CDR per codon) from frozen embeddings (DESIGN 5).

    helm annotate --run RUN_DIR --out FILE.json [--data OAS_FILE | --mirror DIR] [--num-rows 400]
        [--epochs 30] [--patience 5] [--lr 1e-3] [--batch-size 32] [--hidden 0] [--seed 0]

Rows of an OAS unit (default: pretrain/oas_parameswaran2013_heavy_100k.csv.gz, sha256-checked in the mirror)
go through ``helm.io.oas_codon_regions``: the CDS ``helm prepare`` keeps and one label per codon. In that file
FWR2, CDR2, FWR3, CDR3 and FWR4 are present in nearly every row; FWR1/CDR1 only in ~13-15% (5'-truncated 454
reads); codons outside every annotated region are labelled ``none``. Rows are split 8/1/1 (seeded), the
run's frozen per-token embeddings feed a per-token linear (or MLP, ``--hidden``) classifier trained with
cross entropy; the epoch is chosen on validation macro F1. Reported on test: accuracy, macro F1 over the
classes present in test, and per-region accuracy (the share of that region's codons labelled correctly).
Codon (3mer) runs label each codon token; nucleotide runs repeat the codon's label on its 3 bases.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from helm.downstream.embed import InputError, check_compatible, embed_tokens, encode, run_mode
from helm.downstream.heads import TokenHead
from helm.io import OAS_REGIONS

DEFAULT_FILE = "pretrain/oas_parameswaran2013_heavy_100k.csv.gz"
DEFAULT_SHA256 = "e8392df2b4a0ffe65cde3d34d645d73a8b5d9da23153ef27571e8c18245eaa2d"  # data/MANIFEST.md
CLASSES = (*OAS_REGIONS, "none")


def read_oas_regions(path, num_rows: int) -> tuple[list[str], list[list[str]], dict[str, int]]:
    """The first ``num_rows`` usable rows: (CDS, per-codon labels); rejected rows are counted by reason."""
    import pandas as pd

    from helm.io import oas_codon_regions, read_json_metadata

    skip = [0] if read_json_metadata(path) is not None else []
    cds_list, labels, rejected = [], [], {}
    reader = pd.read_csv(path, dtype=str, keep_default_na=False, skiprows=skip, chunksize=max(num_rows, 200))
    for chunk in reader:
        for row in chunk.to_dict("records"):
            try:
                cds, lab = oas_codon_regions(row)
            except (ValueError, KeyError) as exc:
                reason = str(exc).split(": ")[-1]
                rejected[reason] = rejected.get(reason, 0) + 1
                continue
            cds_list.append(cds)
            labels.append(lab)
            if len(cds_list) == num_rows:
                return cds_list, labels, rejected
    return cds_list, labels, rejected


def token_labels(labels: list[list[str]], tokenizer, width: int, mode: str) -> torch.Tensor:
    """[N, width] class ids aligned with the framed tokens (``<cls>`` first); -100 on specials, pads, cut tail."""
    name = getattr(tokenizer, "name", "")
    if name == "3mer":
        repeat = 1
    elif name == "nuc":
        repeat = 3
    else:
        raise InputError(f"region annotation needs a codon (3mer) or nuc run, not a {name!r} tokenizer")
    index = {c: i for i, c in enumerate(CLASSES)}
    out = torch.full((len(labels), width), -100, dtype=torch.long)
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


def annotate(args: argparse.Namespace) -> dict[str, Any]:
    from helm.fetch import locate_file
    from helm.run import load_run

    t0 = time.time()
    torch.manual_seed(args.seed)
    run = load_run(args.run)
    check_compatible(run.model, run.tokenizer, where=str(args.run))
    path = args.data or locate_file(DEFAULT_FILE, sha256=DEFAULT_SHA256, mirror=args.mirror)
    cds, labels, rejected = read_oas_regions(path, args.num_rows)
    if len(cds) < 10:
        raise InputError(f"{path}: only {len(cds)} usable OAS rows (rejected: {rejected})")
    mode = run_mode(run.config)
    enc = encode(run.tokenizer, cds, int(run.model.config.max_seq_len), mode=mode, where=str(path))
    y = token_labels(labels, run.tokenizer, enc.ids.shape[1], mode)
    feats = embed_tokens(run.model, enc, 64, progress=not args.quiet)
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(cds))
    n_val = n_test = max(1, len(cds) // 10)
    parts = {"test": order[:n_test], "val": order[n_test : n_test + n_val], "train": order[n_test + n_val :]}

    head = TokenHead(feats.shape[-1], len(CLASSES), hidden=args.hidden)
    opt = torch.optim.Adam(head.parameters(), lr=args.lr)
    loss_fn = nn.CrossEntropyLoss(ignore_index=-100)

    def predict(rows) -> tuple[np.ndarray, np.ndarray]:
        head.eval()
        with torch.no_grad():
            logits = head(feats[rows].float())
        keep = y[rows] != -100
        return y[rows][keep].numpy(), logits.argmax(-1)[keep].numpy()

    best, best_state, best_epoch, since = -math.inf, None, -1, 0
    gen = torch.Generator().manual_seed(args.seed)
    train_rows = torch.as_tensor(parts["train"])
    for epoch in range(args.epochs):
        head.train()
        perm = train_rows[torch.randperm(len(train_rows), generator=gen)]
        for start in range(0, len(perm), args.batch_size):
            rows = perm[start : start + args.batch_size]
            loss = loss_fn(head(feats[rows].float()).flatten(0, 1), y[rows].flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        f1 = classification_report(*predict(torch.as_tensor(parts["val"])))["macro_f1"]
        if f1 > best:
            best, best_epoch, since = f1, epoch, 0
            best_state = {k: v.clone() for k, v in head.state_dict().items()}
        else:
            since += 1
            if since >= args.patience:
                break
    head.load_state_dict(best_state)
    val = classification_report(*predict(torch.as_tensor(parts["val"])))
    test = classification_report(*predict(torch.as_tensor(parts["test"])))
    counts = {c: sum(lab.count(c) for lab in labels) for c in CLASSES}
    return {
        "run": run.run_id,
        "task": "region_annotation",
        "seed": args.seed,
        "metrics": {
            **test,
            "val_macro_f1": val["macro_f1"],
            "val_accuracy": val["accuracy"],
            "n_rows": len(cds),
            "n_truncated": enc.n_truncated,
        },
        "config": {
            "kind": "annotate",
            "run_dir": str(args.run),
            "data": str(path),
            "rows_rejected": rejected,
            "codons_per_region": counts,
            "classes": list(CLASSES),
            "split_rows": {k: len(v) for k, v in parts.items()},
            "epochs": args.epochs,
            "best_epoch": best_epoch,
            "lr": args.lr,
            "batch_size": args.batch_size,
            "hidden": args.hidden,
            "seconds": round(time.time() - t0, 2),
        },
    }


def main(argv: list[str] | None = None) -> int:
    from helm.downstream.probe import run_json_command
    from helm.fetch import FetchError

    parser = argparse.ArgumentParser(prog="helm annotate", description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--data", default=None, help="OAS unit (CSV, optionally gzipped); default: found in --mirror")
    parser.add_argument("--mirror", default=None)
    parser.add_argument("--num-rows", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=0, help="0 = linear head, else MLP width")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    return run_json_command(
        "helm annotate",
        annotate,
        args,
        lambda p: (
            f"{p['run']}: region annotation accuracy {p['metrics']['accuracy']:.3f}, "
            f"macro F1 {p['metrics']['macro_f1']:.3f}"
        ),
        (InputError, FileNotFoundError, FetchError),
    )


if __name__ == "__main__":
    sys.exit(main())
