"""`helm design-bench` in miniature: held-out OAS proteins of a tiny prepared corpus, the recovery and likelihood
columns against independent computations, paired summaries, the trade-off table and Pareto figure, --gather."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helm.codons import CODONS, GENETIC_CODE, translate
from helm.design.benchmark import BenchSettings, bench, pareto_front

pct = pytest.importorskip("python_codon_tables", reason="the design extra is not installed: pip install '.[design]'")
pytest.importorskip("RNA", reason="the design extra (viennarna) is not installed: pip install '.[design]'")
pytest.importorskip("dnachisel", reason="the design extra (dnachisel) is not installed: pip install '.[design]'")


def test_pareto_front_against_brute_force():
    rng = np.random.default_rng(0)
    pts = [tuple(p) for p in rng.normal(size=(40, 2)).round(1)]
    brute = [all(not (q[0] >= p[0] and q[1] >= p[1] and q != p) for q in pts) for p in pts]
    assert pareto_front(pts) == brute and any(brute)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, shared_data) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from train_utils import write_oas_txt

    from helm.prepare import prepare

    root = tmp_path_factory.mktemp("bench")
    out = root / "prep"
    prepare(train_files=[write_oas_txt(shared_data, root / "seqs.txt", n=200)], output=out, progress=False)
    return out


def test_design_bench_miniature(tmp_path, design_runs, prepared):
    from helm.design.benchmark import held_out_cds
    from helm.design.model import CodonModel
    from helm.design.protein import codon_indices
    from helm.run import load_run

    fasta = tmp_path / "real.fasta"
    fasta.write_text(">mRFP_N30\nMASSEDVIKEFMRFKVRMEGSVNGHEFEIE\n")
    out = tmp_path / "bench"
    settings = BenchSettings(run=[str(design_runs["clm"]), str(design_runs["mlm"])], prepared=str(prepared),
                             out=str(out), num_proteins=4, fasta=str(fasta), n=2, sweeps=2)  # fmt: skip
    bench(settings)
    rows = pd.read_csv(out / "recovery.csv")
    natural = held_out_cds(prepared, "test", 4)
    assert len(rows) == len(natural) >= 2
    table = pct.get_codons_table("h_sapiens_9606")
    for k, cds in enumerate(natural):
        protein = translate(cds)
        codons = [cds[i : i + 3] for i in range(0, len(cds), 3)]
        best = [max(table[aa], key=table[aa].get) for aa in protein]
        assert rows.loc[k, "recovery:most_frequent"] == pytest.approx(np.mean([a == b for a, b in zip(codons, best)]))
        degeneracy = [sum(GENETIC_CODE[c] == aa for c in CODONS) for aa in protein]
        assert rows.loc[k, "natural_syn_ll:random"] == pytest.approx(-np.mean(np.log(degeneracy)))
        for mode in ("clm", "mlm"):
            model = CodonModel(load_run(design_runs[mode]))
            want = model.log_likelihoods(protein, [codon_indices(cds)])[0]["syn_ll_per_codon"]
            assert rows.loc[k, f"natural_syn_ll:{design_runs[mode].name}"] == pytest.approx(want, rel=1e-5)
            assert 0 <= rows.loc[k, f"recovery:{design_runs[mode].name}"] <= 1
    summary = pd.read_csv(out / "recovery_summary.csv")
    clm = design_runs["clm"].name
    paired = summary[(summary["method"] == clm) & (summary["vs"] == "random") & (summary["metric"] == "recovery")]
    assert paired["mean"].iloc[0] == pytest.approx((rows[f"recovery:{clm}"] - rows["recovery:random"]).mean())
    trade = pd.read_csv(out / "tradeoff.csv")
    assert {"most_frequent", "host_sampling", "random", "dnachisel"} <= set(trade["method"])
    # the CLM: greedy and two samples; the MLM: two chains; the baselines beside each run, scored by it
    model = trade[trade["source"] == "model"]
    mlm = design_runs["mlm"].name
    expected = [f"{clm} (greedy)", f"{clm} (sample)", f"{clm} (sample)", f"{mlm} (anneal)", f"{mlm} (anneal)"]
    assert sorted(model["method"]) == sorted(expected)
    for run in (clm, mlm):
        assert (trade[(trade["run"] == run) & (trade["method"] == "most_frequent")]["cai"] == 1).all()
        assert len(trade[(trade["run"] == run) & (trade["source"] == "baseline")]) == 4
    assert (out / "pareto.png").stat().st_size > 1000
    record = out / "designs" / f"{clm}-greedy" / "designs.json"
    gathered = tmp_path / "gathered"
    bench(BenchSettings(gather=[str(record)], out=str(gathered)))
    assert len(pd.read_csv(gathered / "design.csv")) == len(json.loads(record.read_text())["designs"])
