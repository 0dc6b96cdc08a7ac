"""Reading sequence files: txt, csv, FASTA and OAS data units (each optionally gzip-compressed).

Readers stream: they yield ``(row, payload)`` one record at a time and never hold a file in memory.
``row`` is the 1-based line number of the record in the (decompressed) file -- the header line of a CSV is
line 1 (line 2 for an OAS unit with its JSON metadata line), a FASTA record is numbered by its ``>`` line.
``payload`` is the raw sequence text, or for OAS units an ``OasRow``.

Whole-file problems (missing, unreadable, wrong compression, missing column, not text) raise ``DataError``
naming the file (and line). Per-row problems are *not* raised here: ``clean_sequence`` / ``oas_cds`` /
``longest_orf`` return a reason string, and ``helm.prepare`` counts and writes those rows to rejects.tsv.

Cleaning (docs/ARCHITECTURE.md, "Prepared data"): strip, upper-case, U->T, drop the gap characters '-' and '.';
what remains must be ACGTN. OAS rows: keep productive, in-frame, stop-free rows, choose the frame of
``sequence_alignment`` whose translation equals ``sequence_alignment_aa``, trim the tail to whole codons.
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

from helm.codons import AMINO_ACIDS, GENETIC_CODE, STOP_CODONS

ALLOWED = frozenset("ACGTN")
_GAPS = {"-": None, ".": None}  # alignment gaps (inner blanks are not: "ACG TAA" may be two sequences)
_CLEAN = str.maketrans({"U": "T", **_GAPS})
_KEEP_CHECK = str.maketrans("", "", "ACGTN")
_PROTEIN_CLEAN = str.maketrans(_GAPS)
_PROTEIN_KEEP_CHECK = str.maketrans("", "", AMINO_ACIDS + "*X")
FORMATS = ("auto", "txt", "csv", "fasta", "oas")
OAS_FIELDS = ("sequence_alignment", "sequence_alignment_aa", "productive", "stop_codon", "vj_in_frame")
OAS_REGIONS = ("fwr1", "cdr1", "fwr2", "cdr2", "fwr3", "cdr3", "fwr4")
_FASTA_SUFFIXES = (".fa", ".fasta", ".fna", ".ffn", ".fas")
_MAGIC = {b"BZh": "bzip2", b"\xfd7zXZ": "xz", b"\x28\xb5\x2f\xfd": "zstd", b"PK\x03\x04": "zip"}

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # long sequences in one CSV field


class DataError(ValueError):
    """A whole-file problem: names the file, the line when known, and the reason."""

    def __init__(self, path: str | Path, reason: str, row: int | None = None):
        self.path, self.reason, self.row = str(path), reason, row
        where = f"{path}" + (f", line {row}" if row is not None else "")
        super().__init__(f"{where}: {reason}")


class OasRow(NamedTuple):
    sequence_alignment: str
    sequence_alignment_aa: str
    productive: str
    stop_codon: str
    vj_in_frame: str


# ---------------------------------------------------------------------------------------------- opening


def open_bytes(path: str | Path) -> io.BufferedIOBase:
    """Open a file for reading, gunzipping when the bytes are gzip (by content, not by name)."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, "file not found")
    if path.is_dir():
        raise DataError(path, "is a directory, expected a sequence file")
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as err:
        raise DataError(path, f"cannot be read ({err.strerror or err})") from err
    if head[:2] == b"\x1f\x8b":
        return gzip.open(path, "rb")
    for magic, kind in _MAGIC.items():
        if head.startswith(magic):
            raise DataError(path, f"is {kind}-compressed; only gzip (.gz) or plain text is supported")
    if path.suffix == ".gz":
        raise DataError(path, "is named .gz but is not gzip-compressed")
    return open(path, "rb")


def _text_encoding(fh: io.BufferedIOBase) -> str:
    """``utf-8``, or ``utf-8-sig`` / ``utf-16`` when the stream starts with that byte-order mark, as spreadsheet
    programs write them (Excel's "CSV UTF-8" and "Unicode text"). Peeks: nothing is consumed."""
    head = fh.peek(3)[:3]
    if head.startswith(b"\xef\xbb\xbf"):
        return "utf-8-sig"
    return "utf-16" if head[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8"


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its end); decoding/decompression errors become DataError.
    Lines are decoded one by one so an encoding error names its own line. Line ends may be LF, CRLF or a lone CR
    (old Mac spreadsheets); a byte-order mark is dropped and UTF-16 files are decoded."""
    lineno = 0
    try:
        fh = open_bytes(path)
        with fh:
            encoding = _text_encoding(fh)
            if encoding == "utf-16":
                raw: Iterator[str] = io.TextIOWrapper(fh, encoding=encoding, newline="")
            else:
                first = [line.decode(encoding) for line in itertools.islice(fh, 1)]  # utf-8-sig drops the mark
                raw = itertools.chain(first, (line.decode("utf-8") for line in fh))
            for text in raw:
                text = text.rstrip("\r\n")
                if "\r" in text:  # a CR left inside is a line end of its own (old Mac spreadsheets)
                    for part in text.split("\r"):
                        lineno += 1
                        yield lineno, part
                else:
                    lineno += 1
                    yield lineno, text
    except UnicodeError as err:
        reason = getattr(err, "reason", err)
        raise DataError(path, f"is not UTF-8 or UTF-16 text ({reason}); save it as UTF-8", row=lineno + 1) from err
    except (gzip.BadGzipFile, EOFError, OSError) as err:
        raise DataError(path, f"corrupt or truncated gzip data ({err})", row=lineno + 1) from err


def csv_delimiter(path: str | Path, header: str) -> str:
    """Tab for .tsv; otherwise comma, or semicolon when the header has semicolons and no comma (what spreadsheets
    in many European locales write; numbers must still use a decimal point)."""
    if Path(path).name.removesuffix(".gz").lower().endswith(".tsv"):
        return "\t"
    return ";" if ";" in header and "," not in header else ","


def _is_oas_metadata(line: str) -> bool:
    s = line.strip().strip('"').lstrip()
    return s.startswith("{")


def detect_format(path: str | Path) -> str:
    """txt, csv, fasta or oas, from the name (``.gz`` ignored) and, for csv, the first line."""
    path = Path(path)
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    suffix = Path(name).suffix.lower()
    if suffix in _FASTA_SUFFIXES:
        return "fasta"
    first = next((line for _, line in _lines(path)), "")
    if suffix in (".csv", ".tsv"):
        header = first
        if _is_oas_metadata(first):
            return "oas"
        names = [name.strip().strip('"') for name in header.split(csv_delimiter(path, header))]
        return "oas" if "sequence_alignment_aa" in names else "csv"
    if first.startswith(">"):
        return "fasta"
    return "txt"


# ---------------------------------------------------------------------------------------------- readers


def read_txt(path: Path) -> Iterator[tuple[int, str]]:
    """One sequence per line; every line is a record (an empty line is rejected later, not skipped)."""
    yield from _lines(path)


def read_fasta(path: Path) -> Iterator[tuple[int, str]]:
    header_line, chunks = None, []
    for lineno, line in _lines(path):
        if line.startswith(">"):
            if header_line is not None:
                yield header_line, "".join(chunks)
            header_line, chunks = lineno, []
        elif header_line is None:
            if line.strip():
                raise DataError(path, "not FASTA: sequence text before the first '>' header", row=lineno)
        else:
            chunks.append(line.strip())
    if header_line is not None:
        yield header_line, "".join(chunks)


def _csv_values(path: Path, skip_metadata: bool) -> Iterator[tuple[int, list[str], list[str]]]:
    """(line, field values, header) per data row; checks every row has as many fields as the header."""
    lines = _lines(path)
    first = next(lines, None)
    if first is None:
        raise DataError(path, "empty file (no header line)")
    if skip_metadata and _is_oas_metadata(first[1]):
        first = next(lines, None)
        if first is None:
            raise DataError(path, "OAS unit has a metadata line but no header line")
    header_line = first[0]
    delimiter = csv_delimiter(path, first[1])
    header = [name.strip() for name in next(csv.reader([first[1]], delimiter=delimiter))]
    current = [header_line]  # line number of the last line csv.reader consumed (it never reads ahead)

    def text() -> Iterator[str]:
        for lineno, line in lines:
            current[0] = lineno
            yield line

    for values in csv.reader(text(), delimiter=delimiter):
        lineno = current[0]
        if not values:
            continue  # a truly blank line in a CSV has no fields at all: nothing to report
        if len(values) != len(header):
            raise DataError(path, f"row has {len(values)} fields, the header has {len(header)}", row=lineno)
        yield lineno, values, header


def read_table(path: str | Path):
    """A whole CSV/TSV as a pandas frame of strings (no NA guessing), decoded and split as the streaming readers
    do (byte-order marks, UTF-16, CR line ends, semicolons, blanks around header names): for the small
    downstream sets. Errors name the file (and line)."""
    import pandas as pd

    path = Path(path)
    lines = [line for _, line in _lines(path)]
    if not lines:
        raise DataError(path, "empty file (no header line)")
    try:
        frame = pd.read_csv(io.StringIO("\n".join(lines)), sep=csv_delimiter(path, lines[0]), dtype=str,
                            keep_default_na=False, skip_blank_lines=True)  # fmt: skip
    except Exception as exc:  # pandas raises many types; its message names the line
        raise DataError(path, f"cannot read as CSV ({exc})") from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def read_csv(path: Path, column: str | None) -> Iterator[tuple[int, str]]:
    col = None
    for lineno, values, header in _csv_values(path, skip_metadata=False):
        if col is None:
            col = header.index(_pick_column(path, header, column))
        yield lineno, values[col]


def _pick_column(path: Path, header: list[str], column: str | None) -> str:
    if column:
        if column not in header:
            raise DataError(path, f"column {column!r} not found (columns: {', '.join(header)})", row=1)
        return column
    guesses = [c for c in header if c.lower() in ("sequence", "seq", "cds", "coding", "sequences")]
    if len(guesses) == 1:
        return guesses[0]
    raise DataError(path, f"cannot tell which column holds sequences ({', '.join(header)}); pass --column_name")


def read_oas(path: Path) -> Iterator[tuple[int, OasRow]]:
    cols = None
    for lineno, values, header in _csv_values(path, skip_metadata=True):
        if cols is None:
            missing = [c for c in OAS_FIELDS if c not in header]
            if missing:
                raise DataError(path, f"OAS unit lacks column(s) {', '.join(missing)}", row=lineno - 1)
            cols = [header.index(c) for c in OAS_FIELDS]
        yield lineno, OasRow(*[values[j] for j in cols])


def read_records(path: str | Path, fmt: str = "auto", column: str | None = None) -> Iterator[tuple[int, object]]:
    """Stream ``(line, payload)`` records of one file; ``fmt`` is one of ``FORMATS``."""
    path = Path(path)
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt == "txt":
        return read_txt(path)
    if fmt == "fasta":
        return read_fasta(path)
    if fmt == "csv":
        return read_csv(path, column)
    if fmt == "oas":
        return read_oas(path)
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


# ---------------------------------------------------------------------------------------------- cleaning


def _clean(raw: str, rewrite: dict, invalid: dict) -> tuple[str, str | None]:
    seq = raw.strip().upper().translate(rewrite)
    if not seq:
        return seq, "empty"
    if seq.translate(invalid):  # what is left after deleting every allowed letter
        return seq, "invalid_characters"
    return seq, None


def clean_sequence(raw: str) -> tuple[str, str | None]:
    """(cleaned sequence, reject reason or None): upper case, U -> T, alignment gaps (- .) removed, then only
    ACGTN may remain. Reasons: ``empty``, ``invalid_characters``."""
    return _clean(raw, _CLEAN, _KEEP_CHECK)


def clean_protein(raw: str) -> tuple[str, str | None]:
    """``clean_sequence`` for amino-acid sequences: upper case, alignment gaps (- .) removed; the 20 amino
    acids, ``*`` and ``X`` are kept. Reasons: ``empty``, ``invalid_characters`` (e.g. B, Z, U, O, J)."""
    return _clean(raw, _PROTEIN_CLEAN, _PROTEIN_KEEP_CHECK)


def uninformative(seq: str, alphabet: str = "nuc", codons: bool = False) -> bool:
    """True when nothing in ``seq`` is known: every base is N (every in-frame codon holds an N, when ``codons``),
    or, for proteins (``alphabet="aa"``), every residue is X or a stop. Such a row would train on unknown tokens
    only; ``helm.prepare`` rejects it (``uninformative``)."""
    if alphabet == "aa":
        return not seq.replace("X", "").replace("*", "")
    if codons:
        return all("N" in seq[i : i + 3] for i in range(0, len(seq) - 2, 3))
    return not seq.replace("N", "")


def translate_frame(seq: str, frame: int) -> str:
    """Translation of ``seq[frame:]`` (whole codons only); codons with N give 'X'."""
    code = GENETIC_CODE
    return "".join([code.get(seq[i : i + 3], "X") for i in range(frame, len(seq) - 2, 3)])


# codon translation as table lookups: base -> 0..3 (4 = other), codon index 16a+4b+c -> amino-acid byte
_BASE = np.full(256, 4, dtype=np.uint8)
for _i, _c in enumerate("ACGT"):
    _BASE[ord(_c)] = _i
_AA = np.frombuffer(
    ("".join(GENETIC_CODE["".join(c)] for c in itertools.product("ACGT", repeat=3)) + "X").encode(), np.uint8
)


def _aa_at_every_position(text: str) -> bytes:
    """Byte i = amino acid of the codon starting at position i of ``text`` ('X' if it holds a non-ACGT base)."""
    codes = _BASE[np.frombuffer(text.encode("ascii"), dtype=np.uint8)]
    if len(codes) < 3:
        return b""
    a, b, c = codes[:-2], codes[1:-1], codes[2:]
    idx = a.astype(np.uint8) * 16 + b * 4 + c
    idx[(a == 4) | (b == 4) | (c == 4)] = 64
    return _AA[idx].tobytes()


def oas_cds_batch(rows: list[OasRow]) -> list[tuple[str, str | None, int]]:
    """``oas_cds`` for many rows at once: one vectorized translation of every position of every cleaned
    alignment, then each row compares three strided slices (its frames) with IgBLAST's amino acids.

    A frame matches when its whole-codon translation equals ``sequence_alignment_aa`` (gaps removed) or
    equals it without its last residue: IgBLAST also translates a trailing partial codon when it is
    unambiguous (e.g. 'TC' -> S)."""
    out: list[tuple[str, str | None, int] | None] = [None] * len(rows)
    todo: list[tuple[int, str, bytes]] = []
    for i, row in enumerate(rows):
        if row.productive.strip().upper() not in ("T", "TRUE"):
            out[i] = ("", "oas_not_productive", 0)
        elif row.stop_codon.strip().upper() in ("T", "TRUE"):
            out[i] = ("", "oas_stop_codon", 0)
        elif row.vj_in_frame.strip().upper() not in ("T", "TRUE"):
            out[i] = ("", "oas_not_in_frame", 0)
        else:
            seq, reason = clean_sequence(row.sequence_alignment)
            if reason:
                out[i] = (seq, reason, 0)
            else:
                aa = row.sequence_alignment_aa.replace("-", "").replace(".", "").upper()
                todo.append((i, seq, aa.encode("ascii", errors="replace")))
    if todo:
        aa_all = _aa_at_every_position("".join(seq for _, seq, _ in todo))
        start = 0
        for i, seq, aa in todo:
            length = len(seq)
            out[i] = (seq, "oas_no_matching_frame", 0)
            for frame in range(3):
                n = (length - frame) // 3
                if n and len(aa) in (n, n + 1):
                    first = start + frame
                    if aa_all[first : first + 3 * (n - 1) + 1 : 3] == aa[:n]:
                        out[i] = (seq[frame : frame + 3 * n], None, frame)
                        break
            start += length
    return out  # type: ignore[return-value]


def oas_cds(row: OasRow) -> tuple[str, str | None, int]:
    """(in-frame CDS, reject reason or None, frame shift) of one OAS row: keep productive, stop-free,
    in-frame rows; pick the frame of the cleaned ``sequence_alignment`` whose translation is IgBLAST's
    ``sequence_alignment_aa``; trim to whole codons. Reasons: ``oas_not_productive``, ``oas_stop_codon``,
    ``oas_not_in_frame``, ``empty``, ``invalid_characters``, ``oas_no_matching_frame``."""
    return oas_cds_batch([row])[0]


def oas_codon_regions(row: dict[str, str]) -> tuple[str, list[str]]:
    """(CDS, one region label per codon) of an OAS row (a dict of the unit's columns).

    The CDS is exactly what ``helm prepare`` keeps for the row (``oas_cds``). Labels are ``fwr1, cdr1,
    fwr2, cdr2, fwr3, cdr3, fwr4`` from the 1-based inclusive ``*_start``/``*_end`` coordinates into
    ``sequence``; a codon takes the region of its middle base, and codons outside every annotated region
    (e.g. FWR1/CDR1, missing in most 454 reads) get ``none``. ``sequence_alignment`` starts at
    ``v_sequence_start`` of ``sequence``; IgBLAST gap characters are not bases and are dropped first.
    Raises ValueError when the row is rejected by ``oas_cds`` (the reason is in the message).
    """
    oas = OasRow(*(str(row[c]) for c in OAS_FIELDS))
    cds, reason, frame = oas_cds(oas)
    if reason:
        raise ValueError(f"OAS row rejected: {reason}")
    start = int(float(row["v_sequence_start"])) + frame  # 1-based position of the first CDS base in `sequence`
    spans = []
    for region in OAS_REGIONS:
        a, b = row.get(f"{region}_start"), row.get(f"{region}_end")
        if a in (None, "") or b in (None, "") or a != a or b != b:  # missing (empty or NaN)
            continue
        spans.append((int(float(a)), int(float(b)), region))
    labels = []
    for j in range(len(cds) // 3):
        mid = start + 3 * j + 1
        labels.append(next((name for a, b, name in spans if a <= mid <= b), "none"))
    return cds, labels


def longest_orf(seq: str, min_codons: int = 1) -> tuple[str, str | None]:
    """Longest ATG-initiated open reading frame of a cleaned contig, on the given strand.

    The ORF runs from an ATG to the first in-frame stop codon, stop included; when no stop follows before
    the contig ends the ORF is open and runs to the last whole codon (the Jaffe contigs end inside the
    constant region, so heavy/light ORFs are usually open). Ties go to the earliest start.
    Returns (orf, None) or ("", ``no_orf``).
    """
    stops = set(STOP_CODONS)
    best_start, best_len = -1, 0
    for frame in range(3):
        open_start = -1
        for i in range(frame, len(seq) - 2, 3):
            codon = seq[i : i + 3]
            if open_start < 0 and codon == "ATG":
                open_start = i
            elif open_start >= 0 and codon in stops:
                length = i + 3 - open_start
                if length > best_len or (length == best_len and open_start < best_start):
                    best_start, best_len = open_start, length
                open_start = -1
        if open_start >= 0:
            length = (len(seq) - open_start) // 3 * 3
            if length > best_len or (length == best_len and open_start < best_start):
                best_start, best_len = open_start, length
    if best_len < 3 * min_codons:
        return "", "no_orf"
    return seq[best_start : best_start + best_len], None


def read_json_metadata(path: str | Path) -> dict | None:
    """The JSON metadata line of an OAS unit, or None when the file has none."""
    for _, line in _lines(Path(path)):
        if not _is_oas_metadata(line):
            return None
        text = line.strip()
        if text.startswith('"'):
            text = next(csv.reader([text]))[0]
        return json.loads(text)
    return None
