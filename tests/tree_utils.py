"""Brute-force tree references shared by the codon and loss tests (not collected)."""

from __future__ import annotations

from helm.codons import Tree


def tree_paths(tree: Tree) -> list[list[int]]:
    """Per token: the explicit walk leaf -> parent -> ... -> root over the parent array."""
    out = []
    for leaf in tree.leaf_of_token.tolist():
        path = [leaf]
        while tree.parent[path[-1]] >= 0:
            path.append(int(tree.parent[path[-1]]))
        out.append(path)
    return out
