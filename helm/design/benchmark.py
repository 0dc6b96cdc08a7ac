"""`helm design-bench`: how the runs' designs compare with the baselines, honestly.

    helm design-bench --run RUN [RUN ...] --prepared PREPARED_DIR --out DIR [--num-proteins 50] [--host h_sapiens]
        [--fasta proteins.fasta --trade-off-host e_coli]
    helm design-bench --gather results/design/*/*/designs.json --out DIR        # the workflow's report rows

1. Held-out natural CDS (the prepared corpus's test split, never trained on): each protein is translated from its
   CDS and designed without constraints (the natural CDS does not keep them either) by every run (CLM: greedy;
   MLM: annealing to T = 0) and by the baselines. ``recovery`` = share of positions where the design has the
   natural codon. ``natural_syn_ll`` = log-likelihood per codon of the natural CDS given its protein: for a run,
   its probabilities renormalised over synonyms (prefix for a CLM, pseudo-likelihood for an MLM); for a codon-usage
   model (host table, or ``oas_usage``: the codon frequencies of the corpus's training split), its renormalised
   frequencies; ``random`` = uniform over synonyms. Means with 95 % t intervals over proteins, and each run minus
   each baseline, paired by protein.
2. Trade-off (``--fasta``): `helm.design.command.design` with its defaults (constraints on) for every run (CLM:
   greedy and ``--n`` samples; MLM: ``--n`` annealing chains), the baselines beside each run's designs, the CAI /
   GC / MFE / likelihood (and, with ``--property-head``, the predicted property) of each method as a table and a
   Pareto figure (CAI against the likelihood given the protein, one panel per run, every point scored by that
   run; the non-dominated designs are ringed). A CLM's likelihood is causal, an MLM's a pseudo-likelihood: the
   panels do not compare with each other.

Writes ``recovery.csv`` (one row per protein and method), ``recovery_summary.csv`` / ``.md``, ``tradeoff.csv`` /
``.md``, ``pareto.png`` and ``summary.json`` under ``--out``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from helm.args import ConfigError, HelmParser, add_dataclass, command_errors, from_values

USAGE_MODELS = ("host_usage", "oas_usage", "random")
RECOVERY_BASELINES = ("most_frequent", "oas_most_frequent", "host_sampling", "random")


@dataclass
class BenchSettings:
    """Benchmark: the runs, the held-out proteins and the real proteins of the trade-off."""

    run: list[str] = field(default_factory=list)
    """codon run directories to benchmark"""
    prepared: str | None = None
    """prepared corpus (helm prepare): its test split gives the held-out CDS, its train split the oas_usage model"""
    out: str = ""
    """output directory (required)"""
    num_proteins: int = 50
    """held-out proteins (the first ones of the test split)"""
    host: str = "h_sapiens"
    """host table of the most_frequent / host_sampling baselines and of host_usage"""
    fasta: str | None = None
    """real proteins for the trade-off table and figure (e.g. the mRFP protein)"""
    trade_off_host: str = "e_coli"
    """host table of the trade-off designs (mRFP was expressed in E. coli)"""
    n: int = 4
    """designs per protein and run in the trade-off"""
    sweeps: int = 8
    """MLM sweeps (helm design --sweeps)"""
    property_head: str | None = None
    """a head file saved by helm probe (its save-head option): the trade-off designs get its predicted property"""
    gather: list[str] = field(default_factory=list)
    """instead: gather these designs.json files (helm design) into design.csv (the workflow's report rows)"""
    seed: int = 0
    """seed of the sampled baselines and designs"""
    threads: int | None = None
    """torch CPU threads (unset: torch's default)"""

    def __post_init__(self) -> None:
        if not self.out:
            raise ConfigError("out", self.out, "is required (an output directory)")
        if not self.gather and not self.run:
            raise ConfigError("run", self.run, "give at least one run (or --gather)")
        if self.run and not (self.prepared or self.fasta):
            raise ConfigError("prepared", self.prepared, "give --prepared (held-out proteins) and/or --fasta")


# ----------------------------------------------------------------------------------------- held-out recovery
def held_out_cds(prepared: str | Path, split: str, limit: int | None) -> list[str]:
    """Decoded CDS of a prepared corpus's ``split`` (the first ``limit``)."""
    from helm.shards import TokenShards
    from helm.tokenizers import load_tokenizer

    prepared = Path(prepared)
    tok = load_tokenizer(prepared)
    if getattr(tok, "name", "") != "3mer":
        raise ConfigError("prepared", str(prepared), "needs a codon (3mer) corpus")
    shards = TokenShards(prepared / split)
    n = len(shards) if limit is None else min(limit, len(shards))
    return [tok.decode(shards[i]) for i in range(n)]


def corpus_usage(cds: list[str]):
    """Codon frequencies [64] of a set of CDS (the oas_usage model)."""
    import numpy as np

    from helm.design.protein import codon_indices

    counts = np.zeros(64)
    for s in cds:
        np.add.at(counts, codon_indices(s), 1)
    return counts / counts.sum()


def recovery_rows(settings: BenchSettings) -> list[dict]:
    import numpy as np

    from helm.codons import translate
    from helm.design.baselines import baseline_design, usage_logprobs
    from helm.design.command import model_designs, resolve_method
    from helm.design.constraints import Constraints
    from helm.design.model import CodonModel
    from helm.design.protein import SYNONYM_MASK, codon_indices
    from helm.design.scores import load_host
    from helm.run import load_run

    host = load_host(settings.host)
    natural = [s for s in held_out_cds(settings.prepared, "test", settings.num_proteins) if "*" not in translate(s)]
    train = held_out_cds(settings.prepared, "train", 20000)
    oas = corpus_usage(train)
    free = Constraints(gc_min=0.0, gc_max=1.0, avoid=[], max_homopolymer=0)
    models = [CodonModel(load_run(r)) for r in settings.run]
    usage = {"host_usage": host.freq, "oas_usage": oas, "random": SYNONYM_MASK.any(0).astype(float)}
    rows = []
    for k, cds in enumerate(natural):
        protein, nat = translate(cds), codon_indices(cds)
        row = {"protein": k, "length": len(protein)}
        for name in RECOVERY_BASELINES:
            if name == "oas_most_frequent":
                pick = usage_logprobs(oas, protein).argmax(1)
            else:
                pick = baseline_design(name, protein, host, free, settings.seed + k)
            row[f"recovery:{name}"] = float((pick == nat).mean())
        for name, freq in usage.items():
            logp = usage_logprobs(freq, protein)
            row[f"natural_syn_ll:{name}"] = float(logp[np.arange(len(nat)), nat].mean())
        for model in models:
            tag = model.run.run_id
            ds = _DesignArgs(n=1, seed=settings.seed + k, sweeps=settings.sweeps)
            method = resolve_method("auto", model.mode, 1)
            (codons,) = model_designs(model, protein, ds, method, 0 * host.log_weights, free, host)
            row[f"recovery:{tag}"] = float((codon_indices("".join(codons)) == nat).mean())
            row[f"natural_syn_ll:{tag}"] = model.log_likelihoods(protein, [nat])[0]["syn_ll_per_codon"]
        rows.append(row)
    return rows


@dataclass
class _DesignArgs:
    """The decoding settings `model_designs` reads (helm design's defaults; one design)."""

    n: int = 1
    seed: int = 0
    beam_size: int = 1
    temperature: float = 1.0
    t_end: float = 0.0
    sweeps: int = 8
    mask_fraction: float = 0.15


def summarise(rows: list[dict], runs: list[str]) -> list[dict]:
    """Mean and 95 % t interval over proteins of every column, and each run minus each baseline (paired)."""
    import numpy as np

    from helm.stats import t_interval

    out = []
    for col in [c for c in rows[0] if ":" in c]:
        metric, method = col.split(":", 1)
        mean, lo, hi = t_interval([r[col] for r in rows])
        out.append({"metric": metric, "method": method, "vs": "", "mean": mean, "low": lo, "high": hi,
                    "n": len(rows)})  # fmt: skip
    for run in runs:
        for metric, others in (("recovery", RECOVERY_BASELINES), ("natural_syn_ll", USAGE_MODELS)):
            for other in others:
                diff = np.array([r[f"{metric}:{run}"] - r[f"{metric}:{other}"] for r in rows])
                mean, lo, hi = t_interval(diff)
                out.append({"metric": metric, "method": run, "vs": other, "mean": mean, "low": lo, "high": hi,
                            "n": len(rows)})  # fmt: skip
    return out


# ----------------------------------------------------------------------------------------------- trade-off
def trade_off(settings: BenchSettings, out: Path) -> list[dict]:
    """Every run's designs (a CLM: greedy, then ``n`` samples; an MLM: ``n`` annealing chains) and the baselines,
    all scored by that run (its likelihood, CAI, GC, MFE, and the property head's prediction when given)."""
    from helm.design.command import DesignSettings, design, write_record
    from helm.design.constraints import Constraints
    from helm.design.scores import Objective
    from helm.downstream.embed import run_mode
    from helm.run import read_config

    rows = []
    for run in settings.run:
        clm = run_mode(read_config(run)) == "clm"
        for method, n in (("greedy", 1), ("sample", settings.n)) if clm else (("anneal", settings.n),):
            folder = Path(run).name + (f"-{method}" if clm else "")
            ds = DesignSettings(run=run, fasta=settings.fasta, out=str(out / "designs" / folder), n=n, method=method,
                                host=settings.trade_off_host, seed=settings.seed, overwrite=True,
                                sweeps=settings.sweeps, property_head=settings.property_head,
                                no_baselines=method == "sample")  # fmt: skip
            record = design(ds, Constraints(), Objective())
            write_record(record, ds.out)
            for d in record.designs:
                label = d.method if d.source == "baseline" else f"{record.run} ({record.method})"
                rows.append({"run": record.run, "protein": d.protein, "method": label, "source": d.source,
                             "rank": d.rank, **d.scores})  # fmt: skip
    return rows


def pareto_front(points: list[tuple[float, float]]) -> list[bool]:
    """Which points no other point beats on both coordinates (both higher is better)."""
    return [not any(q[0] >= p[0] and q[1] >= p[1] and q != p for q in points) for p in points]


def pareto_figure(rows: list[dict], file: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    proteins = sorted({r["protein"] for r in rows})
    runs = list(dict.fromkeys(r["run"] for r in rows))
    fig, axes = plt.subplots(len(proteins), len(runs), figsize=(5.5 * len(runs), 4.2 * len(proteins)), squeeze=False)
    for ax, (protein, run) in zip(axes.flat, [(p, r) for p in proteins for r in runs]):
        # one panel per run: its designs and the baselines, all scored by that run's model
        mine = [r for r in rows if r["protein"] == protein and r["run"] == run]
        points = [(r["cai"], r["syn_ll_per_codon"]) for r in mine]
        front = pareto_front(points)
        methods = sorted({r["method"] for r in mine})
        for m in methods:
            xs = [(r["cai"], r["syn_ll_per_codon"]) for r in mine if r["method"] == m]
            ax.scatter(*zip(*xs), label=m, s=28)
        ax.scatter(*zip(*[p for p, f in zip(points, front) if f]), s=120, facecolors="none", edgecolors="k",
                   label="Pareto front")  # fmt: skip
        ax.set_xlabel("CAI")
        ax.set_ylabel(f"log-likelihood per codon given the protein\n({run})")
        ax.set_title(f"{protein}, scored by {run}", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(file, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------- gather
def gather_rows(files: list[str]) -> list[dict]:
    """One row per design of every designs.json (``protein_set`` = the folder above it, as the workflow lays out)."""
    rows = []
    for f in files:
        record = json.loads(Path(f).read_text())
        for d in record["designs"]:
            rows.append({"run": record["run"], "protein_set": Path(f).parent.name, "protein": d["protein"],
                         "method": d["method"], "source": d["source"], "rank": d["rank"], **d["scores"]})  # fmt: skip
    return rows


def write_table(rows: list[dict], file: Path) -> None:
    """``file`` (.csv) and the same table as Markdown beside it (helm.report.tables.write_table)."""
    import pandas as pd

    from helm.report.tables import write_table as write_frame

    write_frame(pd.DataFrame(rows), file.with_suffix(""))


def bench(settings: BenchSettings) -> dict:
    from helm.downstream.common import set_threads
    from helm.files import write_json

    out = Path(settings.out)
    set_threads(settings.threads)
    if settings.gather:
        rows = gather_rows(settings.gather)
        write_table(rows, out / "design.csv")
        return {"designs": len(rows)}
    summary: dict = {"settings": dataclasses.asdict(settings)}
    if settings.prepared:
        rows = recovery_rows(settings)
        write_table(rows, out / "recovery.csv")
        runs = [Path(r).resolve().name for r in settings.run]
        stats = summarise(rows, runs)
        write_table(stats, out / "recovery_summary.csv")
        summary["recovery"] = stats
    if settings.fasta:
        rows = trade_off(settings, out)
        keep = ["run", "protein", "method", "source", "rank", "objective", "syn_ll_per_codon", "cai", "gc",
                "gc_window_min", "gc_window_max", "mfe", "mfe_per_nt"]  # fmt: skip
        if settings.property_head:
            keep.append("property")
        write_table([{k: r.get(k) for k in keep} for r in rows], out / "tradeoff.csv")
        pareto_figure(rows, out / "pareto.png")
        summary["trade_off_designs"] = len(rows)
    write_json(out / "summary.json", summary)
    return summary


def build_parser() -> HelmParser:
    parser = HelmParser("helm design-bench", __doc__.splitlines()[0])
    add_dataclass(parser, BenchSettings, aliases={"out": ("--output",)})
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with command_errors("helm design-bench"):
        settings = from_values(BenchSettings, vars(args))
        summary = bench(settings)
    print(f"helm design-bench: {', '.join(f'{k}' for k in summary if k != 'settings')} -> {settings.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
