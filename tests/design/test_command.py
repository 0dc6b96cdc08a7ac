"""`helm design` end to end on tiny runs: every design translates exactly, keeps every constraint, and carries scores
that independent computations (python-codon-tables, ViennaRNA, the run's own forward pass) reproduce; baselines go
through the same scorer; bad input is one line and exit 2."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from helm.codons import GENETIC_CODE, STOP_CODONS, translate
from helm.design.command import main
from helm.design.constraints import Constraints, violations

RNA = pytest.importorskip("RNA", reason="the design extra (viennarna) is not installed: pip install '.[design]'")
pct = pytest.importorskip("python_codon_tables", reason="the design extra is not installed: pip install '.[design]'")
pytest.importorskip("dnachisel", reason="the design extra (dnachisel) is not installed: pip install '.[design]'")

PROTEINS = {"p1": "MASSEDVIKEFMRFKVRMEGSVNGHEFEIEGEG", "p2": "MKKKKFFFFLLLLRRGEGE"}
CONS = ["--gc-min", "0.40", "--gc-max", "0.60", "--avoid", "GGTCTC", "GAATTC", "--max-homopolymer", "5"]


def _cai(cds: str, table: dict) -> float:
    logs = [math.log(max(table[GENETIC_CODE[c]][c] / max(table[GENETIC_CODE[c]].values()), 0.01))
            for c in (cds[i : i + 3] for i in range(0, len(cds), 3)) if GENETIC_CODE[c] not in "MW*"]  # fmt: skip
    return math.exp(sum(logs) / len(logs))


def _run_design(tmp_path, run, *extra) -> dict:
    fasta = tmp_path / "p.fasta"
    fasta.write_text("".join(f">{k}\n{v}\n" for k, v in PROTEINS.items()))
    out = tmp_path / "out"
    assert main(["--run", str(run), "--fasta", str(fasta), "--out", str(out), *CONS, *extra]) == 0
    record = json.loads((out / "designs.json").read_text())
    fasta_out = (out / "designs.fasta").read_text().split()
    assert len(fasta_out) == 2 * len(record["designs"])
    return record


@pytest.mark.parametrize(("mode", "args"), [("clm", ["--method", "beam", "--n", "2"]),
                                            ("clm", ["--method", "sample", "--n", "3", "--stop"]),
                                            ("mlm", ["--method", "anneal", "--n", "2", "--sweeps", "3"])])  # fmt: skip
def test_every_design_is_exact_feasible_and_scored_independently(tmp_path, design_runs, mode, args):
    from helm.design.model import CodonModel
    from helm.design.protein import codon_indices
    from helm.run import load_run

    record = _run_design(tmp_path, design_runs[mode], *args)
    stop = "--stop" in args
    cons = Constraints(gc_min=0.4, gc_max=0.6, avoid=["GGTCTC", "GAATTC"], max_homopolymer=5)
    table = pct.get_codons_table("h_sapiens_9606")
    model = CodonModel(load_run(design_runs[mode]))
    methods = {(d["protein"], d["method"]) for d in record["designs"]}
    n = int(args[args.index("--n") + 1])
    for name in PROTEINS:
        ours = [d for d in record["designs"] if d["protein"] == name and d["source"] == "model"]
        assert sorted(d["rank"] for d in ours) == list(range(1, n + 1))  # every model design feasible here
        assert [d["rank"] for d in sorted(ours, key=lambda d: -d["scores"]["objective"])] == list(range(1, n + 1))
        for b in ("most_frequent", "host_sampling", "random", "dnachisel"):
            assert (name, b) in methods
    for d in record["designs"]:
        cds, protein = d["cds"], PROTEINS[d["protein"]]
        assert translate(cds) == protein + ("*" if stop else "")  # exact, stop codon only when asked
        assert not any(cds[i : i + 3] in STOP_CODONS for i in range(0, len(protein) * 3, 3))
        assert cds[-3:] in STOP_CODONS if stop else len(cds) == 3 * len(protein)
        assert violations(cds, cons) == []
        assert "GGTCTC" not in cds and "GAGACC" not in cds and "AAAAAA" not in cds
        s = d["scores"]
        assert s["cai"] == pytest.approx(_cai(cds, table), rel=1e-9)
        assert s["mfe"] == pytest.approx(RNA.fold_compound(cds.replace("T", "U")).mfe()[1], abs=1e-4)
        assert s["gc"] == pytest.approx((cds.count("G") + cds.count("C")) / len(cds))
        # the model's likelihood, recomputed from one forward pass (CLM) or per-position masking (MLM)
        codons = codon_indices(cds[: 3 * len(protein)])
        logp = model.codon_logprobs(codons[None])[0]
        assert s["ll"] == pytest.approx(float(logp[np.arange(len(codons)), codons].sum()), rel=1e-5)
        expected = s["syn_ll_per_codon"] + math.log(max(s["cai"], 1e-300))  # weights 1, 1, 0, 0 by default
        assert s["objective"] == pytest.approx(expected, rel=1e-9)


def test_most_frequent_baseline_has_cai_one_without_constraints(tmp_path, design_runs):
    out = tmp_path / "o"
    args = ["--run", str(design_runs["clm"]), "--protein", PROTEINS["p1"], "--out", str(out), "--gc-min", "0",
            "--gc-max", "1", "--max-homopolymer", "0", "--no-mfe", "--baselines", "most_frequent"]  # fmt: skip
    assert main(args) == 0
    record = json.loads((out / "designs.json").read_text())
    (best,) = [d for d in record["designs"] if d["method"] == "most_frequent"]
    assert best["scores"]["cai"] == pytest.approx(1.0)
    assert "mfe" not in best["scores"]


def _helm(*args: str, env_block: str | None = None) -> subprocess.CompletedProcess:
    code = "import sys; from helm.cli import main; sys.exit(main(sys.argv[1:]))"
    if env_block:  # make the module unimportable, as where the design extra is not installed
        code = f"import sys; sys.modules[{env_block!r}] = None; " + code
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(("protein", "message"), [("MKXV", "residue 3 is 'X'"), ("MKV*", "residue 4 is '*'"),
                                                  ("mkv", "residue 1 is 'm': lower case"),
                                                  ("MK V", "residue 3 is ' ': a blank")])  # fmt: skip
def test_bad_protein_is_one_line_exit_2(tmp_path, design_runs, protein, message):
    res = _helm("design", "--run", str(design_runs["clm"]), "--protein", protein, "--out", str(tmp_path / "o"))
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("helm design: error:")
    assert not (tmp_path / "o").exists()


def test_errors_for_method_mode_overwrite_and_missing_extra(tmp_path, design_runs):
    clm, out = str(design_runs["clm"]), str(tmp_path / "o")
    res = _helm("design", "--run", clm, "--protein", "MKV", "--out", out, "--method", "anneal")
    assert res.returncode == 2 and "does not apply to a CLM run" in res.stderr
    res = _helm("design", "--run", clm, "--protein", "MKV", "--out", out, "--no-mfe", "--no-baselines")
    assert res.returncode == 0, res.stderr
    before = (tmp_path / "o" / "designs.json").read_text()
    res = _helm("design", "--run", clm, "--protein", "MKVL", "--out", out, "--no-mfe")
    assert res.returncode == 2 and "exists" in res.stderr and "--overwrite" in res.stderr
    assert (tmp_path / "o" / "designs.json").read_text() == before  # nothing of the user's replaced
    res = _helm("design", "--run", clm, "--protein", "MKV", "--out", str(tmp_path / "o2"), env_block="RNA")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [res.stderr.strip()]
    assert "design extra" in res.stderr and "helm-mrna[design]" in res.stderr
    # the rest of helm works without the extra: help of design itself and another command
    assert _helm("design", "--help", env_block="RNA").returncode == 0
    assert _helm("models", env_block="python_codon_tables").returncode == 0


def test_infeasible_constraints_end_the_command(tmp_path, design_runs):
    # K and F only (AAA/AAG, TTT/TTC): GC of at least 0.6 is impossible for every design
    res = _helm("design", "--run", str(design_runs["clm"]), "--protein", "KFKFKF", "--out", str(tmp_path / "o"),
                "--gc-min", "0.6", "--no-mfe")  # fmt: skip
    assert res.returncode == 2
    assert "no model design meets the constraints" in res.stderr and "below --gc-min 0.6" in res.stderr
