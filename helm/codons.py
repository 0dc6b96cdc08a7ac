"""Genetic code, vocabularies and the codon hierarchy.

One token order is used everywhere (tokenizer, model, losses, metrics): the special tokens first, in
``SPECIALS`` order, then the sequence tokens in lexicographic ``ACGT`` order. The reference code mixed
two orders; keeping a single ``Vocab`` object as the source of truth avoids that.

Trees are stored as a parent array over named nodes, node 0 being the root; every vocabulary token is a
leaf. The losses only need the derived tables (``ancestors``, ``membership``, ``depth``, ``lca_height``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

SPECIALS: tuple[str, ...] = ("<pad>", "<cls>", "<eos>", "<unk>", "<mask>", "<sep>")
PAD_ID, CLS_ID, EOS_ID, UNK_ID, MASK_ID, SEP_ID = range(len(SPECIALS))
IGNORE_INDEX = -100  # the label of a position without a loss (pads, unmasked MLM positions); torch's default
NUCLEOTIDES = "ACGT"

# Standard genetic code (NCBI table 1), codon -> one-letter amino acid, '*' = stop.
_BASES = "TCAG"
_AA_TABLE = "FFLLSSSSYY**CC*WLLLLPPPPHHQQRRRRIIIMTTTTNNKKSSRRVVVVAAAADDEEGGGG"
GENETIC_CODE: dict[str, str] = {
    a + b + c: _AA_TABLE[i] for i, (a, b, c) in enumerate(itertools.product(_BASES, repeat=3))
}
CODONS: tuple[str, ...] = tuple("".join(p) for p in itertools.product(NUCLEOTIDES, repeat=3))
START_CODONS: tuple[str, ...] = ("ATG",)
STOP_CODONS: tuple[str, ...] = tuple(c for c in CODONS if GENETIC_CODE[c] == "*")
AMINO_ACIDS: str = "ACDEFGHIKLMNPQRSTVWY"


def translate(seq: str, strict: bool = False) -> str:
    """Translate an in-frame DNA sequence; a trailing partial codon is ignored, unknown codons give 'X'."""
    seq = seq.upper().replace("U", "T")
    if strict and len(seq) % 3:
        raise ValueError(f"sequence length {len(seq)} is not a multiple of 3")
    return "".join(GENETIC_CODE.get(seq[i : i + 3], "X") for i in range(0, len(seq) - len(seq) % 3, 3))


@dataclass(frozen=True)
class Vocab:
    """An ordered token list: ``SPECIALS`` then the sequence tokens.

    ``kind`` is one of ``codon`` (3-mers), ``kmer`` (k-mers, k != 3), ``nuc``, ``aa`` or ``learned``.
    """

    kind: str
    tokens: tuple[str, ...]
    k: int = 1

    def __post_init__(self) -> None:
        if self.tokens[: len(SPECIALS)] != SPECIALS:
            raise ValueError("a Vocab must start with the special tokens in SPECIALS order")
        if len(set(self.tokens)) != len(self.tokens):
            raise ValueError("duplicate tokens in vocabulary")

    def __len__(self) -> int:
        return len(self.tokens)

    @cached_property
    def index(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.tokens)}

    def id(self, token: str) -> int:
        return self.index.get(token, UNK_ID)

    @property
    def num_specials(self) -> int:
        return len(SPECIALS)

    pad_id: int = field(default=PAD_ID, init=False, repr=False)
    cls_id: int = field(default=CLS_ID, init=False, repr=False)
    eos_id: int = field(default=EOS_ID, init=False, repr=False)
    unk_id: int = field(default=UNK_ID, init=False, repr=False)
    mask_id: int = field(default=MASK_ID, init=False, repr=False)
    sep_id: int = field(default=SEP_ID, init=False, repr=False)


def kmer_vocab(k: int) -> Vocab:
    """All 4**k k-mers over ACGT. k == 3 is the codon vocabulary (70 tokens with the specials)."""
    kmers = tuple("".join(p) for p in itertools.product(NUCLEOTIDES, repeat=k))
    return Vocab(kind="codon" if k == 3 else ("nuc" if k == 1 else "kmer"), tokens=SPECIALS + kmers, k=k)


def codon_vocab() -> Vocab:
    return kmer_vocab(3)


def nuc_vocab() -> Vocab:
    """Nucleotides plus N (ambiguous base), which real reads contain."""
    return Vocab(kind="nuc", tokens=SPECIALS + tuple(NUCLEOTIDES) + ("N",), k=1)


def aa_vocab() -> Vocab:
    return Vocab(kind="aa", tokens=SPECIALS + tuple(AMINO_ACIDS) + ("*", "X"), k=1)


# --------------------------------------------------------------------------------------------- trees


@dataclass(frozen=True)
class Tree:
    """A rooted tree whose leaves are exactly the tokens of a vocabulary.

    names[i] / parent[i] describe node i (parent[0] == -1, node 0 is the root); leaf_of_token[v] is the
    node that token v sits at.
    """

    names: tuple[str, ...]
    parent: np.ndarray
    leaf_of_token: np.ndarray

    def __post_init__(self) -> None:
        if self.parent[0] != -1 or (self.parent[1:] < 0).any():
            raise ValueError("node 0 must be the only root")
        if len(set(self.leaf_of_token.tolist())) != len(self.leaf_of_token):
            raise ValueError("two tokens share a leaf")
        if np.isin(self.leaf_of_token, self.parent).any():
            raise ValueError("a token sits at an inner node")

    @property
    def num_nodes(self) -> int:
        return len(self.names)

    @property
    def vocab_size(self) -> int:
        return len(self.leaf_of_token)

    @cached_property
    def depth(self) -> np.ndarray:
        """Edges from the root, per node."""
        depth = np.full(self.num_nodes, -1, dtype=np.int64)
        depth[0] = 0
        for _ in range(self.num_nodes):  # parent arrays are small; iterate to a fixed point
            unset = depth < 0
            if not unset.any():
                break
            depth[unset] = np.where(depth[self.parent[unset]] >= 0, depth[self.parent[unset]] + 1, -1)
        return depth

    @cached_property
    def ancestors(self) -> np.ndarray:
        """[V, max_depth + 1]: column 0 is the leaf, then its parent, ..., the root; -1 past the root."""
        max_depth = int(self.depth[self.leaf_of_token].max())
        table = np.full((self.vocab_size, max_depth + 1), -1, dtype=np.int64)
        node = self.leaf_of_token.copy()
        for col in range(max_depth + 1):
            table[:, col] = node
            node = np.where(node > 0, self.parent[np.maximum(node, 0)], -1)
        return table

    @cached_property
    def membership(self) -> np.ndarray:
        """[num_nodes, V] bool: token v is a leaf under node n (a leaf is under itself)."""
        member = np.zeros((self.num_nodes, self.vocab_size), dtype=bool)
        anc = self.ancestors
        for col in range(anc.shape[1]):
            ok = anc[:, col] >= 0
            member[anc[ok, col], np.nonzero(ok)[0]] = True
        return member

    @cached_property
    def height(self) -> np.ndarray:
        """Per node: the longest path down to a leaf under it (leaves have height 0)."""
        leaf_depth = self.depth[self.leaf_of_token]
        return np.array(
            [(leaf_depth[m].max() - self.depth[n]) if m.any() else 0 for n, m in enumerate(self.membership)]
        )

    @cached_property
    def lca_height(self) -> np.ndarray:
        """[V, V]: height of the lowest common ancestor of tokens i and j (0 on the diagonal)."""
        # by_depth[v, l]: the ancestor of token v at depth l (-1 below its leaf); shared ancestors form a prefix
        anc = self.ancestors
        v, cols = anc.shape
        leaf_depth = self.depth[self.leaf_of_token]
        by_depth = np.full((v, cols), -1, dtype=np.int64)
        for level in range(cols):
            col = leaf_depth - level
            ok = col >= 0
            by_depth[ok, level] = anc[np.nonzero(ok)[0], col[ok]]
        out = np.full((v, v), self.height[0], dtype=np.int64)  # the root is always shared
        shared = np.ones((v, v), dtype=bool)
        for level in range(1, cols):
            a = by_depth[:, level]
            shared &= (a[:, None] == a[None, :]) & (a >= 0)[:, None]
            if not shared.any():
                break
            np.copyto(out, np.broadcast_to(self.height[np.maximum(a, 0)][:, None], (v, v)), where=shared)
        return out

    def level_weights(self, alpha: float, normalize: bool = True) -> np.ndarray:
        """lambda(n) = exp(-alpha * depth(n)) / Z per node; Z sums over every node (helm/losses/kernels.py)."""
        w = np.exp(-alpha * self.depth.astype(np.float64))
        return w / w.sum() if normalize else w


def _codon_groups(assignment: dict[str, str]) -> list[tuple[str, list[str]]]:
    """Ordered (group, codons) list: start, 19 amino acids (M only via start), stop."""
    groups: list[tuple[str, list[str]]] = [("start", [c for c in CODONS if assignment[c] == "start"])]
    for aa in AMINO_ACIDS:
        if aa != "M":
            groups.append((aa, [c for c in CODONS if assignment[c] == aa]))
    groups.append(("stop", [c for c in CODONS if assignment[c] == "stop"]))
    return groups


def codon_tree(vocab: Vocab | None = None, hierarchy: str = "true", seed: int = 42) -> Tree:
    """root -> {codons -> {start -> ATG, coding -> 19 amino acids -> codons, stop -> 3 codons}, specials}.

    ``hierarchy='random'`` keeps the shape and group sizes and shuffles the codons across the groups
    (seeded), so only the grouping changes.
    """
    vocab = vocab or codon_vocab()
    if vocab.kind != "codon":
        raise ValueError(f"codon_tree needs the codon vocabulary, got {vocab.kind}")
    truth = {
        c: "start" if c in START_CODONS else ("stop" if GENETIC_CODE[c] == "*" else GENETIC_CODE[c]) for c in CODONS
    }
    groups = _codon_groups(truth)
    if hierarchy == "random":
        rng = np.random.default_rng(seed)
        shuffled = list(np.array(CODONS)[rng.permutation(len(CODONS))])
        new_groups = []
        for name, members in groups:
            new_groups.append((name, [str(c) for c in shuffled[: len(members)]]))
            shuffled = shuffled[len(members) :]
        groups = new_groups
    elif hierarchy != "true":
        raise ValueError(f"unknown hierarchy {hierarchy!r}; choose 'true' or 'random'")
    start, *coding, stop = groups
    names: list[str] = ["root"]
    parent: list[int] = [-1]
    leaf = np.full(len(vocab), -1, dtype=np.int64)

    def add(name: str, par: int) -> int:
        names.append(name)
        parent.append(par)
        return len(names) - 1

    codons_node = add("codons", 0)
    start_node = add("start", codons_node)
    for tok in start[1]:
        leaf[vocab.index[tok]] = add(tok, start_node)
    coding_node = add("coding", codons_node)
    for aa, members in coding:
        aa_node = add(f"aa:{aa}", coding_node)
        for tok in members:
            leaf[vocab.index[tok]] = add(tok, aa_node)
    stop_node = add("stop", codons_node)
    for tok in stop[1]:
        leaf[vocab.index[tok]] = add(tok, stop_node)
    for i, special in enumerate(SPECIALS):
        leaf[i] = add(special, add(f"special:{special}", 0))
    return Tree(names=tuple(names), parent=np.array(parent), leaf_of_token=leaf)


def kmer_tree(vocab: Vocab, hierarchy: str = "true", seed: int = 42) -> Tree:
    """Hierarchy for k-mers with k a multiple of 3 (e.g. 6mer): root -> kmers -> first residue ->
    peptide prefix ... -> k-mer, so two 6-mers are close when they encode the same dipeptide.
    ``random`` shuffles the k-mers across the leaf groups, as for codons."""
    if vocab.k % 3 or vocab.kind not in ("codon", "kmer"):
        raise ValueError(f"a peptide hierarchy needs k-mers with k a multiple of 3, got k={vocab.k}")
    if vocab.k == 3:
        return codon_tree(vocab, hierarchy, seed)
    kmers = [t for t in vocab.tokens[len(SPECIALS) :]]
    if hierarchy == "random":
        order = np.random.default_rng(seed).permutation(len(kmers))
        labels = [translate(kmers[i]) for i in range(len(kmers))]
        peptides = {kmers[j]: labels[i] for i, j in enumerate(order)}
    elif hierarchy == "true":
        peptides = {t: translate(t) for t in kmers}
    else:
        raise ValueError(f"unknown hierarchy {hierarchy!r}; choose 'true' or 'random'")
    names: list[str] = ["root"]
    parent: list[int] = [-1]
    node_of: dict[str, int] = {}
    leaf = np.full(len(vocab), -1, dtype=np.int64)

    def add(name: str, par: int) -> int:
        names.append(name)
        parent.append(par)
        return len(names) - 1

    top = add("kmers", 0)
    for tok in kmers:
        pep = peptides[tok]
        par = top
        for i in range(1, len(pep) + 1):
            key = pep[:i]
            if key not in node_of:
                node_of[key] = add(f"pep:{key}", par)
            par = node_of[key]
        leaf[vocab.index[tok]] = add(tok, par)
    for i, special in enumerate(SPECIALS):
        leaf[i] = add(special, add(f"special:{special}", 0))
    return Tree(names=tuple(names), parent=np.array(parent), leaf_of_token=leaf)


def flat_tree(vocab_size: int) -> Tree:
    """root -> every token: HXE on it is XE times a constant."""
    return Tree(
        names=("root",) + tuple(f"t{i}" for i in range(vocab_size)),
        parent=np.array([-1] + [0] * vocab_size),
        leaf_of_token=np.arange(1, vocab_size + 1),
    )


def build_tree(vocab: Vocab, hierarchy: str = "true", seed: int = 42) -> Tree:
    """The hierarchy a loss should use for ``vocab``; raises for vocabularies without a biological one."""
    if vocab.kind in ("codon", "kmer") and vocab.k % 3 == 0:
        return kmer_tree(vocab, hierarchy, seed)
    raise ValueError(
        f"no codon hierarchy exists for a {vocab.kind} vocabulary (k={vocab.k}); hierarchical losses need "
        "the codon (3mer) or a 6mer/9mer tokenizer"
    )


def aa_classes(vocab: Vocab) -> tuple[list[str], np.ndarray]:
    """Amino-acid (peptide) class of every token: (class names, [V] class index).

    Specials are their own classes, stop codons map to '*', ATG to 'M'. For 6-mers a class is the
    dipeptide they encode.
    """
    if vocab.kind not in ("codon", "kmer") or vocab.k % 3:
        raise ValueError(f"amino-acid classes need codon or 6mer/9mer tokens, got a {vocab.kind} vocabulary")
    labels = list(SPECIALS) + [translate(t) for t in vocab.tokens[len(SPECIALS) :]]
    names = sorted(set(labels) - set(SPECIALS))
    names = list(SPECIALS) + names
    index = {n: i for i, n in enumerate(names)}
    return names, np.array([index[lab] for lab in labels], dtype=np.int64)
