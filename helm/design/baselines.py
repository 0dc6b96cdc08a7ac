"""Baseline designs, scored by the same scorer as the model's (`helm.design.command.score_designs`).

- ``most_frequent``: each residue's most frequent host codon (CAI = 1 before constraints);
- ``host_sampling``: codons drawn with the host's frequencies;
- ``random``: codons drawn uniformly among the synonyms;
- ``dnachisel``: DNA Chisel's CAI optimisation (``CodonOptimize``, method ``use_best_codon``, the same host table)
  under the same constraints (``EnforceTranslation``, ``EnforceGCContent``, ``AvoidPattern`` on both strands).

The first three go through `helm.design.constraints.repair` with the host log-frequencies as preference; DNA
Chisel enforces the constraints itself. `usage_logprobs` gives the codon-usage models' own probabilities, which
the benchmark compares with a run's likelihood of natural CDS.
"""

from __future__ import annotations

import numpy as np

from helm.codons import CODONS
from helm.design.constraints import Constraints, repair
from helm.design.protein import CODON_INDEX, codon_indices, synonymous_mask
from helm.design.scores import W_FLOOR, HostTable, require

BASELINES = ("most_frequent", "host_sampling", "random", "dnachisel")


def usage_logprobs(freq: np.ndarray, protein: str) -> np.ndarray:
    """[L, 64] log-probabilities of a codon-usage model: ``freq`` renormalised over each residue's codons (floored
    at W_FLOOR of the residue's total so a table's 0.00 is not impossible); -inf off the synonyms."""
    mask = synonymous_mask(protein)
    f = np.where(mask, freq[None, :], 0.0)
    f = np.where(mask, np.maximum(f, W_FLOOR * f.sum(1, keepdims=True)), 0.0)
    with np.errstate(divide="ignore"):
        return np.log(f / f.sum(1, keepdims=True))


def baseline_design(name: str, protein: str, host: HostTable, cons: Constraints, seed: int = 0) -> np.ndarray:
    """Codon indices [L] of baseline ``name`` for ``protein`` (constraints applied as the module docstring says)."""
    if name == "dnachisel":
        return codon_indices(dnachisel_design(protein, host, cons, seed))
    rng = np.random.default_rng(seed)
    logp = usage_logprobs(host.freq, protein)
    if name == "most_frequent":
        pick = logp.argmax(1)
    elif name in ("host_sampling", "random"):
        weights = np.exp(logp) if name == "host_sampling" else synonymous_mask(protein).astype(float)
        weights /= weights.sum(1, keepdims=True)
        pick = np.array([rng.choice(64, p=w) for w in weights])
    else:
        raise ValueError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}")
    codons = repair([CODONS[i] for i in pick], logp, cons)
    return np.array([CODON_INDEX[c] for c in codons])


def dnachisel_design(protein: str, host: HostTable, cons: Constraints, seed: int = 0) -> str:
    """DNA Chisel's CAI optimisation of ``protein`` under ``cons`` (a ValueError names what it cannot satisfy)."""
    dc = require("dnachisel", "the dnachisel baseline")
    np.random.seed(seed)  # DNA Chisel's random mutations draw from numpy's global generator
    start = dc.reverse_translate(protein)
    constraints = [dc.EnforceTranslation(), dc.EnforceGCContent(mini=cons.gc_min, maxi=cons.gc_max)]
    constraints += [dc.AvoidPattern(p) for p in cons.patterns()]
    problem = dc.DnaOptimizationProblem(sequence=start, constraints=constraints, logger=None,
                                        objectives=[dc.CodonOptimize(codon_usage_table=host.as_dict(),
                                                                     method="use_best_codon")])  # fmt: skip
    try:
        problem.resolve_constraints()
        problem.optimize()
    except dc.NoSolutionError as err:
        raise ValueError(f"dnachisel found no sequence meeting the constraints: {str(err).splitlines()[0]}") from None
    return problem.sequence
