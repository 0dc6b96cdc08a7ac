"""`helm design`: synonymous-constrained coding sequences for a protein, with a trained codon run.

    helm design --run RUN --protein MASSEDVIKEF... --out DIR [--n 4] [--method auto|greedy|beam|sample|gibbs|anneal]
        [--host h_sapiens] [--stop] [--gc-min 0.3 --gc-max 0.7] [--avoid GGTCTC CGTCTC] [--max-homopolymer 8]
    helm design --run RUN --fasta proteins.fasta --out DIR ...
        [--property-head mrfp.head --property-weight 0.5]      # a head saved by helm probe --save-head

CLM runs decode left to right (greedy, beam, sample), MLM runs refine by blocked Gibbs sampling or annealing
(helm/design/model.py); the baselines (most-frequent codon, host-usage sampling, random synonymous, DNA Chisel;
helm/design/baselines.py) are designed under the same constraints and scored by the same scorer
(helm/design/scores.py). Every emitted design translates exactly to its protein, has no internal stop, ends with a
stop codon only with ``--stop`` and meets every constraint; a model design that cannot be repaired to meet them is
listed under ``rejected``, and a protein left without any model design ends the command (exit 2).

Writes ``DIR/designs.json`` (one `DesignRecord`), ``DIR/designs.fasta`` and ``DIR/designs.tsv`` (one row a design).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from helm.args import ConfigError, HelmParser, add_dataclass, command_errors, from_values
from helm.design.baselines import BASELINES
from helm.design.constraints import Constraints
from helm.design.protein import CODON_INDEX
from helm.design.scores import Objective

METHODS = ("auto", "greedy", "beam", "sample", "gibbs", "anneal")
CLM_METHODS = ("greedy", "beam", "sample")
RECORD_FILE, FASTA_FILE, TABLE_FILE = "designs.json", "designs.fasta", "designs.tsv"


@dataclass
class DesignSettings:
    """Design: the run, the proteins, the method and the scores."""

    run: str = ""
    """run directory of a codon (3mer) run, CLM or MLM (required)"""
    protein: str | None = None
    """the protein: 20 upper-case one-letter codes (or --fasta)"""
    fasta: str | None = None
    """a protein FASTA file: every record is designed for (or --protein)"""
    out: str = ""
    """output directory (required): designs.json, designs.fasta, designs.tsv"""
    n: int = 1
    """designs per protein from the model"""
    method: Literal[METHODS] = "auto"
    """auto (CLM: greedy for one design, sample for more; MLM: anneal), greedy / beam / sample (CLM), gibbs /
    anneal (MLM)"""
    host: str = "h_sapiens"
    """host codon-usage table (python-codon-tables): h_sapiens, m_musculus, e_coli, s_cerevisiae, ..."""
    stop: bool = False
    """end every design with a stop codon (the host's most frequent one that breaks no constraint)"""
    beam_size: int = 4
    """beam width of --method beam (at least --n)"""
    temperature: float = 1.0
    """temperature of --method sample and gibbs, the starting one of anneal"""
    t_end: float = 0.0
    """final temperature of --method anneal (0 = the best codon in the last sweep)"""
    sweeps: int = 8
    """MLM sweeps (each visits every position once)"""
    mask_fraction: float = 0.15
    """share of the positions masked and redrawn together in an MLM step"""
    baselines: list[Literal[BASELINES]] = field(default_factory=lambda: list(BASELINES))
    """baselines designed and scored beside the model's designs"""
    no_baselines: bool = False
    """design with the model only"""
    mfe: bool = True
    """score the MFE with ViennaRNA (about a second per 900 nt)"""
    gc_window: int = 50
    """window (nt) of the windowed GC content"""
    seed: int = 0
    """seed of sampling, Gibbs moves and the sampled baselines"""
    threads: int | None = None
    """torch CPU threads (unset: torch's default)"""
    property_head: str | None = None
    """a head file saved by helm probe (its save-head option; e.g. on mrfp): every design and baseline gets its
    predicted property (score ``property``; --property-weight puts it in the objective)"""
    batch_size: int = 64
    """rows per forward pass when scoring"""
    overwrite: bool = False
    """replace designs already in --out"""

    def __post_init__(self) -> None:
        if not self.run:
            raise ConfigError("run", self.run, "is required (a run directory)")
        if not self.out:
            raise ConfigError("out", self.out, "is required (an output directory)")
        if (self.protein is None) == (self.fasta is None):
            raise ConfigError("protein", self.protein, "give exactly one of --protein and --fasta")
        for name in ("n", "beam_size", "sweeps", "gc_window", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(name, getattr(self, name), "must be >= 1")
        if self.method == "greedy" and self.n > 1:
            raise ConfigError("n", self.n, "greedy decoding gives one design; use --method beam or sample")
        if self.method == "beam" and self.beam_size < self.n:
            raise ConfigError("beam_size", self.beam_size, f"must be >= --n {self.n}")
        if not 0 < self.mask_fraction <= 1:
            raise ConfigError("mask_fraction", self.mask_fraction, "must lie in (0, 1]")
        if self.temperature < 0 or self.t_end < 0:
            raise ConfigError("temperature", self.temperature, "temperatures must be >= 0")


@dataclass
class Design:
    """One design and its scores."""

    protein: str
    method: str
    source: Literal["model", "baseline"]
    rank: int  # by the objective among the protein's model designs (1 = best); 0 for baselines
    cds: str
    scores: dict[str, float]
    seconds: float


@dataclass
class DesignRecord:
    """What `helm design` writes to designs.json."""

    kind: str
    run: str
    run_dir: str
    mode: str
    method: str
    host: str
    host_source: str
    settings: dict[str, Any]
    constraints: dict[str, Any]
    objective: dict[str, Any]
    proteins: dict[str, str]
    designs: list[Design]
    rejected: list[dict[str, Any]]
    versions: dict[str, str]
    seconds: float
    property_head: dict[str, Any] | None = None  # the head behind the ``property`` score (--property-head)


def resolve_method(method: str, mode: str, n: int) -> str:
    if method == "auto":
        return ("greedy" if n == 1 else "sample") if mode == "clm" else "anneal"
    if (method in CLM_METHODS) != (mode == "clm"):
        want = "greedy, beam or sample" if mode == "clm" else "gibbs or anneal"
        raise ConfigError("method", method, f"does not apply to a {mode.upper()} run; use {want}")
    return method


def model_designs(model, protein: str, settings: DesignSettings, method: str, bias, cons: Constraints, host):
    """The run's designs of ``protein`` after repair: [codon strings per design]."""
    import numpy as np

    from helm.codons import CODONS
    from helm.design.baselines import baseline_design
    from helm.design.constraints import repair

    if method in CLM_METHODS:
        decoded = model.decode(protein, method, settings.n, bias, cons, settings.beam_size, settings.temperature,
                               settings.seed)  # fmt: skip
    else:  # MLM chains start from host-usage draws (different per chain)
        init = np.stack([baseline_design("host_sampling", protein, host, Constraints(0, 1, [], 0), settings.seed + i)
                         for i in range(settings.n)])  # fmt: skip
        decoded = model.refine(protein, init, bias, cons, settings.sweeps, settings.temperature, settings.t_end,
                               settings.mask_fraction, settings.seed, anneal=method == "anneal")  # fmt: skip
    return [repair([CODONS[i] for i in d.codons], d.pref, cons) for d in decoded]


def finish(codons: list[str], protein: str, host, cons: Constraints, stop: bool) -> str:
    """The CDS of ``codons`` (with a stop codon when asked); checks the translation (a failure is a bug)."""
    from helm.codons import STOP_CODONS, translate
    from helm.design.constraints import local_hits, repair, violations

    cds = "".join(codons)
    if stop:
        ranked = sorted(STOP_CODONS, key=lambda c: -host.freq[CODON_INDEX[c]])
        free = [c for c in ranked if not local_hits(cds, c, "", cons.patterns())]
        cds += (free or ranked)[0]
        if violations(cds, cons):  # the stop codon moved GC out of range: repair with it in place
            cds = "".join(repair([cds[i : i + 3] for i in range(0, len(cds), 3)], None, cons))
    expected = protein + ("*" if stop else "")
    if translate(cds) != expected:
        raise RuntimeError(f"internal error: a design translates to {translate(cds)!r}, not {expected!r}")
    return cds


def design(settings: DesignSettings, cons: Constraints, objective: Objective) -> DesignRecord:

    from helm.design.constraints import violations
    from helm.design.model import CodonModel
    from helm.design.protein import ProteinError, check_protein, codon_indices, read_fasta_proteins
    from helm.design.scores import load_host
    from helm.downstream.common import set_threads
    from helm.run import load_run

    t0 = time.time()
    out = Path(settings.out)
    if (out / RECORD_FILE).exists() and not settings.overwrite:
        raise FileExistsError(f"{out / RECORD_FILE} exists; choose another --out or add --overwrite")
    set_threads(settings.threads)
    host = load_host(settings.host)
    if settings.protein is not None:
        proteins = [("protein", check_protein(settings.protein, "--protein"))]
    else:
        proteins = read_fasta_proteins(settings.fasta)
    run = load_run(settings.run)
    model = CodonModel(run, settings.batch_size)
    method = resolve_method(settings.method, model.mode, settings.n)
    for name, protein in proteins:
        model.check_length(protein, name)
    if settings.mfe or objective.mfe_weight:
        from helm.design.scores import require

        require("RNA", "the MFE score (ViennaRNA)")
    if objective.property_weight and not settings.property_head:
        raise ConfigError("property_weight", objective.property_weight, "needs --property-head (a helm probe head)")
    scorer = None
    if settings.property_head:
        from helm.design.property import PropertyScorer

        scorer = PropertyScorer(settings.property_head, settings.batch_size, {str(Path(settings.run).resolve()): run})
    bias = objective.cai_weight * host.log_weights
    baselines = [] if settings.no_baselines else list(dict.fromkeys(settings.baselines))
    designs: list[Design] = []
    rejected: list[dict[str, Any]] = []
    for name, protein in proteins:
        candidates = _candidates(model, name, protein, settings, method, bias, cons, host, baselines, rejected)
        lls = model.log_likelihoods(protein, [codon_indices("".join(c)) for _, _, c, _ in candidates])
        kept = []
        for (meth, source, codons, secs), ll in zip(candidates, lls):
            cds = finish(codons, protein, host, cons, settings.stop)
            broken = violations(cds, cons)
            if broken:
                rejected.append({"protein": name, "method": meth, "reason": "; ".join(broken), "cds": cds})
                continue
            kept.append((meth, source, cds, secs, ll))
        scored = _scored(name, kept, scorer, host, settings, objective)
        ours = sorted((d for d in scored if d.source == "model"), key=lambda d: -_finite(d.scores["objective"]))
        if not ours:
            reasons = sorted({r["reason"] for r in rejected if r["protein"] == name and r["method"] == method})
            raise ProteinError(f"{name}: no model design meets the constraints ({'; '.join(reasons)[:300]})")
        for rank, d in enumerate(ours, start=1):
            d.rank = rank
        designs += ours + [d for d in scored if d.source == "baseline"]
    return DesignRecord(
        kind="design", run=run.run_id, run_dir=str(settings.run), mode=model.mode, method=method, host=host.name,
        host_source=host.source, settings=dataclasses.asdict(settings), constraints=dataclasses.asdict(cons),
        objective=dataclasses.asdict(objective), proteins=dict(proteins), designs=designs, rejected=rejected,
        versions=_versions(), seconds=round(time.time() - t0, 3),
        property_head=scorer.info if scorer is not None else None,
    )  # fmt: skip


def _candidates(model: Any, name: str, protein: str, settings: DesignSettings, method: str, bias: Any,
                cons: Constraints, host: Any, baselines: list[str],
                rejected: list[dict[str, Any]]) -> list[tuple]:  # fmt: skip
    """(method, source, codons, seconds) of the model's designs and of each baseline; a baseline that cannot meet
    the constraints is added to `rejected`."""
    from helm.design.baselines import baseline_design
    from helm.design.protein import codons_of

    t = time.time()
    ours = list(model_designs(model, protein, settings, method, bias, cons, host))
    per_model = (time.time() - t) / max(1, len(ours))
    candidates = [(method, "model", codons, per_model) for codons in ours]
    for b in baselines:
        t = time.time()
        try:
            idx = baseline_design(b, protein, host, cons, settings.seed)
        except ValueError as err:
            rejected.append({"protein": name, "method": b, "reason": str(err)})
            continue
        candidates.append((b, "baseline", [codons_of([i]) for i in idx], time.time() - t))
    return candidates


def _scored(name: str, kept: list[tuple], scorer: Any, host: Any, settings: DesignSettings,
            objective: Objective) -> list[Design]:  # fmt: skip
    """Every kept design scored; one batch through the property head: the model's designs and the baselines by
    the same scorer."""
    from helm.design.scores import sequence_scores

    props = scorer.predict([k[2] for k in kept]) if scorer is not None and kept else None
    scored = []
    for i, (meth, source, cds, secs, ll) in enumerate(kept):
        scores = {**sequence_scores(cds, host, settings.gc_window, settings.mfe), **ll}
        if props is not None:
            scores["property"] = float(props[i])
        scores["objective"] = objective(scores)
        scored.append(Design(name, meth, source, 0, cds, scores, round(secs, 4)))
    return scored


def _finite(x: float) -> float:
    import math

    return x if x is not None and math.isfinite(x) else -math.inf


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for dist in ("viennarna", "dnachisel", "python-codon-tables", "torch"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


SCORE_COLUMNS = ("objective", "syn_ll_per_codon", "ll_per_codon", "cai", "gc", "gc_window_min", "gc_window_max", "mfe",
                 "mfe_per_nt", "property")  # fmt: skip


def write_record(record: DesignRecord, out: str | Path) -> None:
    """designs.json (the record), designs.fasta and designs.tsv in ``out``, each written atomically."""
    from helm.files import atomic_write, write_json

    out = Path(out)
    write_json(out / RECORD_FILE, dataclasses.asdict(record))
    fasta = "".join(f">{d.protein}|{d.method}|{d.source}|rank={d.rank}\n{d.cds}\n" for d in record.designs)
    atomic_write(out / FASTA_FILE, fasta)
    head = ["protein", "method", "source", "rank", *SCORE_COLUMNS, "seconds", "cds"]
    rows = ["\t".join(head)]
    for d in record.designs:
        values = ["" if v is None else f"{v:.6g}" for v in (d.scores.get(c) for c in SCORE_COLUMNS)]
        rows.append("\t".join([d.protein, d.method, d.source, str(d.rank), *values, str(d.seconds), d.cds]))
    atomic_write(out / TABLE_FILE, "\n".join(rows) + "\n")


def build_parser() -> HelmParser:
    parser = HelmParser("helm design", __doc__.splitlines()[0])
    add_dataclass(parser, DesignSettings, aliases={"out": ("--output",), "n": ("--num-designs",)})
    add_dataclass(parser, Constraints)
    add_dataclass(parser, Objective)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with command_errors("helm design"):
        values = vars(args)
        settings = from_values(DesignSettings, values)
        cons, objective = from_values(Constraints, values), from_values(Objective, values)
        record = design(settings, cons, objective)
        write_record(record, settings.out)
    best = ", ".join(f"{d.protein} {d.scores['objective']:.3f}" for d in record.designs if d.rank == 1)
    baselines = sum(d.source == "baseline" for d in record.designs)
    print(
        f"helm design: {len(record.proteins)} protein(s), {len(record.designs)} designs ({record.method} with "
        f"{record.run}; {baselines} of them baselines), {len(record.rejected)} rejected, best objective {best} in "
        f"{record.seconds:.1f} s -> {settings.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
