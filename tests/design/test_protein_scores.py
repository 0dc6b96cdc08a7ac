"""Residue policy, scores against independent computations (python-codon-tables, ViennaRNA), constraints and
their repair against brute force."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from helm.codons import CODONS, GENETIC_CODE, translate
from helm.design.constraints import Constraints, local_hits, occurrences, repair, reverse_complement, violations
from helm.design.protein import ProteinError, check_protein, read_fasta_proteins

RNA = pytest.importorskip("RNA", reason="the design extra (viennarna) is not installed: pip install '.[design]'")
pct = pytest.importorskip("python_codon_tables", reason="the design extra is not installed: pip install '.[design]'")

from helm.design.scores import cai, gc_windows, load_host, mfe, sequence_scores  # noqa: E402

MRFP = (
    "MASSEDVIKEFMRFKVRMEGSVNGHEFEIEGEGEGRPYEGTQTAKLKVTKGGPLPFAWDILSPQFQYGSKAYVKHPADIPDYLKLSFPEGFKWERVMNFEDGG"
    "VVTVTQDSSLQDGEFIYKVKLRGTNFPSDGPVMQKKTMGWEASSERMYPEDGALKGEIKQRLKLKDGGHYDAEVKTTYKAKKPVQLPGAYNVNIKLDITSHNEDYT"
    "IVEQYERAEGRHSTGGMDELYK"
)


@pytest.mark.parametrize(("seq", "pos", "why"), [("MAXK", 3, "ambiguous"), ("MABK", 3, "D or N"), ("MZ", 2, "E or Q"),
                                                 ("MA*K", 3, "stop"), ("MaK", 2, "lower case"), ("MA K", 3, "blank"),
                                                 ("MA1", 3, "not an amino")])  # fmt: skip
def test_residue_policy_names_position_and_reason(seq, pos, why):
    with pytest.raises(ProteinError, match=rf"residue {pos} is .*{why}"):
        check_protein(seq)
    assert check_protein("MACDEFGHIKLMNPQRSTVWY") == "MACDEFGHIKLMNPQRSTVWY"


def test_fasta_proteins_join_lines_and_refuse_bad_records(tmp_path):
    f = tmp_path / "p.fasta"
    f.write_text(">a first\nMAS\nSED\n>b\nMKV\n")
    assert read_fasta_proteins(f) == [("a", "MASSED"), ("b", "MKV")]
    f.write_text(">a\nMAS\n>b\nMKB\n")
    with pytest.raises(ProteinError, match=r"line 3 \(b\): residue 3 is 'B'"):
        read_fasta_proteins(f)
    f.write_text(">a\nMAS\n>a\nMKV\n")
    with pytest.raises(ValueError, match="appears twice"):
        read_fasta_proteins(f)


def _cai_by_hand(cds: str, table: dict) -> float:
    """Sharp & Li CAI written out from the raw python-codon-tables table (w floored at 0.01, M/W/stops left out)."""
    logs = []
    for i in range(0, len(cds), 3):
        codon = cds[i : i + 3]
        aa = GENETIC_CODE[codon]
        if aa in "MW*":
            continue
        w = table[aa][codon] / max(table[aa].values())
        logs.append(math.log(max(w, 0.01)))
    return math.exp(sum(logs) / len(logs))


@pytest.mark.parametrize("host", ["h_sapiens_9606", "e_coli_316407"])
def test_cai_gc_mfe_against_independent_computation(host):
    rng = np.random.default_rng(0)
    table = pct.get_codons_table(host)
    h = load_host(host.split("_")[0] + "_" + host.split("_")[1])
    assert h.name == host
    for _ in range(5):
        cds = "".join(rng.choice([c for c in CODONS if GENETIC_CODE[c] == aa]) for aa in MRFP[:80])
        assert cai(cds, h) == pytest.approx(_cai_by_hand(cds, table), rel=1e-12)
        fc = RNA.fold_compound(cds.replace("T", "U"))
        assert mfe(cds) == pytest.approx(fc.mfe()[1], abs=1e-6)
        brute = [sum(b in "GC" for b in cds[i : i + 50]) / 50 for i in range(len(cds) - 49)]
        assert np.allclose(gc_windows(cds, 50), brute)
        s = sequence_scores(cds, h, 50, True)
        assert s["gc"] == pytest.approx(sum(b in "GC" for b in cds) / len(cds))
        assert s["mfe_per_nt"] == pytest.approx(s["mfe"] / len(cds))
    best = "".join(max(table[aa], key=table[aa].get) for aa in MRFP)
    assert cai(best, h) == pytest.approx(1.0)


def test_unknown_host_is_one_line():
    with pytest.raises(ValueError, match="--host martian: choose one of .*h_sapiens_9606"):
        try:
            load_host("martian")
        except Exception as e:
            raise ValueError(e.as_flag()) from None


def test_violations_match_brute_force_on_both_strands():
    cons = Constraints(gc_min=0.0, gc_max=1.0, avoid=["GGTCTC"], max_homopolymer=5)
    seq = "ATG" + "GAGACC" + "AAAAAA" + "GGTCTC" + "CCC"
    found = violations(seq, cons)
    # brute force: every window equal to the motif, its reverse complement, or a run of 6
    bad = {"GGTCTC", reverse_complement("GGTCTC")} | {b * 6 for b in "ACGT"}
    brute = sorted((i, p) for p in bad for i in range(len(seq)) if seq.startswith(p, i))
    assert occurrences(seq, cons.patterns()) == brute
    assert len(found) == len(brute) == 3  # GAGACC (the motif on the other strand), AAAAAA, GGTCTC
    assert violations("ATGGCC" * 5, Constraints(gc_min=0.0, gc_max=0.6)) == ["GC 0.667 above --gc-max 0.6"]


def test_local_hits_counts_only_occurrences_through_the_codon():
    pats = Constraints(gc_min=0, gc_max=1, avoid=["GGTCTC"], max_homopolymer=0).patterns()
    assert local_hits("AAAGG", "TCT", "CAA", pats) == 1
    assert local_hits("GGTCTCAAA", "CAA", "", pats) == 0  # the old hit lies wholly in the left context


def test_repair_meets_constraints_with_synonymous_changes_only():
    rng = np.random.default_rng(1)
    cons = Constraints(gc_min=0.45, gc_max=0.55, avoid=["GGTCTC", "GAATTC"], max_homopolymer=5)
    protein = MRFP[:120]
    for _ in range(10):
        codons = [rng.choice([c for c in CODONS if GENETIC_CODE[c] == aa]) for aa in protein]
        codons[3:5] = ["GAA", "TTC"] if protein[3:5] == "EF" else codons[3:5]
        fixed = repair(codons, None, cons)
        assert translate("".join(fixed)) == protein
        assert violations("".join(fixed), cons) == []


def test_repair_prefers_the_cheapest_gc_change():
    # two lysines (AAA/AAG): raising GC by one base must change the position whose preference loss is smaller
    pref = np.zeros((2, 64))
    pref[0, CODONS.index("AAA")], pref[1, CODONS.index("AAA")] = 5.0, 1.0
    out = repair(["AAA", "AAA"], pref, Constraints(gc_min=1 / 6, gc_max=1.0, max_homopolymer=0))
    assert out == ["AAA", "AAG"]


def test_exhaustive_small_case_repair_is_feasible_when_brute_force_is():
    # every codon choice for a 4-residue protein: repair finds a feasible one whenever one exists
    protein = "KKFF"
    cons = Constraints(gc_min=0.0, gc_max=0.2, max_homopolymer=4)
    options = [[c for c in CODONS if GENETIC_CODE[c] == aa] for aa in protein]
    feasible = [c for c in itertools.product(*options) if not violations("".join(c), cons)]
    assert feasible
    out = repair(["AAG", "AAG", "TTC", "TTC"], None, cons)
    assert tuple(out) in feasible
