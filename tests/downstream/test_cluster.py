"""Synonymous variants keep the protein and really change codons."""

from __future__ import annotations

import numpy as np

from helm.codons import translate
from helm.downstream.cluster import synonymous_variant, variant_sets


def test_variants_keep_the_protein_and_change_codons(shared_data):
    import pandas as pd

    cds = pd.read_csv(shared_data / "downstream/mRFP_Expression.csv", nrows=3)["Sequence"].str.replace("U", "T")
    rng = np.random.default_rng(0)
    for seq in cds:
        variants = [synonymous_variant(seq, rng) for _ in range(5)]
        assert all(translate(v) == translate(seq) and len(v) == len(seq) for v in variants)
        assert len(set(variants) | {seq}) == 6  # 226 codons: a repeat is astronomically unlikely
        codons = [seq[i : i + 3] for i in range(0, len(seq), 3)]
        same = np.mean([v[3 * j : 3 * j + 3] == c for v in variants for j, c in enumerate(codons)])
        assert same < 0.8  # many codons were redrawn (uniform over 1-6 synonyms)


def test_variant_sets_group_by_distinct_protein():
    seqs = ["ATGAAACCC", "ATGAAGCCA", "ATGGGGTTT", "ATGTTTTAA"]  # the first two encode the same protein
    out, labels = variant_sets(seqs, num_proteins=3, variants=4, seed=0)
    assert labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert out[0] == seqs[0] and out[4] == seqs[2] and out[8] == seqs[3]  # the original leads each group
    for i, s in enumerate(out):
        assert translate(s) == translate(out[4 * labels[i]])
