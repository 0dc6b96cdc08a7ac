"""The downstream CLIs end to end on real data subsets, as the workflow calls them (subprocesses)."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from helm.downstream.datasets import DEFAULT_REGISTRY

from .runs import make_run

pytestmark = pytest.mark.slow  # subprocess end-to-end runs (tens of seconds each)

OAS = "pretrain/oas_parameswaran2013_heavy_100k.csv.gz"


def helm(*args, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "helm.cli", *map(str, args)], capture_output=True, text=True, timeout=timeout
    )


FAST = ["--epochs", "2", "--batch-sizes", "32", "--lrs", "1e-3", "--quiet", "--threads", "1"]


def spearman(a, b) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b)[0])


def test_embed_once_then_probe_every_head_from_the_features(tiny_runs, shared_data, tmp_path):
    """`helm embed` + `helm probe --features` gives the same JSON as `helm probe --run` (the features are the
    frozen embeddings it would compute), for the TextCNN head and the closed-form ridge probe."""
    feats = tmp_path / "mrfp.safetensors"
    res = helm("embed", "--run", tiny_runs["mlm"], "--dataset", "mrfp", "--mirror", shared_data, "--out", feats,
               "--threads", "1", "--quiet")  # fmt: skip
    assert res.returncode == 0, res.stderr
    common = ["--dataset", "mrfp", "--seed", 1, "--mirror", shared_data, "--max-train", 80, *FAST]
    for head in ("textcnn", "ridge"):
        a, b = tmp_path / f"{head}-run.json", tmp_path / f"{head}-feats.json"
        assert helm("probe", "--run", tiny_runs["mlm"], "--out", a, "--head", head, *common).returncode == 0
        res = helm("probe", "--features", feats, "--out", b, "--head", head, *common)
        assert res.returncode == 0, res.stderr
        ja, jb = json.loads(a.read_text()), json.loads(b.read_text())
        assert jb["run"] == ja["run"] == "tiny-mlm"
        # the run path embeds in float32, the file stores float16: the same model up to that rounding
        assert jb["metrics"]["spearman"] == pytest.approx(ja["metrics"]["spearman"], abs=0.02), head
        assert jb["predictions"]["test_index"] == ja["predictions"]["test_index"]
        assert jb["config"]["features"] == str(feats) and jb["config"]["head"] == head
    # ridge = sklearn Ridge on the standardised mean-pooled embeddings, alpha chosen on validation
    from safetensors.torch import load_file
    from sklearn.linear_model import Ridge

    from helm.downstream.datasets import load_dataset, subsample

    tensors = load_file(str(feats))
    x, mask = tensors["features"].float(), tensors["mask"]
    pooled = ((x * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)).double().numpy()
    data = subsample(load_dataset("mrfp", mirror=shared_data, seed=1), 80, 1)
    part = {p: data.rows[data.indices(p)] for p in ("train", "val", "test")}
    y = {p: data.targets[data.indices(p)] for p in part}
    mu, sd = pooled[part["train"]].mean(0), pooled[part["train"]].std(0) + 1e-8
    z = {p: (pooled[i] - mu) / sd for p, i in part.items()}
    jb = json.loads((tmp_path / "ridge-feats.json").read_text())
    alpha = jb["config"]["selected"]["alpha"]
    best = max(jb["config"]["grid"], key=lambda g: g["val_spearman"])
    assert best["alpha"] == alpha
    pred = Ridge(alpha=alpha).fit(z["train"], y["train"]).predict(z["test"])
    assert jb["metrics"]["spearman"] == pytest.approx(spearman(y["test"], pred), abs=1e-9)
    # features of other rows are refused, naming the fix
    res = helm("probe", "--features", feats, "--out", tmp_path / "x.json", "--dataset", "mrfp", "--mirror",
               shared_data, "--max-rows", 500, *FAST)  # fmt: skip
    assert res.returncode == 2 and "embed other rows" in res.stderr and "--max-rows" in res.stderr


@pytest.mark.parametrize("finetune, head", [("none", "textcnn"), ("lora", "linear")])
def test_probe_writes_the_contract_json(tiny_runs, shared_data, tmp_path, finetune, head):
    out = tmp_path / "probe.json"
    res = helm(
        "probe",
        "--run",
        tiny_runs["mlm"],
        "--dataset",
        "mrfp",
        "--seed",
        2,
        "--out",
        out,
        "--mirror",
        shared_data,
        "--max-train",
        60,
        "--finetune",
        finetune,
        "--head",
        head,
        *FAST,
    )
    assert res.returncode == 0, res.stderr
    payload = json.loads(out.read_text())
    assert set(payload) == {"run", "task", "seed", "metrics", "config", "predictions"}
    assert (payload["run"], payload["task"], payload["seed"]) == ("tiny-mlm", "mrfp", 2)
    m = payload["metrics"]
    # the saved test predictions are the ones scored (tables bootstrap them)
    pred = payload["predictions"]
    assert len(pred["test_pred"]) == len(pred["test_y"]) == len(pred["test_index"]) == m["n_test"]
    assert spearman(pred["test_y"], pred["test_pred"]) == pytest.approx(m["spearman"], abs=1e-9)
    assert {"spearman", "pearson", "r2", "val_spearman", "n_truncated"} <= set(m)
    assert (m["n_train"], m["n_val"], m["n_test"], m["n_train_full"]) == (60, 219, 219, 1021)
    assert payload["config"]["finetune"] == finetune and payload["config"]["head"] == head
    assert payload["config"]["selected"]["batch_size"] == 32


def test_probe_counts_truncation_or_refuses(tmp_path, shared_data):
    run = make_run(tmp_path, "short", "mlm", max_seq_len=64)  # mRFP has 226 codons
    out = tmp_path / "p.json"
    res = helm(
        "probe",
        "--run",
        run,
        "--dataset",
        "tc_riboswitch",
        "--seed",
        0,
        "--out",
        out,
        "--mirror",
        shared_data,
        "--head",
        "linear",
        *FAST,
    )
    assert res.returncode == 0, res.stderr
    n_long = int((pd.read_csv(shared_data / "downstream/Tc-Riboswitches.csv")["Sequence"].str.len() // 3 > 62).sum())
    assert json.loads(out.read_text())["metrics"]["n_truncated"] == n_long
    res = helm(
        "probe",
        "--run",
        run,
        "--dataset",
        "mrfp",
        "--seed",
        0,
        "--out",
        out,
        "--mirror",
        shared_data,
        "--overlong",
        "error",
        *FAST,
    )
    assert res.returncode == 2 and "1459 sequence(s) exceed the model's 64 tokens" in res.stderr


def test_probe_bad_inputs_give_clear_errors(tiny_runs, shared_data, tmp_path):
    # checkpoint/tokenizer mismatch: a nucleotide tokenizer next to a codon model
    from helm.tokenizers import create_tokenizer

    bad_run = tmp_path / "bad"
    for sub in ("model", "tokenizer"):
        (bad_run / sub).mkdir(parents=True)
    for f in (tiny_runs["mlm"] / "model").iterdir():
        (bad_run / "model" / f.name).write_bytes(f.read_bytes())
    create_tokenizer("nuc").save(bad_run / "tokenizer")
    (bad_run / "config.yaml").write_text("mode: mlm\n")
    res = helm("probe", "--run", bad_run, "--dataset", "mrfp", "--out", tmp_path / "x.json", "--mirror", shared_data)
    assert res.returncode == 2 and "checkpoint/tokenizer mismatch" in res.stderr
    # a registry entry pointing at a column that does not exist
    reg = yaml.safe_load(DEFAULT_REGISTRY.read_text())
    reg["datasets"]["mrfp"]["target_column"] = "Expression"
    (tmp_path / "reg.yaml").write_text(yaml.safe_dump(reg))
    res = helm(
        "probe",
        "--run",
        tiny_runs["mlm"],
        "--dataset",
        "mrfp",
        "--out",
        tmp_path / "x.json",
        "--mirror",
        shared_data,
        "--registry",
        tmp_path / "reg.yaml",
    )
    assert res.returncode == 2 and "mRFP_Expression.csv: target_column 'Expression'" in res.stderr
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize("kind", ["kmer-ridge", "tfidf-ridge", "onehot-textcnn"])
def test_baselines(shared_data, tmp_path, kind):
    out = tmp_path / "b.json"
    extra = FAST if kind == "onehot-textcnn" else ["--alphas", "0.1", "10"]
    res = helm(
        "baseline",
        "--kind",
        kind,
        "--dataset",
        "cov_degradation",
        "--seed",
        0,
        "--out",
        out,
        "--mirror",
        shared_data,
        "--max-train",
        300,
        *extra,
    )
    assert res.returncode == 0, res.stderr
    payload = json.loads(out.read_text())
    assert payload["run"] == f"baseline-{kind}" and payload["task"] == "cov_degradation"
    grid = payload["config"]["grid"]
    best = max(grid, key=lambda g: g["val_spearman"])
    assert payload["metrics"]["val_spearman"] == pytest.approx(best["val_spearman"])  # chosen on validation
    assert -1 <= payload["metrics"]["spearman"] <= 1


def test_annotate_and_cluster(trained_clm, shared_data, tmp_path):
    """Both on the really trained CLM run (CLM framing: labels start after <cls>, no <eos>)."""
    out = tmp_path / "a.json"
    res = helm(
        "annotate",
        "--run",
        trained_clm[0],
        "--out",
        out,
        "--mirror",
        shared_data,
        "--num-rows",
        80,
        "--epochs",
        3,
        "--quiet",
    )
    assert res.returncode == 0, res.stderr
    payload = json.loads(out.read_text())
    m = payload["metrics"]
    assert payload["task"] == "region_annotation" and m["n_rows"] == 80
    assert 0 <= m["macro_f1"] <= 1 and {"acc_cdr3", "acc_fwr3"} <= set(m)
    assert payload["config"]["codons_per_region"]["fwr3"] > 0

    out = tmp_path / "c.json"
    res = helm(
        "cluster",
        "--run",
        trained_clm[0],
        "--out",
        out,
        "--reference",
        shared_data / OAS,
        "--num-proteins",
        4,
        "--variants",
        3,
    )
    assert res.returncode == 0, res.stderr
    m = json.loads(out.read_text())["metrics"]
    assert m["num_proteins"] == 4 and m["num_sequences"] == 12 and -1 <= m["silhouette_euclidean"] <= 1


def test_probe_on_a_really_trained_run(trained_clm, shared_data, tmp_path):
    """A checkpoint from a real `train.py` run (CLM framing: no <eos>) through frozen TextCNN probing."""
    out = tmp_path / "probe.json"
    res = helm(
        "probe",
        "--run",
        trained_clm[0],
        "--dataset",
        "tc_riboswitch",
        "--seed",
        0,
        "--out",
        out,
        "--mirror",
        shared_data,
        *FAST,
    )
    assert res.returncode == 0, res.stderr
    payload = json.loads(out.read_text())
    assert payload["run"] == "oas-clm" and payload["config"]["mode"] == "clm"
    assert payload["metrics"]["n_test"] == 54 and -1 <= payload["metrics"]["spearman"] <= 1
