"""Readers and cleaning: hand-written edge cases and the real OAS / Jaffe files."""

from __future__ import annotations

import bz2
import csv
import gzip
import json
import re

import pytest

from helm.codons import STOP_CODONS, translate
from helm.io import (
    DataError,
    OasRow,
    clean_protein,
    clean_sequence,
    detect_format,
    longest_orf,
    oas_cds,
    oas_codon_regions,
    read_json_metadata,
    read_records,
    read_table,
    uninformative,
)

OAS = "pretrain/oas_parameswaran2013_heavy_100k.csv.gz"
JAFFE = "pretrain/oas_jaffe2022_1279067_1_paired_sequences.fasta.gz"


def test_clean_sequence():
    assert clean_sequence("  acgu-ac.g \n") == ("ACGTACG", None)
    assert clean_sequence("   ") == ("", "empty")
    assert clean_sequence("--..") == ("", "empty")
    assert clean_sequence("ACGTX")[1] == "invalid_characters"
    assert clean_sequence("ACG TAA")[1] == "invalid_characters"  # inner blanks are not gaps
    assert clean_sequence("NNNACG") == ("NNNACG", None)


def test_clean_protein():
    assert clean_protein("  mkv-la.g*\n") == ("MKVLAG*", None)
    assert clean_protein("--") == ("", "empty")
    assert clean_protein("MKXV") == ("MKXV", None)
    for bad in ("MKBV", "MKZV", "MKUV", "MK V", "MK1"):
        assert clean_protein(bad)[1] == "invalid_characters", bad


def test_txt_rows_keep_line_numbers(tmp_path):
    path = tmp_path / "seqs.txt"
    path.write_text("ATG\n\nCCC\r\nGGG")
    assert list(read_records(path)) == [(1, "ATG"), (2, ""), (3, "CCC"), (4, "GGG")]


def test_fasta_multiline_and_gzip(tmp_path):
    text = ">a desc\nATG\nCCC\n>b\nGG\n\nTT\n"
    path = tmp_path / "x.fa.gz"
    path.write_bytes(gzip.compress(text.encode()))
    assert detect_format(path) == "fasta"
    assert list(read_records(path)) == [(1, "ATGCCC"), (4, "GGTT")]
    bad = tmp_path / "bad.fasta"
    bad.write_text("ATG\n>a\nCCC\n")
    with pytest.raises(DataError, match=r"bad\.fasta, line 1: not FASTA"):
        list(read_records(bad))


def test_csv_column(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("id,Seq,Value\n1,AUG,0.5\n2,CCC,1\n")
    assert list(read_records(path, column="Seq")) == [(2, "AUG"), (3, "CCC")]
    assert list(read_records(path)) == [(2, "AUG"), (3, "CCC")]  # a single obvious column is found
    with pytest.raises(DataError, match=r"d\.csv, line 1: column 'CDS' not found \(columns: id, Seq, Value\)"):
        list(read_records(path, column="CDS"))
    ragged = tmp_path / "r.csv"
    ragged.write_text("Sequence,Value\nAUG,1\nCCC\n")
    with pytest.raises(DataError, match=r"r\.csv, line 3: row has 1 fields"):
        list(read_records(ragged))


def test_files_as_spreadsheet_programs_write_them(tmp_path):
    rows = [("1", "AUGAAA"), ("2", "augccc")]
    expected = [(2, "AUGAAA"), (3, "augccc")]
    # Excel "CSV UTF-8": a byte-order mark, CRLF ends, blanks around a header name
    bom = tmp_path / "bom.csv"
    bom.write_bytes(("\ufeffid, Sequence \r\n" + "".join(f"{i},{s}\r\n" for i, s in rows)).encode("utf-8"))
    assert list(read_records(bom)) == expected
    assert list(read_records(bom, column="Sequence")) == expected
    # Excel "Unicode text": UTF-16 with a mark, tab-separated
    utf16 = tmp_path / "u16.tsv"
    utf16.write_bytes(("id\tsequence\r\n" + "".join(f"{i}\t{s}\r\n" for i, s in rows)).encode("utf-16"))
    assert list(read_records(utf16)) == expected
    # a locale whose decimal mark is a comma: semicolon-separated; old Mac line ends (a lone CR)
    semi = tmp_path / "semi.csv"
    semi.write_bytes(("id;sequence;value\r" + "".join(f"{i};{s};0,5\r" for i, s in rows)).encode())
    assert list(read_records(semi)) == expected
    lone_cr = tmp_path / "mac.txt"
    lone_cr.write_bytes(b"ATG\rCCC\rGGG")
    assert list(read_records(lone_cr)) == [(1, "ATG"), (2, "CCC"), (3, "GGG")]
    # an OAS unit saved by a spreadsheet is still recognised as one
    oas = tmp_path / "unit.csv"
    oas.write_bytes(b"\xef\xbb\xbfsequence_alignment,sequence_alignment_aa,productive,stop_codon,vj_in_frame\r\n")
    assert detect_format(oas) == "oas"
    # any other encoding: one error naming the file and the line, with the fix
    latin = tmp_path / "latin.csv"
    latin.write_bytes("id,sequence\n1,ATG\n2,ATG café\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin\.csv, line 3: is not UTF-8 or UTF-16 text .*save it as UTF-8"):
        list(read_records(latin))


def test_read_table_decodes_like_the_streaming_readers(tmp_path):
    semi = tmp_path / "semi.csv"
    semi.write_bytes("\ufeff Sequence ;Value\r\nAUG;1\r\nCCC;2\r\n".encode())
    frame = read_table(semi)
    assert list(frame.columns) == ["Sequence", "Value"] and frame["Sequence"].tolist() == ["AUG", "CCC"]


@pytest.mark.parametrize(
    ("seq", "alphabet", "codons", "expected"),
    [("NNNNNN", "nuc", True, True), ("ANNNNN", "nuc", True, True), ("NNNATG", "nuc", True, False),
     ("ANNNNN", "nuc", False, False), ("NNNN", "nuc", False, True), ("XX*", "aa", False, True),
     ("XMX", "aa", False, False)],
)  # fmt: skip
def test_uninformative_matches_its_definition(seq, alphabet, codons, expected):
    assert uninformative(seq, alphabet, codons) is expected


def test_whole_file_errors(tmp_path):
    with pytest.raises(DataError, match=r"nope\.txt: file not found"):
        list(read_records(tmp_path / "nope.txt"))
    fake = tmp_path / "fake.txt.gz"
    fake.write_text("ATG\n")
    with pytest.raises(DataError, match="named .gz but is not gzip-compressed"):
        list(read_records(fake))
    bz = tmp_path / "seqs.txt"
    bz.write_bytes(bz2.compress(b"ATG\n"))
    with pytest.raises(DataError, match="bzip2-compressed"):
        list(read_records(bz))
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"ATG\nCC\xff\xfeG\n")
    with pytest.raises(DataError, match=r"bin\.txt, line 2: is not UTF-8"):
        list(read_records(binary))
    truncated = tmp_path / "cut.txt.gz"
    truncated.write_bytes(gzip.compress(b"ATGCCC\n" * 1000)[:-20])
    with pytest.raises(DataError, match="corrupt or truncated gzip"):
        list(read_records(truncated))


def oas_rows(shared_data, n):
    with gzip.open(shared_data / OAS, "rt") as fh:
        reader = csv.DictReader(fh)
        return [next(reader) for _ in range(n)]


def test_oas_cds_matches_igblast_translation(shared_data):
    """The kept CDS is a whole-codon piece of the alignment whose translation is IgBLAST's amino acids."""
    rows = oas_rows(shared_data, 2000)
    kept = 0
    for row in rows:
        cds, reason, frame = oas_cds(OasRow(*(row[c] for c in OasRow._fields)))
        ungapped = row["sequence_alignment"].replace("-", "")
        aa = row["sequence_alignment_aa"].replace("-", "")
        if reason:
            assert reason == "oas_no_matching_frame"
            assert all(not aa.startswith(translate(ungapped[f:])) for f in range(3)) or "N" in ungapped
            continue
        kept += 1
        assert len(cds) % 3 == 0 and ungapped[frame : frame + len(cds)] == cds
        assert len(ungapped) - frame - len(cds) < 3
        protein = translate(cds)
        assert aa.startswith(protein) and len(aa) - len(protein) <= 1
    assert kept >= 0.99 * len(rows)


def test_oas_filters_unproductive():
    row = OasRow("ATGAAA", "MK", "F", "F", "T")
    assert oas_cds(row)[1] == "oas_not_productive"
    assert oas_cds(OasRow("ATGAAA", "MK", "T", "T", "T"))[1] == "oas_stop_codon"
    assert oas_cds(OasRow("ATGAAA", "MK", "T", "F", "F"))[1] == "oas_not_in_frame"
    assert oas_cds(OasRow("CATGAAAC", "MK", "T", "F", "T"))[:2] == ("ATGAAA", None)


def test_oas_codon_regions_on_real_rows(shared_data):
    """Independent check: the codons labelled cdr3 translate to the unit's own `cdr3_aa` column."""
    checked = 0
    for row in oas_rows(shared_data, 500):
        try:
            cds, labels = oas_codon_regions(row)
        except ValueError:
            continue
        assert len(labels) == len(cds) // 3
        # regions appear in order and each is contiguous
        order = [lab for i, lab in enumerate(labels) if lab != "none" and (i == 0 or labels[i - 1] != lab)]
        assert len(order) == len(set(order))
        cdr3 = "".join(cds[3 * i : 3 * i + 3] for i, lab in enumerate(labels) if lab == "cdr3")
        if row["cdr3_start"] and (int(row["cdr3_end"]) - int(row["cdr3_start"]) + 1) % 3 == 0:
            assert translate(cdr3) == row["cdr3_aa"]
            checked += 1
        if not row["fwr1_start"]:
            assert "fwr1" not in labels
    assert checked > 400


def test_oas_codon_regions_accepts_pandas_rows(shared_data):
    """pandas parses T/F as booleans and missing coordinates as NaN; the labels must not change."""
    import pandas as pd

    frame = pd.read_csv(shared_data / OAS, nrows=200)
    for as_text, row in zip(oas_rows(shared_data, 200), frame.to_dict("records")):
        try:
            expected = oas_codon_regions(as_text)
        except ValueError:
            with pytest.raises(ValueError):
                oas_codon_regions(row)
            continue
        assert oas_codon_regions(row) == expected


def test_oas_unit_with_metadata_line(shared_data, tmp_path):
    """A real OAS data unit starts with a quoted JSON line; the reader skips it and keeps line numbers."""
    with gzip.open(shared_data / OAS, "rt") as fh:
        lines = [next(fh) for _ in range(6)]
    meta = {"Run": "SRR2150126", "Chain": "Heavy", "Species": "human"}
    unit = tmp_path / "SRR2150126_Heavy_Bulk.csv.gz"
    quoted = '"' + json.dumps(meta).replace('"', '""') + '"\n'
    unit.write_bytes(gzip.compress((quoted + "".join(lines)).encode()))
    assert detect_format(unit) == "oas"
    assert read_json_metadata(unit) == meta
    records = list(read_records(unit))
    assert [r for r, _ in records] == [3, 4, 5, 6, 7]
    assert records[0][1].sequence_alignment == next(csv.DictReader(lines))["sequence_alignment"]
    nocol = tmp_path / "unit.csv"
    nocol.write_text(quoted + "sequence_alignment,sequence_alignment_aa\nATG,M\n")
    with pytest.raises(DataError, match=r"unit\.csv, line 2: OAS unit lacks column\(s\) productive"):
        list(read_records(nocol, fmt="oas"))


def brute_longest_orf(seq: str) -> str:
    """Every ATG, scanned codon by codon to the first stop (kept) or the end; longest, earliest wins."""
    best = ""
    for start in range(len(seq) - 2):
        if seq[start : start + 3] != "ATG":
            continue
        end = start
        while end + 3 <= len(seq):
            end += 3
            if seq[end - 3 : end] in STOP_CODONS:
                break
        if end - start > len(best):
            best = seq[start:end]
    return best


def test_longest_orf_hand_cases():
    assert longest_orf("CCATGAAATAGCC") == ("ATGAAATAG", None)
    assert longest_orf("ATGTAACATGCCCCCCCCC") == ("ATGCCCCCCCCC", None)  # open ORF to the end
    assert longest_orf("CCCCCC") == ("", "no_orf")
    nested = "ATGATGAAATGA"  # the inner ATG is in the same frame: the outer start wins
    assert longest_orf(nested)[0] == nested


def test_longest_orf_on_jaffe_contigs(shared_data):
    records = list(read_records(shared_data / JAFFE))
    assert len(records) == 16874
    heavy_ok = light_ok = heavy = light = 0
    with gzip.open(shared_data / JAFFE, "rt") as fh:
        headers = [line[1:].split()[0] for line in fh if line.startswith(">")]
    for (_, raw), header in zip(records[:400], headers[:400]):
        seq, reason = clean_sequence(raw)
        assert reason is None
        orf, why = longest_orf(seq)
        assert why is None and orf == brute_longest_orf(seq)
        protein = translate(orf)
        assert protein.startswith("M") and "*" not in protein[:-1]
        # an antibody V domain: heavy chains carry the J-region WGXG motif, light chains FGXG
        if header.startswith("heavy"):
            heavy += 1
            heavy_ok += bool(re.search("WG.G", protein))
        else:
            light += 1
            light_ok += bool(re.search("FG.G", protein))
    assert heavy_ok >= 0.95 * heavy and light_ok >= 0.95 * light
