"""`helm prepare`: counts add up, splits/dedup are order-independent, crash safety, fan-out + merge, CLI errors."""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from helm.codons import translate
from helm.io import DataError, oas_cds, read_records
from helm.prepare import SeenKeys, has_internal_stop, merge, prepare
from helm.shards import TokenShards
from helm.splits import SPLITS, sequence_key, split_of
from helm.tokenizers import create_tokenizer, load_tokenizer

OAS = "pretrain/oas_parameswaran2013_heavy_100k.csv.gz"
REPO = Path(__file__).resolve().parents[1]


def oas_subset(shared_data: Path, path: Path, n: int, skip: int = 0, shuffle_seed: int | None = None) -> Path:
    """The header + n real rows of the 100k OAS file, written gzip-compressed."""
    with gzip.open(shared_data / OAS, "rt") as fh:
        header = next(fh)
        rows = [line for i, line in zip(range(skip + n), fh) if i >= skip]
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(rows)
    path.write_bytes(gzip.compress((header + "".join(rows)).encode()))
    return path


def decoded(out: Path, split: str) -> list[str]:
    tok = load_tokenizer(out)
    shards = TokenShards(out / split)
    return [tok.decode(shards[i]) for i in range(len(shards))]


def tree_bytes(root: Path, skip=("summary.json",)) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in skip
    }


def test_real_oas_counts_and_content(shared_data, tmp_path):
    src = oas_subset(shared_data, tmp_path / "oas.csv.gz", 600)
    summary = prepare([src], tmp_path / "out", progress=False, max_seq_len=100)
    out = tmp_path / "out"
    assert summary["rows_read"] == 600 == summary["kept_total"] + summary["rejected_total"]
    assert summary["kept_total"] == sum(summary["kept"].values())
    with open(out / "rejects.tsv") as fh:
        rejects = list(csv.DictReader(fh, delimiter="\t"))
    assert len(rejects) == summary["rejected_total"]
    assert {r["reason"] for r in rejects} <= {"duplicate", "oas_no_matching_frame"}
    # independent check of the content: every kept sequence translates to an amino-acid string IgBLAST reported
    with gzip.open(src, "rt") as fh:
        proteins = {row["sequence_alignment_aa"].replace("-", "") for row in csv.DictReader(fh)}
    stored = [s for split in SPLITS for s in decoded(out, split)]
    assert len(stored) == len(set(stored)) == summary["kept_total"]
    prefixes = {p[:-1] for p in proteins} | proteins
    assert all(translate(s) in prefixes for s in stored)
    lengths = np.concatenate([TokenShards(out / s).lengths() for s in SPLITS])
    assert (
        summary["longer_than_max_seq_len"] == {s: int((TokenShards(out / s).lengths() > 98).sum()) for s in SPLITS}
        and lengths.max() > 98
    )
    # the 5 % / 5 % split is roughly honoured
    assert 0.02 < summary["kept"]["val"] / summary["kept_total"] < 0.09


def test_export_txt_is_the_codonized_corpus_train_reads_back_identically(shared_data, tmp_path, monkeypatch):
    src = oas_subset(shared_data, tmp_path / "oas.csv.gz", 400)
    codonized = tmp_path / "exports" / "sequences_codonized.txt"
    summary = prepare([src], tmp_path / "out", progress=False, export_txt=codonized)
    lines = codonized.read_text().splitlines()
    assert len(lines) == summary["kept_total"] and summary["exported"] == str(codonized)
    assert sorted(lines) == sorted(s for split in SPLITS for s in decoded(tmp_path / "out", split))
    assert all(len(s) % 3 == 0 and set(s) <= set("ACGT") for s in lines)
    # the seed's pipeline starts from this file: preparing it again gives the same shards, byte for byte
    again = prepare([codonized], tmp_path / "again", progress=False)
    assert again["kept"] == summary["kept"] and again["rejected_total"] == 0
    skip = ("summary.json", "rejects.tsv")
    assert tree_bytes(tmp_path / "again", skip) == tree_bytes(tmp_path / "out", skip)
    # an up-to-date output still writes a missing export; the export may not live inside the output
    codonized.unlink()
    prepare([src], tmp_path / "out", progress=False, export_txt=codonized)
    assert codonized.read_text().splitlines() == lines
    with pytest.raises(ValueError, match="must lie outside --output"):
        prepare([src], tmp_path / "out", progress=False, export_txt=tmp_path / "out" / "seqs.txt")
    monkeypatch.chdir(tmp_path)  # relative names too
    with pytest.raises(ValueError, match="must lie outside --output"):
        prepare([src], "out", progress=False, export_txt="out/seqs.txt")
    with pytest.raises(ValueError, match="is one of the input files"):
        prepare([src], tmp_path / "out2", progress=False, export_txt=src)
    assert (tmp_path / "out" / "summary.json").is_file()


@pytest.mark.parametrize(("tokenizer", "kept"), [("3mer", ["ATGNNNAAA"]), ("nuc", ["ATGNNNAAA", "ANNNNN"])])
def test_rows_with_nothing_known_are_rejected_as_uninformative(tmp_path, tokenizer, kept):
    (tmp_path / "in.txt").write_text("NNNNNN\nATGNNNAAA\nANNNNN\nnnn\n")
    summary = prepare([tmp_path / "in.txt"], tmp_path / "out", tokenizer=tokenizer, progress=False,
                      val_fraction=0, test_fraction=0)  # fmt: skip
    assert summary["rejected"] == {"uninformative": 4 - len(kept)}
    assert len(TokenShards(tmp_path / "out" / "train")) == len(kept)
    with open(tmp_path / "out" / "rejects.tsv") as fh:
        rows = {r["row"] for r in csv.DictReader(fh, delimiter="\t")}
    assert rows == {"1", "4"} | ({"3"} if len(kept) == 1 else set())


def test_export_txt_from_the_command_line(tmp_path, capsys):
    from helm.prepare import main

    (tmp_path / "in.fasta").write_text(">a\nATGAAACCCTAA\n>b\natgaaa\nccc\n>c\nATGTAGCCC\n")
    assert main(["--input", str(tmp_path / "in.fasta"), "-o", str(tmp_path / "out"), "--export-txt",
                 str(tmp_path / "codonized.txt"), "--no-progress"]) == 0  # fmt: skip
    assert "sequences written to" in capsys.readouterr().out
    # b is upper-cased and joined across lines; c has an in-frame stop before its end (rejected, in rejects.tsv)
    assert (tmp_path / "codonized.txt").read_text() == "ATGAAACCCTAA\nATGAAACCC\n"
    assert "internal_stop" in (tmp_path / "out" / "rejects.tsv").read_text()


def test_aa_tokenizer_stores_the_translated_oas_cds(shared_data, tmp_path):
    """With the aa tokenizer an OAS row gives the protein of its in-frame CDS: exactly the translations of what
    the codon tokenizer keeps, deduplicated on the protein (synonymous CDSs collapse into one)."""
    src = oas_subset(shared_data, tmp_path / "oas.csv.gz", 400)
    codon = prepare([src], tmp_path / "codon", progress=False)
    aa = prepare([src], tmp_path / "aa", tokenizer="aa", progress=False)
    assert aa["settings"]["alphabet"] == "aa" and load_tokenizer(tmp_path / "aa").name == "aa"
    proteins = {translate(s) for split in SPLITS for s in decoded(tmp_path / "codon", split)}
    stored = [s for split in SPLITS for s in decoded(tmp_path / "aa", split)]
    assert len(stored) == len(set(stored)) == aa["kept_total"]
    assert set(stored) == proteins
    assert aa["rejected_total"] == codon["rejected_total"] + codon["kept_total"] - len(proteins)


def test_aa_inputs_and_translation(tmp_path):
    proteins = tmp_path / "p.txt"
    proteins.write_text("MKVLA-AG\nmkvlaag\nMKBZQ\n\nMSTOP*\n")
    summary = prepare([proteins], tmp_path / "p", tokenizer="aa", val_fraction=0, test_fraction=0, progress=False)
    assert decoded(tmp_path / "p", "train") == ["MKVLAAG"] and summary["kept_total"] == 1
    assert summary["rejected"] == {"duplicate": 1, "invalid_characters": 2, "empty": 1}  # MKBZQ, MSTOP* (O)
    with open(tmp_path / "p" / "rejects.tsv") as fh:
        assert [(r["row"], r["reason"]) for r in csv.DictReader(fh, delimiter="\t")] == [
            ("2", "duplicate"), ("3", "invalid_characters"), ("4", "empty"), ("5", "invalid_characters")
        ]  # fmt: skip

    rng = random.Random(0)
    cds = ["ATG" + "".join(rng.choice("ACGT") for _ in range(3 * rng.randint(5, 40))) for _ in range(50)]
    nuc = tmp_path / "cds.txt"
    nuc.write_text("\n".join(cds + ["ATGAAAG"]) + "\n")
    summary = prepare([nuc], tmp_path / "t", tokenizer="aa", translate=True, val_fraction=0, test_fraction=0,
                      progress=False)  # fmt: skip
    assert decoded(tmp_path / "t", "train") == list(dict.fromkeys(translate(s) for s in cds))
    assert summary["rejected"] == {"length_not_multiple_of_3": 1}
    long_cds = tmp_path / "long.txt"
    long_cds.write_text("\n".join(s for s in cds if len(s) >= 30) + "\n")
    with pytest.raises(DataError, match="looks_like_nucleotides: .*need --translate"):  # forgot --translate
        prepare([long_cds], tmp_path / "forgot", tokenizer="aa", progress=False)
    with pytest.raises(ValueError, match="use the aa tokenizer"):
        prepare([nuc], tmp_path / "x", translate=True, progress=False)
    with pytest.raises(ValueError, match="add --translate"):
        prepare([nuc], tmp_path / "x", tokenizer="aa", orf="longest", progress=False)


def test_split_and_dedup_are_independent_of_order(shared_data, tmp_path):
    a = oas_subset(shared_data, tmp_path / "a.csv.gz", 400)
    b = oas_subset(shared_data, tmp_path / "b.csv.gz", 400, shuffle_seed=3)
    prepare([a], tmp_path / "A", progress=False, val_fraction=0.2, test_fraction=0.2)
    prepare([b], tmp_path / "B", progress=False, val_fraction=0.2, test_fraction=0.2)
    for split in SPLITS:
        assert sorted(decoded(tmp_path / "A", split)) == sorted(decoded(tmp_path / "B", split))


def test_split_of_is_seeded_and_proportional():
    keys = np.random.default_rng(0).integers(0, 2**63, size=200_000, dtype=np.uint64)
    s = split_of(keys, 42, 0.1, 0.05)
    assert abs((s == 1).mean() - 0.1) < 0.005 and abs((s == 2).mean() - 0.05) < 0.005
    assert (split_of(keys, 42, 0.1, 0.05) == s).all() and (split_of(keys, 7, 0.1, 0.05) != s).any()


def test_seen_keys_matches_python_set():
    rng = np.random.default_rng(1)
    seen, reference = SeenKeys(), set()
    for _ in range(50):
        batch = rng.integers(0, 3000, size=int(rng.integers(0, 200))).astype(np.uint64)
        fresh = seen.add(batch)
        expected = []
        for k in batch.tolist():
            expected.append(k not in reference)
            reference.add(k)
        assert fresh.tolist() == expected
    assert len(seen) == len(reference)


def test_bad_rows_are_rejected_with_line_and_reason(tmp_path):
    src = tmp_path / "seqs.txt"
    src.write_text("ATGAAACCC\n\nATGXAA\nATGAA\naugaaaccc\nAC\nATG-AAA.GGG\nGGGCCCTTTAAA\n")
    summary = prepare([src], tmp_path / "out", progress=False, val_fraction=0, test_fraction=0)
    with open(tmp_path / "out" / "rejects.tsv") as fh:
        rejects = [(r["row"], r["reason"]) for r in csv.DictReader(fh, delimiter="\t")]
    assert rejects == [
        ("2", "empty"),
        ("3", "invalid_characters"),
        ("4", "length_not_multiple_of_3"),
        ("5", "duplicate"),
        ("6", "too_short"),
    ]
    assert summary["kept"]["train"] == 3 and summary["rejected_total"] == 5
    assert decoded(tmp_path / "out", "train") == ["ATGAAACCC", "ATGAAAGGG", "GGGCCCTTTAAA"]
    # the nucleotide tokenizer does not need whole codons
    summary = prepare([src], tmp_path / "nuc", tokenizer="nuc", progress=False, val_fraction=0, test_fraction=0)
    assert summary["rejected"] == {"empty": 1, "invalid_characters": 1, "duplicate": 1, "too_short": 1}


def test_explicit_split_files(tmp_path):
    files = {}
    for name, seqs in {
        "train": ["ATGAAA", "CCCGGG", "TTTAAA"],
        "val": ["ATGCCC", "TTTAAA"],
        "test": ["GGGGGG"],
    }.items():
        files[name] = tmp_path / f"{name}.txt"
        files[name].write_text("\n".join(seqs) + "\n")
    summary = prepare(
        [],
        tmp_path / "out",
        train_files=[files["train"]],
        val_files=[files["val"]],
        test_files=[files["test"]],
        progress=False,
    )
    assert decoded(tmp_path / "out", "train") == ["ATGAAA", "CCCGGG"]  # TTTAAA is held out in val
    assert decoded(tmp_path / "out", "val") == ["ATGCCC", "TTTAAA"]
    assert decoded(tmp_path / "out", "test") == ["GGGGGG"]
    assert summary["rejected"] == {"duplicate": 1}


def test_shards_are_bounded_and_threads_do_not_change_bytes(shared_data, tmp_path):
    src = oas_subset(shared_data, tmp_path / "oas.csv.gz", 500)
    prepare([src], tmp_path / "one", progress=False, shard_tokens=5000, chunk_rows=64)
    prepare([src], tmp_path / "two", progress=False, shard_tokens=5000, chunk_rows=64, threads=2)
    assert tree_bytes(tmp_path / "one") == tree_bytes(tmp_path / "two")
    index = json.loads((tmp_path / "one" / "train" / "index.json").read_text())
    assert len(index["shards"]) > 3
    assert all(s["tokens"] <= 5000 for s in index["shards"])
    # a shard closes only when the next sequence would not fit
    lengths = TokenShards(tmp_path / "one" / "train").lengths()
    starts = np.cumsum([0] + [s["sequences"] for s in index["shards"]])
    for shard, nxt in zip(index["shards"][:-1], starts[1:-1]):
        assert shard["tokens"] + lengths[nxt] > 5000
    # one big shard holds the same sequences in the same order
    prepare([src], tmp_path / "big", progress=False)
    assert decoded(tmp_path / "big", "train") == decoded(tmp_path / "one", "train")


def test_fanout_and_merge_equals_single_run(shared_data, tmp_path):
    a = oas_subset(shared_data, tmp_path / "u1.csv.gz", 300)
    b = oas_subset(shared_data, tmp_path / "u2.csv.gz", 300, skip=200)  # 100 rows shared with u1
    prepare([a, b], tmp_path / "single", progress=False, shard_tokens=8000)
    prepare([a], tmp_path / "parts" / "u1", progress=False)
    prepare([b], tmp_path / "parts" / "u2", progress=False)
    summary = merge([tmp_path / "parts" / "u2", tmp_path / "parts" / "u1"], tmp_path / "merged", shard_tokens=8000)
    single = json.loads((tmp_path / "single" / "summary.json").read_text())
    assert summary["kept"] == single["kept"] and summary["rejected"] == single["rejected"]
    assert summary["rejected"]["duplicate"] >= 100
    for split in SPLITS:
        assert (tmp_path / "merged" / split / "index.json").read_bytes() == (
            tmp_path / "single" / split / "index.json"
        ).read_bytes()
        for f in (tmp_path / "single" / split).glob("shard-*.tokens"):
            assert f.read_bytes() == (tmp_path / "merged" / split / f.name).read_bytes()
    with open(tmp_path / "merged" / "rejects.tsv") as fh:
        assert sum(1 for _ in fh) - 1 == summary["rejected_total"]
    # parts with another tokenizer cannot be merged
    prepare([a], tmp_path / "parts" / "nuc", tokenizer="nuc", progress=False)
    with pytest.raises(DataError, match="tokenizer differs"):
        merge([tmp_path / "parts" / "u1", tmp_path / "parts" / "nuc"], tmp_path / "bad")


def trimmed_reference(src: Path, k: int, stride: int, seed: int = 42) -> tuple[dict, dict, set]:
    """Brute force over the OAS rows of ``src``: per split, the kept sequences (the in-frame CDS cut to whole
    k-mer windows, first occurrence of each) in input order, and how many of them lost a tail; and which."""
    kept: dict[str, list[str]] = {s: [] for s in SPLITS}
    trimmed = dict.fromkeys(SPLITS, 0)
    seen, cut = set(), set()
    for _, row in read_records(src, "oas"):
        cds, reason, _ = oas_cds(row)
        if reason or len(cds) < k:
            continue
        used = k + (len(cds) - k) // stride * stride
        seq = cds[:used]
        if seq in seen:
            continue
        seen.add(seq)
        key = int.from_bytes(hashlib.blake2b(seq.encode(), digest_size=8).digest(), "little")
        split = SPLITS[int(split_of(np.array([key], dtype=np.uint64), seed, 0.05, 0.05)[0])]
        kept[split].append(seq)
        trimmed[split] += used < len(cds)
        if used < len(cds):
            cut.add(seq)
    return kept, trimmed, cut


@pytest.mark.parametrize("tokenizer,overlap", [("6mer", 0), ("3mer", 1)])
def test_kmer_tails_are_trimmed_not_rejected(shared_data, tmp_path, tokenizer, overlap):
    """Issue 13.2: a k-mer tokenizer whose windows do not tile the CDS keeps the row with its partial window cut
    off (about half the real OAS rows), stores exactly the tokenizer's encoding of the trimmed sequence, keys it on
    the trimmed sequence and counts it as tail_trimmed; the old code rejected these rows."""
    src = oas_subset(shared_data, tmp_path / "oas.csv.gz", 500)
    out = tmp_path / tokenizer
    summary = prepare([src], out, tokenizer=tokenizer, overlap=overlap, progress=False)
    codon = prepare([src], tmp_path / "codon", progress=False)
    tok = load_tokenizer(out)
    k, stride = tok.k, tok.stride
    kept, trimmed, cut = trimmed_reference(src, k, stride)
    assert summary["kept"] == {s: len(kept[s]) for s in SPLITS}
    assert summary["tail_trimmed"] == trimmed and summary["tail_trimmed_total"] == sum(trimmed.values())
    assert summary["tail_trimmed_total"] > 0.3 * summary["kept_total"]  # real OAS: about half the rows
    assert set(summary["rejected"]) <= {"duplicate", "oas_no_matching_frame"}
    assert summary["kept_total"] >= 0.99 * codon["kept_total"]
    for split in SPLITS:
        shards = TokenShards(out / split)
        assert len(shards) == len(kept[split])
        for i, seq in enumerate(kept[split]):
            assert shards[i].tolist() == tok.encode(seq).tolist()
        keys = np.concatenate([b[3] for b in shards.blocks()]) if len(shards) else np.zeros(0, np.uint64)
        assert keys.tolist() == [sequence_key(s) for s in kept[split]]
    # the trimmed keys file holds exactly the kept sequences that lost a tail
    trimmed_keys = np.fromfile(out / "tail_trimmed.hashes", dtype="<u8")
    assert trimmed_keys.tolist() == sorted(sequence_key(s) for s in cut)
    # a row that differs from a kept one only in the dropped tail gives the same tokens: a duplicate
    rows = tmp_path / "rows.txt"
    seq = kept["train"][0]
    rows.write_text(f"{seq}\n{seq}{'ACGTA'[: stride - 1]}\n{seq[:-1]}\n")
    small = prepare([rows], tmp_path / "small", tokenizer=tokenizer, overlap=overlap, progress=False,
                    val_fraction=0, test_fraction=0)  # fmt: skip
    assert small["kept_total"] == 2 and small["rejected"] == {"duplicate": 1}
    assert small["tail_trimmed"] == {"train": 1, "val": 0, "test": 0}


def test_codon_tokenizer_still_rejects_partial_codons_and_short_rows(tmp_path):
    """Only the plain codon tokenizer rejects a length that is not whole codons; shorter than one window is
    too_short for every k-mer tokenizer."""
    src = tmp_path / "s.txt"
    src.write_text("ATGAAACCCG\nATGAA\nATGAAACCC\n")
    codon = prepare([src], tmp_path / "codon", progress=False, val_fraction=0, test_fraction=0)
    assert codon["rejected"] == {"length_not_multiple_of_3": 2} and codon["tail_trimmed_total"] == 0
    six = prepare([src], tmp_path / "six", tokenizer="6mer", progress=False, val_fraction=0, test_fraction=0)
    assert six["rejected"] == {"too_short": 1, "duplicate": 1}  # ATGAAACCCG and ATGAAACCC both give ATGAAA
    assert six["tail_trimmed"]["train"] == 1 and decoded(tmp_path / "six", "train") == ["ATGAAA"]


def test_internal_stop_matches_a_codon_walk():
    """Every ACGT sequence of 8 and 9 bases: a stop codon in frame 0 before the last whole codon."""
    import itertools

    stops = {"TAA", "TAG", "TGA"}
    for n in (8, 9):
        for bases in itertools.product("ACGT", repeat=n):
            seq = "".join(bases)
            codons = [seq[i : i + 3] for i in range(0, n - n % 3, 3)]
            assert has_internal_stop(seq) == any(c in stops for c in codons[:-1]), seq


def test_internal_stops_are_rejected_counted_or_kept(tmp_path):
    """A CDS with an in-frame stop before its end (e.g. read in the wrong frame) is not silently trained on."""
    src = tmp_path / "s.txt"
    # row 1: clean; 2: stop as the last codon (its own end); 3: in-frame internal stop; 4: TGA out of frame only
    src.write_text("ATGAAACCC\nATGAAATAA\nATGTAGCCCGGG\nATGATGACC\n")
    summary = prepare([src], tmp_path / "codon", progress=False, val_fraction=0, test_fraction=0)
    assert summary["rejected"] == {"internal_stop": 1} and summary["kept"]["train"] == 3
    with open(tmp_path / "codon" / "rejects.tsv") as fh:
        assert [(r["row"], r["reason"]) for r in csv.DictReader(fh, delimiter="\t")] == [("3", "internal_stop")]
    kept = prepare([src], tmp_path / "keep", progress=False, val_fraction=0, test_fraction=0, internal_stops="keep")
    assert kept["rejected_total"] == 0 and kept["settings"]["internal_stops"] == "keep"
    six = prepare([src], tmp_path / "six", tokenizer="6mer", progress=False, val_fraction=0, test_fraction=0)
    assert six["rejected"] == {"internal_stop": 1, "duplicate": 1}  # 6-mers read whole codons too (row 2 trimmed
    # to its first 6-mer ATGAAA is row 1's)
    nuc = prepare([src], tmp_path / "nuc", tokenizer="nuc", progress=False, val_fraction=0, test_fraction=0)
    assert nuc["rejected_total"] == 0  # one token per base: no reading frame
    res = subprocess.run([sys.executable, "-m", "helm.prepare", "--input", str(src), "--output", str(tmp_path / "cli"),
                          "--internal-stops", "keep", "--no_progress"], capture_output=True, text=True)  # fmt: skip
    assert res.returncode == 0 and "rejected 0" in res.stdout


def test_real_oas_and_jaffe_corpora_have_no_internal_stops(shared_data):
    """The real inputs are clean: OAS keeps only rows without stop codons, the Jaffe ORFs end at their first stop."""
    for row, payload in list(read_records(shared_data / OAS, "oas"))[:3000]:
        seq, reason, _ = oas_cds(payload)
        assert reason is not None or not has_internal_stop(seq), row


def test_merge_counts_trimmed_tails_like_a_single_run(shared_data, tmp_path):
    """merge adds the parts' tail_trimmed counts, less the trimmed sequences it drops as cross-part duplicates:
    the merged counts equal one run over all the inputs."""
    a = oas_subset(shared_data, tmp_path / "u1.csv.gz", 300)
    b = oas_subset(shared_data, tmp_path / "u2.csv.gz", 300, skip=200)  # 100 rows shared with u1
    c = oas_subset(shared_data, tmp_path / "u3.csv.gz", 200, skip=600)  # disjoint from both
    single = prepare([a, b], tmp_path / "single", tokenizer="6mer", progress=False)
    parts = {}
    for name, src in {"u1": a, "u2": b, "u3": c}.items():
        parts[name] = prepare([src], tmp_path / "parts" / name, tokenizer="6mer", progress=False)
    merged = merge([tmp_path / "parts" / "u2", tmp_path / "parts" / "u1"], tmp_path / "merged", progress=False)
    assert merged["kept"] == single["kept"]
    assert merged["tail_trimmed"] == single["tail_trimmed"] and merged["tail_trimmed_total"] > 0
    naive = parts["u1"]["tail_trimmed_total"] + parts["u2"]["tail_trimmed_total"]
    assert merged["tail_trimmed_total"] < naive  # the shared rows were counted by both parts
    assert (tmp_path / "merged" / "tail_trimmed.hashes").read_bytes() == (
        tmp_path / "single" / "tail_trimmed.hashes"
    ).read_bytes()
    # disjoint parts: the counts simply add up, per split
    disjoint = merge([tmp_path / "parts" / "u1", tmp_path / "parts" / "u3"], tmp_path / "disjoint", progress=False)
    assert disjoint["tail_trimmed"] == {
        s: parts["u1"]["tail_trimmed"][s] + parts["u3"]["tail_trimmed"][s] for s in SPLITS
    }


def test_learned_tokenizer_is_trained_on_train_split_only(shared_data, tmp_path):
    src = oas_subset(shared_data, tmp_path / "oas.csv.gz", 300)
    prepare(
        [src], tmp_path / "out", tokenizer="bpe", vocab_size=100, progress=False, val_fraction=0.3, test_fraction=0.3
    )
    train = decoded(tmp_path / "out", "train")
    reference = create_tokenizer("bpe", vocab_size=100)
    reference.train(train)
    assert load_tokenizer(tmp_path / "out").vocab == reference.vocab
    assert all(s in set(train) for s in train)
    assert decoded(tmp_path / "out", "val")[0] not in set(train)


def test_rerun_is_a_no_op_and_force_redoes(tmp_path):
    src = tmp_path / "s.txt"
    src.write_text("ATGAAA\nCCCGGG\n")
    first = prepare([src], tmp_path / "out", progress=False)
    stamp = (tmp_path / "out" / "summary.json").stat().st_mtime_ns
    assert prepare([src], tmp_path / "out", progress=False) == first
    assert (tmp_path / "out" / "summary.json").stat().st_mtime_ns == stamp
    prepare([src], tmp_path / "out", progress=False, force=True)
    assert (tmp_path / "out" / "summary.json").stat().st_mtime_ns != stamp
    # an output written before k-mer tails were trimmed (no tail_trimmed count) is stale: redone
    old = {k: v for k, v in first.items() if not k.startswith("tail_trimmed")}
    (tmp_path / "out" / "summary.json").write_text(json.dumps(old))
    assert prepare([src], tmp_path / "out", progress=False)["tail_trimmed_total"] == 0
    assert "tail_trimmed" in json.loads((tmp_path / "out" / "summary.json").read_text())


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "helm.cli", "prepare", "--no_progress", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )


def test_cli_errors_are_one_line_with_exit_code_2(tmp_path):
    csv_file = tmp_path / "d.csv"
    csv_file.write_text("id,Value\n1,2\n")
    empty = tmp_path / "bad.txt"
    empty.write_text("XXX\n\n")
    fake = tmp_path / "f.txt.gz"
    fake.write_text("ATG\n")
    cases = {
        (str(tmp_path / "missing.txt"),): "missing.txt: file not found",
        (str(csv_file), "--column_name", "Sequence"): "column 'Sequence' not found",
        (str(empty),): "no sequences left after filtering (2 rows read; rejected invalid_characters: 1, empty: 1)",
        (str(fake),): "named .gz but is not gzip-compressed",
    }
    for args, message in cases.items():
        proc = run_cli("--input", *args, "--output", str(tmp_path / "out"))
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0] and lines[0].startswith("helm prepare: error:")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()
    ok = tmp_path / "ok.txt"
    ok.write_text("ATGAAA\nATGAA\n")
    proc = run_cli("--input", str(ok), "--output", str(tmp_path / "out"))
    assert proc.returncode == 0 and "kept 1" in proc.stdout and "length_not_multiple_of_3: 1" in proc.stdout
    assert "tail_trimmed 0)" in proc.stdout


def test_cli_summary_line_shows_tail_trimmed(tmp_path):
    src = tmp_path / "s.txt"
    src.write_text("ATGAAACCCGGGTTT\nATGAAACCCGGG\nCCCAAAGGGTTTAAACCC\nATGAA\n")
    proc = run_cli("--input", str(src), "--output", str(tmp_path / "out"), "--tokenizer", "6mer")
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.strip()
    assert "kept 2 (" in line and "; tail_trimmed 1)" in line and "duplicate: 1" in line and "too_short: 1" in line
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["tail_trimmed_total"] == 1 and sum(summary["tail_trimmed"].values()) == 1


def test_import_is_light():
    code = "import sys, helm.prepare; print(any(m in sys.modules for m in ('torch', 'lightning', 'tokenizers')))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert proc.stdout.strip() == "False"


@pytest.mark.slow
def test_sigkill_midway_then_rerun_gives_identical_shards(shared_data, tmp_path):
    src = shared_data / OAS
    args = ["--input", str(src), "--shard_tokens", "400000", "--chunk_rows", "512"]
    reference = run_cli(*args, "--output", str(tmp_path / "ref"))
    assert reference.returncode == 0, reference.stderr
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "helm.cli", "prepare", "--no_progress", *args, "--output", str(out)], cwd=REPO
    )
    partial = tmp_path / "out.partial" / "train"
    deadline = time.time() + 60
    while time.time() < deadline and len(list(partial.glob("shard-*.tokens"))) < 3:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(list(partial.glob("shard-*.tokens"))) >= 3, "prepare finished before it could be killed"
    assert not out.exists()  # nothing a trainer could read
    rerun = run_cli(*args, "--output", str(out))
    assert rerun.returncode == 0, rerun.stderr
    assert tree_bytes(out) == tree_bytes(tmp_path / "ref")
    assert not (tmp_path / "out.partial").exists()


def test_codonbert_csv_rna_letters(shared_data, tmp_path):
    """A real CodonBERT benchmark CSV (RNA letters, `Sequence` column): U becomes T, every row is accounted for."""
    src = shared_data / "downstream" / "mRFP_Expression.csv"
    summary = prepare([src], tmp_path / "out", column="Sequence", progress=False)
    with open(src) as fh:
        raw = [row["Sequence"] for row in csv.DictReader(fh)]
    assert summary["rows_read"] == len(raw) == summary["kept_total"] + summary["rejected_total"]
    expected = {s.strip().upper().replace("U", "T") for s in raw if len(s.strip()) % 3 == 0}
    stored = {s for split in SPLITS for s in decoded(tmp_path / "out", split)}
    assert stored == expected and all("U" not in s for s in stored)


def test_jaffe_fasta_longest_orf(shared_data, tmp_path):
    """Real Jaffe contigs (first 40 records) through --orf longest: every kept CDS starts with ATG, whole codons."""
    lines, records = [], 0
    with gzip.open(shared_data / "pretrain/oas_jaffe2022_1279067_1_paired_sequences.fasta.gz", "rt") as fh:
        for line in fh:
            records += line.startswith(">")
            if records > 40:
                break
            lines.append(line)
    src = tmp_path / "jaffe.fasta.gz"
    src.write_bytes(gzip.compress("".join(lines).encode()))
    summary = prepare([src], tmp_path / "out", orf="longest", progress=False, val_fraction=0, test_fraction=0)
    assert summary["rows_read"] == 40 and summary["kept_total"] + summary["rejected"].get("duplicate", 0) == 40
    for seq in decoded(tmp_path / "out", "train"):
        assert seq.startswith("ATG") and len(seq) % 3 == 0 and len(seq) > 300
        assert "*" not in translate(seq)[:-1]


def test_cli_takes_both_flag_spellings_and_names_a_bad_value(tmp_path, capsys):
    """Every flag as ``--a_b`` and ``--a-b`` (and --data/--out for --input/--output); a bad setting is one line on
    stderr naming its flag, exit 2."""
    from helm.prepare import main

    src = tmp_path / "d.csv"
    src.write_text("id,Sequence\n1,ATGAAACCC\n2,ATGAAACCC\n3,ATGCCCGGGTTT\n4,ATG\n")
    flags = ["--column_name", "Sequence", "--val_fraction", "0.5", "--test_fraction", "0", "--min_length", "6",
             "--no_dedup", "--no_progress"]  # fmt: skip
    underscores = ["--input", str(src), "--output", str(tmp_path / "a"), *flags]
    hyphens = ["--data", str(src), "--out", str(tmp_path / "b"), *(f.replace("_", "-") for f in flags)]
    assert main(underscores) == 0 and main(hyphens) == 0
    a, b = (json.loads((tmp_path / d / "summary.json").read_text()) for d in "ab")
    assert a["settings"] == b["settings"] and a["kept_total"] == 3 and a["rejected"] == {"too_short": 1}
    assert a["settings"]["column"] == "Sequence" and a["settings"]["val_fraction"] == 0.5
    assert a["settings"]["dedup"] is False and a["settings"]["min_length"] == 6
    assert tree_bytes(tmp_path / "a") == tree_bytes(tmp_path / "b")
    capsys.readouterr()
    for flag, value in (("--val_fraction", "2"), ("--val-fraction", "2"), ("--threads", "0"), ("--tokenizer", "7mer")):
        with pytest.raises(SystemExit) as exit_:
            main(["--input", str(src), "--output", str(tmp_path / "bad"), flag, value])
        lines = capsys.readouterr().err.strip().splitlines()
        assert exit_.value.code == 2 and len(lines) == 1, lines
        assert lines[0].startswith("helm prepare: error:") and flag.replace("-", "_")[2:] in lines[0], lines[0]
    assert not (tmp_path / "bad").exists() and not (tmp_path / "bad.partial").exists()
    with pytest.raises(ValueError, match="val_fraction"):  # the library checks the same values
        prepare([src], tmp_path / "bad", val_fraction=2)


def test_is_prepared_knows_a_stale_directory(tmp_path, shared_data):
    """What ranks > 0 of a multi-process `helm train` wait for: these files under these settings, not any
    summary.json (a directory left from other files or settings is stale)."""
    from train_utils import write_oas_txt

    from helm.prepare import is_prepared

    src = write_oas_txt(shared_data, tmp_path / "a.txt", n=120)
    assert not is_prepared(tmp_path / "out", [src])
    prepare([src], tmp_path / "out", progress=False)
    assert is_prepared(tmp_path / "out", [src])
    assert not is_prepared(tmp_path / "out", [src], tokenizer="6mer")
    other = write_oas_txt(shared_data, tmp_path / "b.txt", n=60)
    assert not is_prepared(tmp_path / "out", [other])
