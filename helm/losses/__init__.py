"""The loss registry: the names `--loss` takes and ``build_loss``, which builds one (without torch until then, so
`helm train --help` and `helm models` are instant). The kernels and their definitions: helm/losses/kernels.py.

``build_loss(name, vocab, *, hxe_alpha=0.2, soft_labels_beta=15.0, hierarchy="true", seed=42, normalize=True)``
returns an ``nn.Module`` called as ``loss(logits[..., V], labels[...])``. It returns the mean over the positions
whose label is not ``IGNORE_INDEX`` (-100); with no such position it returns 0 (zero gradient). Names are
case-insensitive and ``-``/``_`` insensitive: ``XE`` (alias ``CE``), ``HXE``, ``soft_labels``, ``aa_loss_add``,
``aa_loss_only``. Hierarchical losses raise ``ValueError`` for vocabularies without a codon hierarchy (nuc, bpe, ...).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

    from helm.codons import Vocab

LOSSES = ("XE", "HXE", "soft_labels", "aa_loss_add", "aa_loss_only")  # the canonical names (`--loss` choices)
_ALIASES = {
    "xe": "XE",
    "ce": "XE",
    "cross_entropy": "XE",
    "hxe": "HXE",
    "soft_labels": "soft_labels",
    "softlabels": "soft_labels",
    "soft": "soft_labels",
    "aa_loss_add": "aa_loss_add",
    "aa_loss_only": "aa_loss_only",
}


def list_losses() -> list[str]:
    """Canonical loss names accepted by ``build_loss`` (the seed's ``--loss`` choices)."""
    return list(LOSSES)


def canonical_loss_name(name: str) -> str:
    """``'HXE'``, ``'hxe'``, ``'soft-labels'`` ... -> the canonical spelling; ValueError for unknown names."""
    key = name.strip().lower().replace("-", "_")
    if key not in _ALIASES:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
    return _ALIASES[key]


def build_loss(
    name: str,
    vocab: Vocab,
    *,
    hxe_alpha: float = 0.2,
    soft_labels_beta: float = 15.0,
    hierarchy: str = "true",
    seed: int = 42,
    normalize: bool = True,
) -> nn.Module:
    """The training loss ``name`` for ``vocab``; the definitions: helm/losses/kernels.py."""
    from helm.codons import build_tree
    from helm.losses.kernels import AminoAcidLoss, CrossEntropyLoss, HXELoss, SoftLabelsLoss

    kind = canonical_loss_name(name)
    if kind == "XE":
        return CrossEntropyLoss(len(vocab))
    if kind == "HXE":
        return HXELoss(build_tree(vocab, hierarchy, seed), alpha=hxe_alpha, normalize=normalize)
    if kind == "soft_labels":
        return SoftLabelsLoss(build_tree(vocab, hierarchy, seed), beta=soft_labels_beta)
    return AminoAcidLoss(vocab, add_xe=kind == "aa_loss_add")
