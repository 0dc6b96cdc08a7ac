"""Proteins to design for: reading, the residue policy, and the synonymous codons of each residue.

Residue policy (docs/ARCHITECTURE.md, "Design"): a protein is the 20 standard one-letter codes in upper case and
nothing else. Everything else is refused with one line naming the protein, the position and the reason, never
changed silently: lower case (``m`` is not read as ``M``), ambiguous codes (``X``, ``B``, ``Z``, ``J``), a stop
``*`` (a design ends with a stop codon only with ``--stop``), non-standard residues (``U``, ``O``), and spaces or
other characters. FASTA line breaks are part of the format and joined; a blank inside a line is refused.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from helm.codons import AMINO_ACIDS, CODONS, GENETIC_CODE, STOP_CODONS

CODON_INDEX: dict[str, int] = {c: i for i, c in enumerate(CODONS)}
# residue -> its codons in CODONS order; "*" -> the stop codons
SYNONYMS: dict[str, tuple[str, ...]] = {aa: tuple(c for c in CODONS if GENETIC_CODE[c] == aa) for aa in AMINO_ACIDS}
SYNONYMS["*"] = STOP_CODONS
# [21, 64] bool: row r (AMINO_ACIDS order, then "*") marks the codons of residue r
RESIDUES = AMINO_ACIDS + "*"
SYNONYM_MASK = np.array([[GENETIC_CODE[c] == aa for c in CODONS] for aa in RESIDUES])
_WHY = {
    "X": "an ambiguous residue (X: any amino acid)",
    "B": "an ambiguous residue (B: D or N)",
    "Z": "an ambiguous residue (Z: E or Q)",
    "J": "an ambiguous residue (J: I or L)",
    "*": "a stop (a design ends with a stop codon only with --stop; an internal stop is never designed)",
    "U": "selenocysteine, which the standard genetic code has no sense codon for",
    "O": "pyrrolysine, which the standard genetic code has no sense codon for",
}


class ProteinError(ValueError):
    """A protein that cannot be designed for, as given."""


def check_protein(seq: str, name: str = "protein") -> str:
    """``seq`` if it is the 20 standard upper-case residues, else ProteinError naming the first bad position."""
    if not seq:
        raise ProteinError(f"{name}: empty protein sequence")
    for i, ch in enumerate(seq, start=1):
        if ch in AMINO_ACIDS:
            continue
        if ch in _WHY:
            why = _WHY[ch]
        elif ch.upper() in AMINO_ACIDS or ch.upper() in _WHY:
            why = f"lower case (give upper-case one-letter codes: {ch.upper()!r}; nothing is upper-cased silently)"
        elif ch.isspace():
            why = "a blank inside the sequence"
        else:
            why = "not an amino-acid one-letter code"
        raise ProteinError(f"{name}: residue {i} is {ch!r}: {why}")
    return seq


def read_fasta_proteins(path: str | Path) -> list[tuple[str, str]]:
    """``[(name, sequence)]`` of a protein FASTA file (name: the header's first word), every one checked."""
    from helm.io import DataError, open_bytes

    path = Path(path)
    records: list[tuple[str, int, list[str]]] = []
    try:
        with open_bytes(path) as fh:
            text = fh.read().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(path, f"is not UTF-8 text ({err.reason})") from err
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.rstrip("\r\n")
        if line.startswith(">"):
            records.append(((line[1:].split() or [f"protein_{len(records) + 1}"])[0], lineno, []))
        elif not records:
            if line.strip():
                raise DataError(path, "not FASTA: sequence text before the first '>' header", row=lineno)
        else:
            records[-1][2].append(line.strip())
    if not records:
        raise DataError(path, "no FASTA record ('>' header) in the file")
    names = [name for name, _, _ in records]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise DataError(path, f"protein name {dup!r} appears twice (names must be unique)")
    return [(name, check_protein("".join(chunks), f"{path}, line {row} ({name})")) for name, row, chunks in records]


def synonymous_mask(protein: str) -> np.ndarray:
    """[L, 64] bool: the codons allowed at each position (those of its residue)."""
    return SYNONYM_MASK[[RESIDUES.index(aa) for aa in protein]]


def codon_indices(cds: str) -> np.ndarray:
    """The CODONS index of every codon of an in-frame CDS (ACGT only)."""
    return np.array([CODON_INDEX[cds[i : i + 3]] for i in range(0, len(cds) - len(cds) % 3, 3)], dtype=np.int64)


def codons_of(indices) -> str:
    return "".join(CODONS[int(i)] for i in indices)
