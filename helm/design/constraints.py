"""Design constraints -- GC range, forbidden motifs (both strands), homopolymers -- checked and enforced.

Every design method keeps to them the same way: decoders skip a codon that would complete a forbidden pattern
(`local_hits`), then `repair` fixes what is left (a GC content out of range, a pattern no single codon choice could
avoid) by synonymous changes that cost the least preference, and a design that still breaks one is never
emitted (`violations` is checked on every output by `helm.design.command`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from helm.args import ConfigError
from helm.codons import CODONS, GENETIC_CODE
from helm.design.protein import CODON_INDEX, SYNONYMS

_COMPLEMENT = str.maketrans("ACGT", "TGCA")
CODON_GC = np.array([sum(b in "GC" for b in c) for c in CODONS], dtype=np.int64)  # G/C bases per codon


def reverse_complement(seq: str) -> str:
    return seq.translate(_COMPLEMENT)[::-1]


@dataclass
class Constraints:
    """Constraints every design keeps (enforced, not only scored)."""

    gc_min: float = 0.3
    """lowest GC content of the whole CDS"""
    gc_max: float = 0.7
    """highest GC content of the whole CDS"""
    avoid: list[str] = field(default_factory=list)
    """DNA motifs no design may contain on either strand, e.g. restriction sites GGTCTC (BsaI) CGTCTC (BsmBI)"""
    max_homopolymer: int = 8
    """longest run of one base allowed (0 = no limit)"""

    def __post_init__(self) -> None:
        if not 0.0 <= self.gc_min <= self.gc_max <= 1.0:
            raise ConfigError("gc_min", self.gc_min, f"need 0 <= --gc-min <= --gc-max ({self.gc_max}) <= 1")
        for motif in self.avoid:
            if not motif or set(motif) - set("ACGT"):
                raise ConfigError("avoid", motif, "a motif is upper-case A, C, G, T only")
            if len(motif) < 4:
                raise ConfigError("avoid", motif, "motifs shorter than 4 nt cannot be avoided in a CDS")
        if self.max_homopolymer and self.max_homopolymer < 3:
            raise ConfigError("max_homopolymer", self.max_homopolymer, "0 (off) or >= 3 (codons such as AAA, "
                              "TTT exist)")  # fmt: skip

    def patterns(self) -> tuple[str, ...]:
        """Every forbidden string: each motif, its reverse complement, and runs one longer than allowed."""
        pats = {p for m in self.avoid for p in (m, reverse_complement(m))}
        if self.max_homopolymer:
            pats |= {b * (self.max_homopolymer + 1) for b in "ACGT"}
        return tuple(sorted(pats))


def occurrences(seq: str, patterns: tuple[str, ...]) -> list[tuple[int, str]]:
    """Every (start, pattern) where a pattern occurs in ``seq``, overlapping ones included, sorted by start."""
    hits = []
    for pat in patterns:
        start = seq.find(pat)
        while start >= 0:
            hits.append((start, pat))
            start = seq.find(pat, start + 1)
    return sorted(hits)


def gc_fraction(seq: str) -> float:
    return (seq.count("G") + seq.count("C")) / len(seq) if seq else float("nan")


def violations(seq: str, cons: Constraints) -> list[str]:
    """What in ``seq`` breaks ``cons``, one short phrase each (empty: the design is feasible)."""
    out = []
    gc = gc_fraction(seq)
    if gc < cons.gc_min - 1e-12:
        out.append(f"GC {gc:.3f} below --gc-min {cons.gc_min}")
    if gc > cons.gc_max + 1e-12:
        out.append(f"GC {gc:.3f} above --gc-max {cons.gc_max}")
    out += [f"{pat} at nt {start + 1}" for start, pat in occurrences(seq, cons.patterns())]
    return out


def local_hits(left: str, codon: str, right: str, patterns: tuple[str, ...]) -> int:
    """How many pattern occurrences overlap ``codon`` placed between the sequences ``left`` and ``right``."""
    if not patterns:
        return 0
    k = max(map(len, patterns)) - 1
    left, right = left[-k:] if k else "", right[:k]
    window = left + codon + right
    lo, hi = len(left), len(left) + len(codon)
    return sum(1 for start, pat in occurrences(window, patterns) if start < hi and start + len(pat) > lo)


def repair(codons: list[str], pref: np.ndarray | None, cons: Constraints, max_changes: int | None = None) -> list[str]:
    """Synonymous changes that remove forbidden patterns, then bring GC into range, each the one that loses the
    least preference ``pref`` ([L, 64], higher = preferred; None = all equal). Returns the changed codons; the
    caller checks `violations` (a case no single-codon change can fix stays broken and is reported)."""
    codons = list(codons)
    n = len(codons)
    pref = np.zeros((n, 64)) if pref is None else pref
    patterns = cons.patterns()
    budget = max_changes if max_changes is not None else 4 * n + 16

    def seq_around(i: int) -> tuple[str, str]:
        return "".join(codons[max(0, i - 4) : i]), "".join(codons[i + 1 : i + 5])

    # forbidden patterns: at the first hit, try every synonymous change of the codons it touches
    while patterns and budget > 0:
        hits = occurrences("".join(codons), patterns)
        if not hits:
            break
        start, pat = hits[0]
        best = None
        for i in range(start // 3, min(n, (start + len(pat) - 1) // 3 + 1)):
            left, right = seq_around(i)
            for alt in _synonyms_of(codons[i]):
                if alt == codons[i] or local_hits(left, alt, right, patterns):
                    continue
                loss = pref[i, CODON_INDEX[codons[i]]] - pref[i, CODON_INDEX[alt]]
                if best is None or loss < best[0]:
                    best = (loss, i, alt)
        if best is None:
            break  # no single change fixes it: reported by `violations`
        codons[best[1]] = best[2]
        budget -= 1
    # GC: move towards the range, each step the change with the least preference lost per G/C base moved
    gc_count = int(sum(CODON_GC[CODON_INDEX[c]] for c in codons))
    total = 3 * n
    while budget > 0:
        if gc_count < cons.gc_min * total - 1e-9:
            direction = 1
        elif gc_count > cons.gc_max * total + 1e-9:
            direction = -1
        else:
            break
        candidates = []
        for i, c in enumerate(codons):
            for alt in _synonyms_of(c):
                moved = direction * (CODON_GC[CODON_INDEX[alt]] - CODON_GC[CODON_INDEX[c]])
                if moved > 0:
                    loss = pref[i, CODON_INDEX[c]] - pref[i, CODON_INDEX[alt]]
                    candidates.append((loss / moved, i, alt))
        changed = False
        for _, i, alt in sorted(candidates):
            left, right = seq_around(i)
            if not local_hits(left, alt, right, patterns):
                gc_count += CODON_GC[CODON_INDEX[alt]] - CODON_GC[CODON_INDEX[codons[i]]]
                codons[i] = alt
                changed = True
                break
        if not changed:
            break
        budget -= 1
    return codons


def _synonyms_of(codon: str) -> tuple[str, ...]:
    return SYNONYMS[GENETIC_CODE[codon]]
