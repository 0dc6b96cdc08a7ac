"""Region labels read from the real OAS file and aligned with the framed tokens; held-out rows only (rows in the
pretraining corpus's training split are skipped), checked against the token shards of real prepared corpora."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helm.downstream.annotate import (
    CLASSES,
    HeldOutFilter,
    classification_report,
    read_oas_regions,
    resolve_corpus,
    token_labels,
)
from helm.downstream.embed import InputError, encode
from helm.io import oas_cds, read_oas
from helm.prepare import prepare
from helm.shards import TokenShards
from helm.tokenizers import create_tokenizer

from .runs import make_run

OAS = "pretrain/oas_parameswaran2013_heavy_100k.csv.gz"


def write_head(src: Path, dst: Path, first: int, last: int) -> Path:
    """Data rows ``first..last`` (1-based, header kept) of the real OAS unit (it has no metadata line and one row per
    line: MANIFEST.md), gzipped."""
    with gzip.open(src, "rt") as fin, gzip.open(dst, "wt") as fout:
        for i, line in enumerate(fin):
            if i == 0 or first <= i <= last:
                fout.write(line)
            if i >= last:
                break
    return dst


@pytest.fixture(scope="module")
def oas_corpora(shared_data, tmp_path_factory) -> dict[str, Path]:
    """600 real OAS rows; ``c300`` = `helm prepare` of the first 300 (the run's corpus), ``c600`` = of all 600 with
    the same settings (its train shards are exactly the rows split_of puts in training)."""
    root = tmp_path_factory.mktemp("oas")
    src = shared_data / OAS
    paths = {"rows600": write_head(src, root / "rows600.csv.gz", 1, 600)}
    paths["rows300"] = write_head(src, root / "rows300.csv.gz", 1, 300)
    for name, data in (("c300", paths["rows300"]), ("c600", paths["rows600"])):
        prepare([data], root / name, progress=False)
        paths[name] = root / name
    return paths


def token_set(corpus: Path, split: str) -> set[bytes]:
    shards = TokenShards(corpus / split)
    return {np.asarray(shards[i], dtype=np.int32).tobytes() for i in range(len(shards))}


def row_tokens(path: Path, n: int) -> dict[int, bytes | None]:
    """File line -> the 3mer tokens of the row's CDS (None for a row prepare rejects), for the first ``n`` rows:
    the brute-force reference, row by row, without the dedup keys."""
    tok = create_tokenizer("3mer")
    out = {}
    for k, (line, row) in enumerate(read_oas(path)):
        if k >= n:
            break
        cds, reason, _ = oas_cds(row)
        out[line] = None if reason else tok.encode(cds).astype(np.int32).tobytes()
    return out


def test_labels_follow_tokens(shared_data):
    rows = read_oas_regions(shared_data / OAS, 20)
    cds, labels = rows.cds, rows.labels
    assert len(cds) == 20 and all(len(c) == 3 * len(lab) for c, lab in zip(cds, labels))
    assert rows.lines == list(range(2, 22))  # no filter: the first rows, numbered like rejects.tsv (header = 1)
    assert all("cdr3" in lab for lab in labels)  # CDR3 is annotated in nearly every row
    codon = create_tokenizer("3mer")
    enc = encode(codon, cds, 512, mode="mlm")
    y = token_labels(labels, codon, enc.ids.shape[1], "mlm")
    for i, lab in enumerate(labels):
        n = len(lab)
        assert y[i, 0] == -100 and y[i, n + 1 :].eq(-100).all()  # <cls>, <eos> and pads carry no label
        assert [CLASSES[c] for c in y[i, 1 : n + 1].tolist()] == lab
    nuc = create_tokenizer("nuc")
    enc = encode(nuc, cds, 2048, mode="clm")
    y = token_labels(labels, nuc, enc.ids.shape[1], "clm")
    for i, lab in enumerate(labels):
        bases = [CLASSES[c] for c in y[i, 1 : 1 + 3 * len(lab)].tolist()]
        assert bases == [r for r in lab for _ in range(3)]  # each base carries its codon's region
    with pytest.raises(InputError, match="needs a codon"):
        token_labels(labels, create_tokenizer("6mer"), 10, "mlm")


def test_heldout_rows_are_outside_the_training_split(oas_corpora):
    """Against the 300-row corpus, on 600 rows: no kept row is in its train shards, nor would be had all 600 been
    prepared (c600); the skipped count equals a brute-force count over the shards' token sequences."""
    heldout = HeldOutFilter(oas_corpora["c300"], "test")
    rows = read_oas_regions(oas_corpora["rows600"], 40, heldout)
    assert len(rows.cds) == 40 and rows.rows_scanned < 600
    ref = row_tokens(oas_corpora["rows600"], rows.rows_scanned)
    train300, train600 = token_set(oas_corpora["c300"], "train"), token_set(oas_corpora["c600"], "train")
    heldout300 = token_set(oas_corpora["c300"], "val") | token_set(oas_corpora["c300"], "test")
    used = [ref[line] for line in rows.lines]
    assert not any(t in train300 for t in used) and not any(t in train600 for t in used)
    # skipped = usable rows whose sequence the split puts in training: all of c600's train rows among those scanned
    assert rows.in_pretraining_train == sum(t is not None and t in train600 for t in ref.values())
    assert rows.in_train_shards == sum(t is not None and t in train300 for t in ref.values())
    assert 0 < rows.in_train_shards < rows.in_pretraining_train  # rows past 300 are skipped by the split rule
    rejected = sum(t is None for t in ref.values())
    assert rows.rows_scanned == rejected + rows.in_pretraining_train + rows.duplicate + 40
    assert sum(rows.rejected.values()) == rejected
    where = heldout.where(np.array(rows.keys, dtype=np.uint64))
    assert where == {
        "train": 0,
        "val": sum(t in token_set(oas_corpora["c300"], "val") for t in used),
        "test": sum(t in token_set(oas_corpora["c300"], "test") for t in used),
        "outside_corpus": sum(t not in heldout300 for t in used),
    }
    assert where["val"] + where["test"] > 0 and where["outside_corpus"] > 0
    # what the old code did: the first 40 usable rows, most of them in the training split
    first = [t for t in ref.values() if t is not None][:40]
    assert sum(t in train300 for t in first) > 30


def test_explicit_split_corpus_is_decided_by_its_train_shards(oas_corpora, tmp_path):
    """A corpus prepared from explicit split files: every row of its training file is skipped, the others kept."""
    test_file = write_head(oas_corpora["rows600"], tmp_path / "rows301_400.csv.gz", 301, 400)
    prepare(train_files=[oas_corpora["rows300"]], test_files=[test_file], output=tmp_path / "explicit", progress=False)
    heldout = HeldOutFilter(tmp_path / "explicit", "test")
    assert heldout.explicit and "explicit" in heldout.describe()["rule"]
    rows = read_oas_regions(oas_corpora["rows600"], 350, heldout)
    ref = row_tokens(oas_corpora["rows600"], 600)
    train = token_set(tmp_path / "explicit", "train")
    assert rows.rows_scanned == 600 and len(rows.cds) < 350  # fewer held-out rows than asked: all were scanned
    assert rows.in_pretraining_train == rows.in_train_shards == sum(t is not None and t in train for t in ref.values())
    assert all(line > 300 for line in rows.lines) and not any(ref[line] in train for line in rows.lines)


def test_corpus_comes_from_the_run_or_the_flag(oas_corpora, tmp_path):
    from helm.run import load_run, read_config, write_config

    run_dir = make_run(tmp_path, "tiny", "mlm")
    run = load_run(run_dir)
    with pytest.raises(InputError, match="--corpus"):  # no recorded corpus: an error, not overlapping rows
        resolve_corpus(None, run)
    assert resolve_corpus("none", run) is None
    assert resolve_corpus(str(oas_corpora["c300"]), run).found_by == "--corpus"
    write_config(run_dir, {**read_config(run_dir), "derived": {"prepared_data": str(oas_corpora["c300"])}})
    found = resolve_corpus(None, load_run(run_dir))
    assert found.path == oas_corpora["c300"] and "derived.prepared_data" in found.found_by
    write_config(run_dir, {**read_config(run_dir), "derived": {"prepared_data": str(tmp_path / "gone")}})
    with pytest.raises(InputError, match="is not there"):
        resolve_corpus(None, load_run(run_dir))
    prepare([oas_corpora["rows300"]], tmp_path / "nuc", tokenizer="nuc", progress=False)
    with pytest.raises(InputError, match="not the run's pretraining corpus"):
        resolve_corpus(str(tmp_path / "nuc"), run)


def helm(*args):
    return subprocess.run(
        [sys.executable, "-m", "helm.cli", *map(str, args)], capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
def test_cli_records_the_heldout_source(oas_corpora, tmp_path):
    """`helm annotate` as the workflow calls it (a subprocess): the JSON says which corpus and rows were used and
    what was skipped."""
    run = make_run(tmp_path, "tiny-mlm", "mlm")
    out = tmp_path / "a.json"
    common = ["--run", run, "--data", oas_corpora["rows600"], "--num-rows", 40, "--epochs", 1, "--quiet"]
    res = helm("annotate", *common, "--corpus", oas_corpora["c300"], "--out", out)
    assert res.returncode == 0, res.stderr
    cfg = json.loads(out.read_text())["config"]
    src = cfg["heldout_source"]
    assert src["corpus"] == str(oas_corpora["c300"]) and src["splits"] == ["val", "test"]
    assert (src["seed"], src["val_fraction"], src["test_fraction"], src["tokenizer"]) == (42, 0.05, 0.05, "3mer")
    lines = sorted(line for part in cfg["rows_used"].values() for line in part)
    assert len(lines) == len(set(lines)) == 40 and cfg["split_rows"] == {"test": 4, "val": 4, "train": 32}
    ref = row_tokens(oas_corpora["rows600"], cfg["rows_scanned"])
    train600 = token_set(oas_corpora["c600"], "train")
    assert not any(ref[line] in train600 for line in lines)
    assert cfg["rows_in_pretraining_train"] == sum(t is not None and t in train600 for t in ref.values())
    assert cfg["rows_by_corpus_split"]["train"] == 0


def test_without_corpus_warns_or_refuses(oas_corpora, tmp_path, capsys):
    """In process (`main`, as the CLI): --corpus none warns and records heldout_source none; a run that records no
    corpus and no flag is a one-line error and no JSON."""
    from helm.downstream.annotate import main

    run = make_run(tmp_path, "tiny-mlm", "mlm")
    common = ["--run", run, "--data", oas_corpora["rows600"], "--num-rows", 20, "--epochs", 1, "--quiet"]
    out = tmp_path / "a.json"
    assert main([*map(str, common), "--corpus", "none", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "may have seen" in err
    cfg = json.loads(out.read_text())["config"]
    assert cfg["heldout_source"] == "none" and cfg["rows_in_pretraining_train"] is None
    assert sorted(line for part in cfg["rows_used"].values() for line in part) == list(range(2, 22))
    with pytest.raises(SystemExit) as exc:
        main([*map(str, common), "--out", str(tmp_path / "b.json")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("helm annotate: error:") and "--corpus" in err[0]
    assert not (tmp_path / "b.json").exists()


def test_classification_report_per_region():
    y = np.array([0, 0, 1, 1, 1, 5])
    pred = np.array([0, 1, 1, 1, 0, 5])
    m = classification_report(y, pred)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["acc_fwr1"] == 0.5 and m["acc_cdr1"] == pytest.approx(2 / 3) and m["acc_cdr3"] == 1.0
    # macro F1 over the three classes present: F1(0)=0.5, F1(1)=2/3, F1(5)=1
    assert m["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 1) / 3)
