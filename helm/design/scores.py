"""The scores beside every design, by the field's tools, and the objective that ranks designs.

- CAI (Sharp & Li 1987): the geometric mean, over the codons of residues with more than one codon (M, W and stops
  left out), of w_c = f_c / max f over the residue's codons, f from a host codon-usage table of python-codon-tables
  (``--host``: h_sapiens, e_coli, s_cerevisiae, m_musculus ...; its tables give f to two decimals, so a rare
  codon can read 0.00: w is floored at ``W_FLOOR`` so one such codon does not make CAI 0).
- GC content of the whole CDS and of every ``--gc-window`` nt window (their lowest and highest).
- MFE: minimum free energy (kcal/mol) of the CDS as RNA by ViennaRNA's ``RNA.fold`` (default energy parameters,
  37 C), and per nucleotide.
- the model's log-likelihood (`helm.design.model`): of the whole CDS, per codon, and per codon given the protein
  (each codon's probability renormalised over its residue's codons).

- optionally (``--property-head``) a property predicted by a head saved by ``helm probe --save-head``
  (`helm.design.property`), on the head's target scale.

Objective (higher is better), `Objective`:
    J = ll_weight * syn_ll_per_codon + cai_weight * ln(CAI) - mfe_weight * MFE/nt - gc_weight * |GC - gc_target|
        + property_weight * property
The first two terms are sums over codons, so decoders add ``cai_weight * ln w_c`` to each codon's model log-prob
(`HostTable.log_weights`); MFE, GC and the property are whole-sequence terms and rank the finished designs.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from functools import cached_property
from types import ModuleType

import numpy as np

from helm.args import ConfigError
from helm.codons import CODONS, GENETIC_CODE, STOP_CODONS
from helm.design.constraints import gc_fraction
from helm.design.protein import CODON_INDEX, SYNONYM_MASK

EXTRA_HINT = "pip install 'helm-mrna[design]'"
W_FLOOR = 0.01  # lowest relative adaptiveness w (a table's 0.00 entries)
HOST_ALIASES = {"human": "h_sapiens", "mouse": "m_musculus", "yeast": "s_cerevisiae", "ecoli": "e_coli"}
# codons CAI averages over: residues with more than one codon, no stops (Sharp & Li)
CAI_CODONS = np.array([GENETIC_CODE[c] not in "MW*" for c in CODONS])


class ExtraMissing(ValueError):
    """A design score needs a package of the ``design`` extra that is not installed (a user error: one line)."""


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` of the design extra, or ExtraMissing naming the extra and what needed it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ExtraMissing(f"{purpose} needs the Python module {module!r} of the design extra: {EXTRA_HINT}") from None


@dataclass(frozen=True)
class HostTable:
    """A host's codon usage: ``freq[c]`` the relative frequency of codon c among its residue's codons."""

    name: str
    source: str
    freq: np.ndarray  # [64], CODONS order

    @cached_property
    def weights(self) -> np.ndarray:
        """w_c = f_c / max f over the residue's codons, floored at W_FLOOR."""
        best = (SYNONYM_MASK * self.freq[None, :]).max(axis=1)  # [21] per residue
        residue_best = (SYNONYM_MASK * best[:, None]).sum(axis=0)  # [64]: each codon's residue maximum
        return np.maximum(self.freq / np.where(residue_best > 0, residue_best, 1.0), W_FLOOR)

    @property
    def log_weights(self) -> np.ndarray:
        return np.log(self.weights)

    def as_dict(self) -> dict[str, dict[str, float]]:
        """The table as python-codon-tables and DNA Chisel take it: residue -> {codon: frequency}."""
        table: dict[str, dict[str, float]] = {}
        for c, f in zip(CODONS, self.freq):
            table.setdefault(GENETIC_CODE[c], {})[c] = float(f)
        return table

    def best_stop(self) -> str:
        return max(STOP_CODONS, key=lambda c: self.freq[CODON_INDEX[c]])


def load_host(name: str) -> HostTable:
    """The codon-usage table of python-codon-tables named ``name`` (a short name such as h_sapiens is enough)."""
    pct = require("python_codon_tables", "--host (codon usage, CAI)")
    names = list(pct.available_codon_tables_names)
    name = HOST_ALIASES.get(name.lower(), name)
    match = [n for n in names if n == name] or [n for n in names if n.startswith(name + "_")]
    if len(match) != 1:
        raise ConfigError("host", name, f"choose one of {', '.join(names)} (or human, mouse, yeast, ecoli)")
    table = pct.get_codons_table(match[0])
    freq = np.array([float(table[GENETIC_CODE[c]][c]) for c in CODONS])
    version = getattr(pct, "__version__", "?")
    return HostTable(match[0], f"python-codon-tables {version}: {match[0]} (Kazusa codon usage database)", freq)


def cai(cds: str, host: HostTable) -> float:
    """Codon adaptation index of an in-frame CDS against ``host`` (see the module docstring)."""
    idx = [CODON_INDEX[cds[i : i + 3]] for i in range(0, len(cds) - 2, 3)]
    idx = [i for i in idx if CAI_CODONS[i]]
    return float(np.exp(host.log_weights[idx].mean())) if idx else float("nan")


def gc_windows(seq: str, window: int) -> np.ndarray:
    """GC content of every ``window``-nt window (step 1); the whole sequence when it is shorter."""
    if len(seq) <= window:
        return np.array([gc_fraction(seq)])
    gc = np.frombuffer(seq.encode(), dtype=np.uint8)
    csum = np.concatenate([[0], np.cumsum((gc == ord("G")) | (gc == ord("C")))])
    return (csum[window:] - csum[:-window]) / window


def mfe(seq: str) -> float:
    """Minimum free energy (kcal/mol) of ``seq`` as RNA (T read as U) by ViennaRNA."""
    rna = require("RNA", "the MFE score (ViennaRNA)")
    _, energy = rna.fold(seq.replace("T", "U"))
    return float(energy)


@dataclass
class Objective:
    """Objective: the weighted sum that ranks designs (higher is better; docs/ARCHITECTURE.md, "Design")."""

    ll_weight: float = 1.0
    """weight of the model's log-likelihood per codon given the protein (log p renormalised over synonyms)"""
    cai_weight: float = 1.0
    """weight of ln CAI against --host (decoders add it per codon: cai_weight * ln w)"""
    mfe_weight: float = 0.0
    """weight of -MFE per nt (kcal/mol/nt): > 0 prefers stable, more folded mRNA (needs MFE scoring)"""
    gc_weight: float = 0.0
    """weight of -|GC - --gc-target|"""
    gc_target: float = 0.5
    """the GC content --gc-weight pulls towards"""
    property_weight: float = 0.0
    """weight of the property predicted by --property-head (on its target's scale; higher property is better)"""

    def __call__(self, s: dict[str, float]) -> float:
        """J of one design's scores (``syn_ll_per_codon``, ``cai``, ``mfe_per_nt``, ``gc``, ``property``)."""
        terms = [(self.ll_weight, s.get("syn_ll_per_codon")), (self.cai_weight, _log(s.get("cai"))),
                 (-self.mfe_weight, s.get("mfe_per_nt")), (-self.gc_weight, abs(s["gc"] - self.gc_target)),
                 (self.property_weight, s.get("property"))]  # fmt: skip
        total = 0.0
        for weight, value in terms:
            if weight:
                if value is None or not math.isfinite(value):
                    return float("nan")
                total += weight * value
        return total


def _log(x: float | None) -> float | None:
    return None if x is None or not x > 0 else math.log(x)


def sequence_scores(cds: str, host: HostTable, gc_window: int, with_mfe: bool) -> dict[str, float]:
    """The model-free scores of one CDS: cai, gc, gc_window_min/max, and (``with_mfe``) mfe, mfe_per_nt."""
    windows = gc_windows(cds, gc_window)
    out = {"cai": cai(cds, host), "gc": gc_fraction(cds), "gc_window_min": float(windows.min()),
           "gc_window_max": float(windows.max())}  # fmt: skip
    if with_mfe:
        out["mfe"] = mfe(cds)
        out["mfe_per_nt"] = out["mfe"] / len(cds)
    return out
