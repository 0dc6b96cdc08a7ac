"""Vocabularies, genetic code and trees (helm/codons.py) against independent definitions and brute-force walks."""

from __future__ import annotations

import gzip
import itertools
import math

import numpy as np
import pandas as pd
import pytest
from tree_utils import tree_paths

from helm.codons import (
    CODONS,
    GENETIC_CODE,
    MASK_ID,
    PAD_ID,
    SPECIALS,
    STOP_CODONS,
    UNK_ID,
    Tree,
    Vocab,
    aa_classes,
    aa_vocab,
    build_tree,
    codon_tree,
    codon_vocab,
    flat_tree,
    kmer_tree,
    kmer_vocab,
    nuc_vocab,
    translate,
)

# The standard genetic code written per amino acid (textbook table), independent of the codons.py encoding.
STANDARD = {
    "F": "TTT TTC", "L": "TTA TTG CTT CTC CTA CTG", "I": "ATT ATC ATA", "M": "ATG", "V": "GTT GTC GTA GTG",
    "S": "TCT TCC TCA TCG AGT AGC", "P": "CCT CCC CCA CCG", "T": "ACT ACC ACA ACG", "A": "GCT GCC GCA GCG",
    "Y": "TAT TAC", "*": "TAA TAG TGA", "H": "CAT CAC", "Q": "CAA CAG", "N": "AAT AAC", "K": "AAA AAG",
    "D": "GAT GAC", "E": "GAA GAG", "C": "TGT TGC", "W": "TGG", "R": "CGT CGC CGA CGG AGA AGG",
    "G": "GGT GGC GGA GGG",
}  # fmt: skip


def _brute_tables(tree: Tree):
    """depth, height and leaves-under per node, from explicit leaf-to-root walks."""
    paths = tree_paths(tree)
    depth = {node: len(p) - 1 - i for p in paths for i, node in enumerate(p)}
    under: dict[int, set[int]] = {}
    for v, p in enumerate(paths):
        for node in p:
            under.setdefault(node, set()).add(v)
    height = {n: max(len(paths[v]) - 1 for v in leaves) - depth[n] for n, leaves in under.items()}
    return paths, depth, under, height


def _brute_lca_height(tree: Tree, pairs) -> list[int]:
    paths, _, _, height = _brute_tables(tree)
    out = []
    for i, j in pairs:
        on_i = set(paths[i])
        out.append(height[next(n for n in paths[j] if n in on_i)])
    return out


# --------------------------------------------------------------------------------------------- vocabularies


def test_token_order_is_specials_then_lexicographic() -> None:
    vocab = codon_vocab()
    assert len(vocab) == 70 and vocab.tokens[:6] == SPECIALS
    assert (PAD_ID, MASK_ID) == (vocab.index["<pad>"], vocab.index["<mask>"])
    assert list(vocab.tokens[6:]) == sorted("".join(p) for p in itertools.product("ACGT", repeat=3))
    assert vocab.id("NNN") == UNK_ID
    six = kmer_vocab(6)
    assert len(six) == 4096 + 6 and six.tokens[6] == "AAAAAA" and six.tokens[-1] == "TTTTTT" and six.kind == "kmer"
    assert nuc_vocab().tokens[6:] == ("A", "C", "G", "T", "N")
    assert len(aa_vocab()) == 6 + 20 + 2
    with pytest.raises(ValueError, match="special"):
        Vocab("codon", ("AAA",) + SPECIALS)
    with pytest.raises(ValueError, match="duplicate"):
        Vocab("codon", SPECIALS + ("AAA", "AAA"))


def test_genetic_code_matches_textbook_table() -> None:
    table = {codon: aa for aa, codons in STANDARD.items() for codon in codons.split()}
    assert len(table) == 64 and GENETIC_CODE == table
    assert sorted(STOP_CODONS) == ["TAA", "TAG", "TGA"] and set(CODONS) == set(table)


def test_translate() -> None:
    assert translate("ATGGCCTAA") == "MA*"
    assert translate("augGCCua") == "MA"  # RNA letters, lower case, trailing partial codon ignored
    assert translate("ATGNNN") == "MX"
    with pytest.raises(ValueError, match="multiple of 3"):
        translate("ATGA", strict=True)


# ------------------------------------------------------------------------------------------------- trees


def test_codon_tree_shape_follows_design() -> None:
    vocab = codon_vocab()
    tree = codon_tree(vocab)
    paths, depth, _, _ = _brute_tables(tree)
    name = tree.names
    assert tree.vocab_size == 70
    # 1 root + codons/start/coding/stop + 19 amino acids + 64 codons + 6 special parents + 6 specials
    assert tree.num_nodes == 1 + 4 + 19 + 64 + 12
    for v, tok in enumerate(vocab.tokens):
        chain = [name[n] for n in paths[v][1:]]
        if tok in SPECIALS:
            assert chain == [f"special:{tok}", "root"]
        elif tok == "ATG":
            assert chain == ["start", "codons", "root"]
        elif tok in STOP_CODONS:
            assert chain == ["stop", "codons", "root"]
        else:
            assert chain == [f"aa:{GENETIC_CODE[tok]}", "coding", "codons", "root"]
    assert "aa:M" not in name  # ATG sits only under start
    np.testing.assert_array_equal(tree.depth, [depth[n] for n in range(tree.num_nodes)])


@pytest.mark.parametrize(
    "make",
    [
        lambda: codon_tree(codon_vocab(), "true"),
        lambda: codon_tree(codon_vocab(), "random", seed=1),
        lambda: flat_tree(9),
    ],
)
def test_tree_tables_match_brute_force(make) -> None:
    tree = make()
    paths, depth, under, height = _brute_tables(tree)
    for v, path in enumerate(paths):
        row = tree.ancestors[v]
        assert row[: len(path)].tolist() == path and (row[len(path) :] == -1).all()
    for node in range(tree.num_nodes):
        assert set(np.nonzero(tree.membership[node])[0]) == under[node]
        assert tree.height[node] == height[node]
    v = tree.vocab_size
    pairs = list(itertools.product(range(v), range(v)))
    np.testing.assert_array_equal(tree.lca_height, np.array(_brute_lca_height(tree, pairs)).reshape(v, v))
    assert (np.diag(tree.lca_height) == 0).all()
    for alpha in (0.0, 0.4):
        w = tree.level_weights(alpha)
        raw = np.array([math.exp(-alpha * depth[n]) for n in range(tree.num_nodes)])
        np.testing.assert_allclose(w, raw / raw.sum(), rtol=1e-12)
        np.testing.assert_allclose(tree.level_weights(alpha, normalize=False), raw, rtol=1e-12)


def test_6mer_tree_lca_on_sampled_pairs() -> None:
    vocab = kmer_vocab(6)
    for hierarchy in ("true", "random"):
        tree = kmer_tree(vocab, hierarchy, seed=2)
        rng = np.random.default_rng(0)
        pairs = rng.integers(0, len(vocab), size=(300, 2)).tolist() + [[7, 7]]
        got = [int(tree.lca_height[i, j]) for i, j in pairs]
        assert got == _brute_lca_height(tree, pairs)
    tree = kmer_tree(vocab)
    i, j, k = vocab.index["CTGAAA"], vocab.index["TTAAAG"], vocab.index["CTGAAC"]  # LK, LK, LN
    assert tree.parent[tree.leaf_of_token[i]] == tree.parent[tree.leaf_of_token[j]]
    assert tree.lca_height[i, j] == 1 and tree.lca_height[i, k] == 2


def _group_sizes(tree: Tree) -> list[int]:
    """Sorted sizes of the groups of sibling sequence tokens (leaves sharing a parent, specials excluded)."""
    parents = tree.parent[tree.leaf_of_token[len(SPECIALS) :]]
    return sorted(np.unique(parents, return_counts=True)[1].tolist())


def _leaf_parents(tree: Tree) -> list[str]:
    """Per token, the name of its parent node: which tokens are grouped together."""
    return [tree.names[p] for p in tree.parent[tree.leaf_of_token]]


@pytest.mark.parametrize("k", [3, 6])
def test_random_hierarchy_keeps_shape_and_shuffles_groups(k: int) -> None:
    vocab = kmer_vocab(k)
    true, rand = build_tree(vocab, "true"), build_tree(vocab, "random", seed=4)
    assert _group_sizes(true) == _group_sizes(rand)
    assert sorted(true.depth[true.leaf_of_token]) == sorted(rand.depth[rand.leaf_of_token])
    assert _leaf_parents(true) != _leaf_parents(rand)
    assert _leaf_parents(rand) == _leaf_parents(build_tree(vocab, "random", seed=4))  # seeded
    assert _leaf_parents(rand) != _leaf_parents(build_tree(vocab, "random", seed=5))
    assert [true.names[p] for p in true.ancestors[: len(SPECIALS), 1]] == [
        rand.names[p] for p in rand.ancestors[: len(SPECIALS), 1]
    ]  # specials stay where they are
    with pytest.raises(ValueError, match="hierarchy"):
        build_tree(vocab, "shuffled")


def test_trees_and_classes_need_codon_tokens() -> None:
    for vocab in (nuc_vocab(), aa_vocab(), kmer_vocab(4)):
        with pytest.raises(ValueError, match="hierarch"):
            build_tree(vocab)
        with pytest.raises(ValueError, match="amino-acid"):
            aa_classes(vocab)


def test_aa_classes() -> None:
    vocab = codon_vocab()
    names, classes = aa_classes(vocab)
    assert len(names) == 6 + 21 and len(set(classes[:6].tolist())) == 6
    for aa, codons in STANDARD.items():
        ids = {int(classes[vocab.index[c]]) for c in codons.split()}
        assert len(ids) == 1 and names[ids.pop()] == aa


def test_real_cds_translate_consistently(shared_data) -> None:
    """On real iCodon CDS: every codon is in the vocabulary and the aa classes of its tokens spell the protein."""
    with gzip.open(shared_data / "downstream" / "iCodon_mRNA_stability_testing.csv.gz", "rt") as f:
        cds = pd.read_csv(f, nrows=40)["coding"].tolist()
    vocab = codon_vocab()
    names, classes = aa_classes(vocab)
    for seq in cds:
        ids = [vocab.index[seq[i : i + 3]] for i in range(0, len(seq) - len(seq) % 3, 3)]
        assert "".join(names[classes[t]] for t in ids) == translate(seq)
        assert "X" not in translate(seq)  # only A, C, G, T in real CDS
