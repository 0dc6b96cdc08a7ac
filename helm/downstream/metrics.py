"""Metrics: regression (Spearman, Pearson, R2) and generation quality (validity, GC, codon usage,
diversity, Fréchet distance, neighbour precision/recall)."""

from __future__ import annotations

import itertools

import numpy as np
from scipy import linalg, stats

from helm.codons import CODONS, STOP_CODONS

# ------------------------------------------------------------------------------------------- regression


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Spearman, Pearson (NaN when a side is constant) and R2 = 1 - SSE/SST."""
    y_true, y_pred = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    constant = np.ptp(y_pred) == 0 or np.ptp(y_true) == 0
    spearman = float("nan") if constant else float(stats.spearmanr(y_true, y_pred).statistic)
    pearson = float("nan") if constant else float(stats.pearsonr(y_true, y_pred).statistic)
    sst = float(((y_true - y_true.mean()) ** 2).sum())
    r2 = 1 - float(((y_true - y_pred) ** 2).sum()) / sst if sst > 0 else float("nan")
    return {"spearman": spearman, "pearson": pearson, "r2": r2}


# ------------------------------------------------------------------------------------------- sequences


def has_internal_stop(seq: str) -> bool:
    """A stop codon (frame 0) anywhere before the last whole codon; a final stop is allowed."""
    n = len(seq) // 3
    return any(seq[i : i + 3] in STOP_CODONS for i in range(0, 3 * (n - 1), 3))


def is_valid_orf(seq: str) -> bool:
    """Starts with ATG, length a multiple of 3, no stop codon before the last codon (a final stop is allowed)."""
    return len(seq) >= 3 and len(seq) % 3 == 0 and seq.startswith("ATG") and not has_internal_stop(seq)


def gc_content(seq: str) -> float:
    return (seq.count("G") + seq.count("C")) / len(seq) if seq else float("nan")


def codon_usage(seqs: list[str]) -> np.ndarray:
    """Relative frequency of the 64 codons (CODONS order) over all in-frame codons of ``seqs``."""
    index = {c: i for i, c in enumerate(CODONS)}
    counts = np.zeros(len(CODONS))
    for s in seqs:
        for i in range(0, len(s) - 2, 3):
            j = index.get(s[i : i + 3])
            if j is not None:
                counts[j] += 1
    total = counts.sum()
    return counts / total if total else counts


def codon_usage_distance(a: list[str], b: list[str]) -> float:
    """Total-variation distance (half the L1 distance) between the codon usage of two sets, in [0, 1]."""
    return float(0.5 * np.abs(codon_usage(a) - codon_usage(b)).sum())


def levenshtein(a: str, b: str) -> int:
    """Edit distance, one numpy row per character of ``a``.

    The insertion step ``row[j] = min(row[j], row[j-1] + 1)`` is a running minimum of ``row[k] - k`` plus
    ``j``, so each row is a few vector operations instead of a Python loop over ``b``.
    """
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return len(a)
    bb = np.frombuffer(b.encode(), dtype=np.uint8)
    j = np.arange(len(b) + 1)
    prev = j.copy()
    for i, ch in enumerate(a.encode(), start=1):
        sub = prev[:-1] + (bb != ch)  # diagonal: substitution or match
        cur = np.empty_like(prev)
        cur[0] = i
        cur[1:] = np.minimum(sub, prev[1:] + 1)  # or deletion
        cur = np.minimum.accumulate(cur - j) + j  # or insertion
        prev = cur
    return int(prev[-1])


def internal_diversity(seqs: list[str], max_pairs: int | None = None, seed: int = 0) -> float:
    """Mean Levenshtein distance over distinct pairs (off-diagonal); ``max_pairs`` samples pairs (seeded)."""
    pairs = list(itertools.combinations(range(len(seqs)), 2))
    if not pairs:
        return float("nan")
    if max_pairs and len(pairs) > max_pairs:
        rng = np.random.default_rng(seed)
        pairs = [pairs[i] for i in rng.choice(len(pairs), max_pairs, replace=False)]
    return float(np.mean([levenshtein(seqs[i], seqs[j]) for i, j in pairs]))


# ------------------------------------------------------------------------------------------- embeddings


def pca_project(
    generated: np.ndarray, reference: np.ndarray, components: int, reference_only: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Project both sets on the top principal components (centred on the fitted rows' mean).

    ``reference_only`` (the paper's protocol, docs/PROTOCOL.md "Generation") fits the components on the reference
    rows alone, so the space a run is scored in does not depend on its own samples and every run against the same
    reference shares it; False fits them on the union of the two sets (our earlier choice)."""
    rows = reference if reference_only else np.concatenate([generated, reference])
    rows = rows.astype(np.float64)
    mean = rows.mean(0)
    k = min(components, rows.shape[1], rows.shape[0] - 1)
    _, _, vt = np.linalg.svd(rows - mean, full_matrices=False)
    return (generated - mean) @ vt[:k].T, (reference - mean) @ vt[:k].T


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^{1/2}) of the Gaussians fitted to rows of a and b."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a = np.atleast_2d(np.cov(a, rowvar=False))
    s_b = np.atleast_2d(np.cov(b, rowvar=False))
    covmean = linalg.sqrtm(s_a @ s_b)
    if np.iscomplexobj(covmean):  # numerical noise gives tiny imaginary parts
        covmean = covmean.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * covmean))


def cosine_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    an = a / np.linalg.norm(a, axis=1, keepdims=True).clip(1e-12)
    bn = b / np.linalg.norm(b, axis=1, keepdims=True).clip(1e-12)
    return 1 - an @ bn.T


def neighbour_precision_recall(generated: np.ndarray, reference: np.ndarray, threshold: float) -> tuple[float, float]:
    """Precision = share of generated rows with a reference row within ``threshold`` cosine distance;
    recall = share of reference rows with a generated row that close."""
    d = cosine_distances(generated, reference)
    return float((d.min(1) <= threshold).mean()), float((d.min(0) <= threshold).mean())
