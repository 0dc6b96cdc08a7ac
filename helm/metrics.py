"""Token-level training / validation metrics (torchmetrics), fed ``(logits[..., V], labels[...])``.

Public API
----------
``build_metrics(vocab, hierarchy="true", seed=42, prefix="") -> torchmetrics.MetricCollection`` with
- ``acc``: token accuracy (argmax == label);
- ``ppl``: perplexity, exp of the mean plain cross entropy, whatever loss trains the model;
- ``aa_acc``: amino-acid accuracy, the prediction encodes the same amino acid (peptide for 6-mers) as the label;
- ``mistake_severity``: mean LCA height (``Tree.lca_height`` of the true biological tree) between prediction and
  label over the *wrong* predictions only (0 when there is none), as in Bertinetto et al. 2020. It is always
  scored on the true tree, whatever tree the run was trained on, so runs trained on a random hierarchy are
  comparable with the others (docs/PROTOCOL.md "Comparable metrics");
- ``mistake_severity_train_tree``: the same on the training tree, only when ``hierarchy`` is not ``"true"``.
``aa_acc`` and ``mistake_severity`` exist only for vocabularies with a codon hierarchy (codon, 6mer); nuc / learned
vocabularies get ``acc`` and ``ppl``. Positions labelled -100 (pads, unmasked MLM positions) never count. Keys carry
``prefix`` (e.g. ``"val/"``). The classes ``TokenAccuracy``, ``Perplexity``, ``AminoAcidAccuracy`` and
``MistakeSeverity`` can also be used alone. States are sums, so they reduce correctly across DDP processes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics import Metric, MetricCollection

from .codons import IGNORE_INDEX, Vocab, aa_classes, build_tree


def _counted(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[..., V], [...] -> the [N, V] logits and [N] labels of the positions that count."""
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} do not match")
    z = logits.detach().reshape(-1, logits.shape[-1])
    y = labels.reshape(-1).long()
    keep = y != IGNORE_INDEX
    return z[keep], y[keep]


class _SumMetric(Metric):
    """total / count over counted positions; subclasses say what each position adds."""

    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def _add(self, values: torch.Tensor) -> None:
        self.total += values.double().sum()
        self.count += values.numel()

    def compute(self) -> torch.Tensor:
        return (self.total / self.count.clamp_min(1)).float()


class TokenAccuracy(_SumMetric):
    higher_is_better = True

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        z, y = _counted(logits, labels)
        self._add(z.argmax(-1) == y)


class Perplexity(_SumMetric):
    """exp(mean cross entropy) over counted positions, accumulated in float64."""

    higher_is_better = False

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        z, y = _counted(logits, labels)
        self._add(F.cross_entropy(z.float(), y, reduction="none"))

    def compute(self) -> torch.Tensor:
        return torch.exp(self.total / self.count.clamp_min(1)).float()


class AminoAcidAccuracy(_SumMetric):
    """Share of predictions synonymous with the label: class[argmax] == class[label]."""

    higher_is_better = True

    def __init__(self, classes: torch.Tensor, **kwargs) -> None:
        super().__init__(**kwargs)
        self.register_buffer("classes", torch.as_tensor(classes, dtype=torch.long), persistent=False)

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        z, y = _counted(logits, labels)
        self._add(self.classes[z.argmax(-1)] == self.classes[y])


class MistakeSeverity(_SumMetric):
    """Mean LCA height between the prediction and the label over wrong predictions (0 if none is wrong)."""

    higher_is_better = False

    def __init__(self, lca_height: torch.Tensor, **kwargs) -> None:
        super().__init__(**kwargs)
        lca = torch.as_tensor(lca_height)
        self.register_buffer("lca_height", lca.to(torch.uint8 if lca.max() < 256 else torch.long), persistent=False)

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        z, y = _counted(logits, labels)
        pred = z.argmax(-1)
        wrong = pred != y
        self._add(self.lca_height[pred[wrong], y[wrong]])


def build_metrics(vocab: Vocab, hierarchy: str = "true", seed: int = 42, prefix: str = "") -> MetricCollection:
    """The metric collection for ``vocab`` (see the module docstring); ``hierarchy``/``seed`` name the training
    tree, which adds ``mistake_severity_train_tree`` when it is not the true one."""
    # compute_groups=False: these metrics share state names, and torchmetrics would merge ones whose states happen
    # to be equal after the first batch
    metrics: dict[str, Metric] = {"acc": TokenAccuracy(), "ppl": Perplexity()}
    try:
        _, classes = aa_classes(vocab)
        tree = build_tree(vocab, "true", seed)
    except ValueError:  # nuc / learned vocabularies: no amino acids, no hierarchy
        return MetricCollection(metrics, prefix=prefix, compute_groups=False)
    metrics["aa_acc"] = AminoAcidAccuracy(torch.as_tensor(classes))
    metrics["mistake_severity"] = MistakeSeverity(torch.as_tensor(tree.lca_height))
    if hierarchy != "true":
        train_tree = build_tree(vocab, hierarchy, seed)
        metrics["mistake_severity_train_tree"] = MistakeSeverity(torch.as_tensor(train_tree.lca_height))
    return MetricCollection(metrics, prefix=prefix, compute_groups=False)
