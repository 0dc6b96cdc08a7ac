"""`helm design --property-head`: a head saved by the real `helm probe --save-head` (mRFP, tiny run) scores every
design and baseline with what the head gives when applied by hand to that CDS's embedding; bad head files are one
line, exit 2."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from helm.codons import CLS_ID, EOS_ID
from helm.design.command import main as design_main
from helm.downstream.probe import main as probe_main

from .test_command import _helm

pytest.importorskip("RNA", reason="the design extra (viennarna) is not installed: pip install '.[design]'")
pytest.importorskip("python_codon_tables", reason="the design extra is not installed: pip install '.[design]'")
pytest.importorskip("dnachisel", reason="the design extra (dnachisel) is not installed: pip install '.[design]'")

PROTEIN = "MASSEDVIKEFMRFKVRMEGSVNGHEFEIEGEG"  # the start of mRFP
FAST = ["--max-train", "80", "--epochs", "3", "--batch-sizes", "32", "--lrs", "1e-2", "--quiet", "--threads", "1"]


def _probe(run: Path, head: str, out: Path, shared_data: Path, *extra: str) -> tuple[dict, Path]:
    file = out / f"{head}.head"
    args = ["--run", str(run), "--dataset", "mrfp", "--mirror", str(shared_data), "--seed", "1", "--head", head,
            "--out", str(out / f"{head}.json"), "--save-head", str(file), *FAST, *extra]  # fmt: skip
    assert probe_main(args) == 0
    return json.loads((out / f"{head}.json").read_text()), file


@pytest.fixture(scope="module")
def heads(design_runs, shared_data, tmp_path_factory) -> dict[str, tuple[dict, Path]]:
    out = tmp_path_factory.mktemp("heads")
    return {head: _probe(design_runs["mlm"], head, out, shared_data) for head in ("linear", "ridge")}


def _mrfp(shared_data: Path):
    from helm.downstream.datasets import load_dataset, subsample

    return subsample(load_dataset("mrfp", mirror=shared_data, seed=1), 80, 1)


def _pooled(run, cds_list: list[str]) -> np.ndarray:
    """Mean of the run's last hidden states over <cls> codons <eos> (an MLM run's framing), one CDS at a time."""
    vocab = run.tokenizer.vocab.index
    out = []
    with torch.no_grad():
        for cds in cds_list:
            ids = [CLS_ID, *(vocab[cds[i : i + 3]] for i in range(0, len(cds) - 2, 3)), EOS_ID]
            hidden = run.model.embed(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.bool))[0]
            out.append(hidden.double().mean(0).numpy())
    return np.stack(out)


def test_saved_head_reproduces_the_probe_and_scores_every_design_by_hand(tmp_path, design_runs, heads, shared_data):
    from sklearn.linear_model import Ridge

    from helm.design.property import PropertyScorer
    from helm.run import load_run

    run = load_run(design_runs["mlm"])
    data = _mrfp(shared_data)
    test = data.indices("test")
    for head, (payload, file) in heads.items():
        # the saved head is the selected one: it gives the probe's own test predictions
        pred = PropertyScorer(file).predict([data.sequences[i] for i in test])
        assert pred == pytest.approx(payload["predictions"]["test_pred"], rel=1e-4, abs=1e-4), head
    out = tmp_path / "o"
    args = ["--run", str(design_runs["mlm"]), "--protein", PROTEIN, "--out", str(out), "--n", "2", "--sweeps", "2",
            "--no-mfe", "--gc-min", "0", "--gc-max", "1", "--property-head", str(heads["ridge"][1]),
            "--property-weight", "0.5"]  # fmt: skip
    assert design_main(args) == 0
    record = json.loads((out / "designs.json").read_text())
    designs = record["designs"]
    assert {d["source"] for d in designs} == {"model", "baseline"} and len(designs) == 6
    assert record["property_head"]["probe_head"] == "ridge" and record["property_head"]["task"] == "mrfp"
    # ridge, independently: sklearn refitted on the standardised mean-pooled training embeddings, the probe's alpha
    train = data.indices("train")
    x_train = _pooled(run, [data.sequences[i] for i in train])
    mu, sd = x_train.mean(0), x_train.std(0) + 1e-8
    alpha = heads["ridge"][0]["config"]["selected"]["alpha"]
    ridge = Ridge(alpha=alpha).fit((x_train - mu) / sd, data.targets[train])
    x_designs = _pooled(run, [d["cds"] for d in designs])
    expected = ridge.predict((x_designs - mu) / sd)
    for d, want in zip(designs, expected):
        s = d["scores"]
        assert s["property"] == pytest.approx(want, rel=1e-6), d["method"]
        assert s["objective"] == pytest.approx(s["syn_ll_per_codon"] + math.log(s["cai"]) + 0.5 * want, rel=1e-6)
    ours = sorted((d for d in designs if d["source"] == "model"), key=lambda d: -d["scores"]["objective"])
    assert [d["rank"] for d in ours] == [1, 2]
    # the trained linear head, by hand: mean-pooled embedding . w + b, de-standardised by the training targets
    out2 = tmp_path / "o2"
    assert design_main([*args[:5], str(out2), *args[6:-4], "--property-head", str(heads["linear"][1])]) == 0
    designs = json.loads((out2 / "designs.json").read_text())["designs"]
    state = torch.load(heads["linear"][1], weights_only=True)["state"]
    w, b = state["out.weight"].double().numpy()[0], float(state["out.bias"])
    y = data.targets[train]
    for d, x in zip(designs, _pooled(run, [d["cds"] for d in designs])):
        assert d["scores"]["property"] == pytest.approx((x @ w + b) * y.std() + y.mean(), rel=1e-5)
    assert record["objective"]["property_weight"] == 0.5


def _one_line_exit_2(res, *fragments: str) -> None:
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("helm "), res.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


def test_missing_foreign_or_stale_head_is_one_line_exit_2(tmp_path, design_runs, shared_data):
    run = str(design_runs["mlm"])

    def design(head: Path, *extra: str):
        return _helm("design", "--run", run, "--protein", "MKV", "--out", str(tmp_path / "o"), "--no-mfe",
                     *(["--property-head", str(head)] if head else []), *extra)  # fmt: skip

    _one_line_exit_2(design(tmp_path / "nope.head"), "nope.head", "no such probe head file")
    foreign = tmp_path / "foreign.head"
    torch.save({"weights": torch.zeros(3)}, foreign)
    _one_line_exit_2(design(foreign), "foreign.head", "not a helm probe head")
    text = tmp_path / "text.head"
    text.write_text("not a head\n")
    _one_line_exit_2(design(text), "text.head", "not a readable zip archive")
    _one_line_exit_2(design(None, "--property-weight", "1"), "--property_weight", "needs --property-head")
    # a head of a run that was retrained afterwards (other weights, same shapes), then of a run that is gone
    copy = tmp_path / "copy-run"
    shutil.copytree(run, copy)
    _, head = _probe(copy, "ridge", tmp_path, shared_data)
    from downstream.runs import make_run

    shutil.rmtree(copy)
    make_run(tmp_path, "copy-run", "mlm", seed=7)
    _one_line_exit_2(design(head), "ridge.head", "changed since this head was trained")
    shutil.rmtree(copy)
    _one_line_exit_2(design(head), "ridge.head", "copy-run is missing")
    assert not (tmp_path / "o").exists()
    # helm probe refuses to save the head of a fine-tuned backbone before any work
    res = _helm("probe", "--run", run, "--dataset", "mrfp", "--mirror", str(shared_data), "--out",
                str(tmp_path / "p.json"), "--finetune", "full", "--save-head", str(tmp_path / "x.head"))  # fmt: skip
    _one_line_exit_2(res, "--save-head", "frozen probe")
