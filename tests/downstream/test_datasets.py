"""Registry validation and dataset loading on the real CodonBERT / iCodon files."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from helm.downstream.datasets import (
    DEFAULT_REGISTRY,
    DatasetError,
    RegistryError,
    load_dataset,
    load_registry,
    merge_groups,
    similar_pairs,
    similarity_groups,
    split_indices,
    subsample,
)

requires_mmseqs = pytest.mark.skipif(
    shutil.which("mmseqs") is None,
    reason="MMseqs2 ('mmseqs') is not installed: `make system-deps` (root), apt-get install mmseqs2 or "
    "conda install -c bioconda mmseqs2",
)
# labels of the split before per-seed splits existed (old code at downstream seed 0, registry seed 0):
# sha256 of ",".join(labels), computed with the previous helm/downstream/datasets.py on the same files
OLD_SPLIT_SHA = {
    "mlos": ((134, 16, 17), "284379338358b7dbe5032328ac8408d012c4cf2a8342774256a420071146deff"),
    "icodon": ((6046, 738, 792), "c2e786c58b73143e0549c923109a6b6ee2274f3bf5dec0ede2749ce575b7cf06"),
}
OLD_RANDOM = {
    "mlos": {"random": [0.8, 0.1, 0.1], "seed": 0},
    "icodon": {"random": [0.8, 0.1, 0.1], "seed": 0, "group_column": "gene_id"},
}


def manifest_sha256(shared_data) -> dict[str, str]:
    """file path -> sha256 as written in the data MANIFEST (an independent source for the registry)."""
    text = (shared_data / "MANIFEST.md").read_text()
    out, current = {}, None
    for line in text.splitlines():
        m = re.match(r"### (\S+)", line)
        if m:
            current = m.group(1)
        m = re.search(r"sha256: `([0-9a-f]{64})`", line)
        if m and current:
            out[current] = m.group(1)
    return out


def write_registry(tmp_path, entries: dict) -> str:
    path = tmp_path / "reg.yaml"
    path.write_text(yaml.safe_dump({"datasets": entries}))
    return str(path)


def base_entry(file: str) -> dict:
    return {
        "file": file,
        "sequence_column": "Sequence",
        "target_column": "Value",
        "task": "regression",
        "metric": "spearman",
        "split": {"column": "Split"},
        "alphabet": "rna",
        "sequence_type": "cds",
    }


def test_registry_entries_are_valid_and_match_manifest(shared_data):
    specs = load_registry()
    assert {"mrfp", "tc_riboswitch", "cov_degradation", "mlos", "icodon", "fungal", "ecoli"} <= set(specs)
    sums = manifest_sha256(shared_data)
    for spec in specs.values():
        if spec.available:
            assert sums[spec.file] == spec.sha256, spec.name
        else:
            assert spec.sha256 is None and spec.url and spec.note  # never an invented checksum


@pytest.mark.parametrize(
    "name, n_rows, split_counts",
    [
        ("mrfp", 1459, (1021, 219, 219)),
        ("tc_riboswitch", 355, (248, 53, 54)),
        ("cov_degradation", 2400, (1600, 400, 400)),
    ],
)
def test_load_predefined_split_matches_file(shared_data, name, n_rows, split_counts):
    data = load_dataset(name, mirror=shared_data)
    raw = pd.read_csv(data.path)
    assert len(data.sequences) == n_rows
    assert tuple(int((data.split == p).sum()) for p in ("train", "val", "test")) == split_counts
    assert (data.split == raw["Split"].to_numpy()).all()
    np.testing.assert_array_equal(data.targets, raw["Value"].to_numpy())
    assert data.sequences[0] == raw["Sequence"][0].replace("U", "T")
    assert all(set(s) <= set("ACGT") for s in data.sequences)


def registry_with_split(tmp_path, name: str, split: dict) -> str:
    """A copy of the real registry entry ``name`` with another split."""
    entry = yaml.safe_load(DEFAULT_REGISTRY.read_text())["datasets"][name]
    return write_registry(tmp_path, {name: entry | {"split": split}})


def digest(labels: np.ndarray) -> str:
    return hashlib.sha256(",".join(labels).encode()).hexdigest()


def disjoint_parts(keys: np.ndarray, split: np.ndarray) -> bool:
    """True when no key (gene, cluster) has rows in two parts."""
    return pd.Series(split).groupby(pd.Series(keys)).nunique().max() == 1


@pytest.mark.parametrize("name", ["mlos", "icodon"])
def test_random_split_seed_zero_is_the_old_split_and_other_seeds_redraw(shared_data, tmp_path, name):
    reg = registry_with_split(tmp_path, name, OLD_RANDOM[name])
    data = {s: load_dataset(name, registry=reg, mirror=shared_data, seed=s) for s in (0, 1, 2)}
    counts, sha = OLD_SPLIT_SHA[name]
    assert tuple(data[0].stats[f"n_{p}"] for p in ("train", "val", "test")) == counts
    assert digest(data[0].split) == sha  # downstream seed 0 = the split every seed used before
    assert data[0].split_info == {"split": "random", "split_seed": 0}
    assert data[2].split_info == {"split": "random", "split_seed": 2}
    assert (data[0].split != data[1].split).any() and (data[1].split != data[2].split).any()
    again = load_dataset(name, registry=reg, mirror=shared_data, seed=1)
    assert (again.split == data[1].split).all()  # reproducible per seed
    if name == "icodon":
        genes = pd.read_csv(data[1].path, usecols=["gene_id"])["gene_id"].to_numpy()
        assert all(disjoint_parts(genes, d.split) for d in data.values())


def test_split_seed_is_registry_seed_plus_downstream_seed(shared_data, tmp_path):
    reg = registry_with_split(tmp_path, "mlos", {"random": [0.8, 0.1, 0.1], "seed": 5})
    data = load_dataset("mlos", registry=reg, mirror=shared_data, seed=2)
    assert data.split_info == {"split": "random", "split_seed": 7}
    assert (data.split == split_indices(167, [0.8, 0.1, 0.1], seed=7)).all()


def test_predefined_split_ignores_the_seed(shared_data):
    a = load_dataset("mrfp", mirror=shared_data, seed=0)
    b = load_dataset("mrfp", mirror=shared_data, seed=3)
    assert (a.split == b.split).all()
    assert a.split_info == b.split_info == {"split": "predefined", "split_seed": None}


def linclust_file(sequences: list[str], min_seq_id: float, coverage: float, tmp: Path) -> pd.DataFrame:
    """The test's own `mmseqs easy-linclust` run: the clusters file (rep, member) with row-sequence names."""
    distinct = list(dict.fromkeys(sequences))
    (tmp / "in.fasta").write_text("".join(f">seq{k}\n{s}\n" for k, s in enumerate(distinct)))
    subprocess.run(
        ["mmseqs", "easy-linclust", tmp / "in.fasta", tmp / "res", tmp / "work", "--min-seq-id", str(min_seq_id)]
        + ["-c", str(coverage), "--cov-mode", "0", "--threads", "1", "-v", "1"],
        check=True,
        capture_output=True,
    )
    clusters = pd.read_csv(tmp / "res_cluster.tsv", sep="\t", header=None, names=["rep", "member"])
    assert sorted(clusters["member"]) == sorted(f"seq{k}" for k in range(len(distinct)))  # none lost
    return clusters.assign(sequence=[distinct[int(m[3:])] for m in clusters["member"]])


@requires_mmseqs
@pytest.mark.parametrize("name", ["mlos", "icodon"])
def test_similarity_split_keeps_every_linclust_cluster_in_one_part(shared_data, tmp_path, name):
    spec = load_registry()[name]
    assert "similarity" in spec.split  # the registry's choice for both (config/datasets.yaml)
    data = {s: load_dataset(name, mirror=shared_data, seed=s) for s in (0, 1)}
    clusters = linclust_file(data[0].sequences, spec.split["min_seq_id"], spec.split["coverage"], tmp_path)
    cluster_of = dict(zip(clusters["sequence"], clusters["rep"]))
    row_cluster = np.array([cluster_of[s] for s in data[0].sequences])
    n_clusters = clusters["rep"].nunique()
    for seed, d in data.items():
        assert disjoint_parts(row_cluster, d.split), f"a cluster spans two parts (seed {seed})"
        assert d.split_info["split"] == "similarity" and d.split_info["split_seed"] == seed
        # groups = linclust clusters merged through the all-vs-all pairs (test below): never more of them
        assert d.split_info["n_clusters"] <= n_clusters
    if name == "icodon":  # genes stay whole too; groups = clusters merged through shared genes
        genes = pd.read_csv(data[0].path, usecols=["gene_id"])["gene_id"].to_numpy()
        assert all(disjoint_parts(genes, d.split) for d in data.values())
        assert data[0].split_info["n_groups"] <= data[0].split_info["n_clusters"]
    else:
        assert 60 <= n_clusters <= 80  # linclust: measured 70 at min_seq_id 0.95
    assert (data[0].split != data[1].split).any()  # re-drawn per downstream seed
    again = load_dataset(name, mirror=shared_data, seed=1)
    assert (again.split == data[1].split).all()  # deterministic per seed (mmseqs re-run)


def hamming_identity(sequences: list[str]) -> np.ndarray:
    """[N, N] share of equal positions between equal-length sequences (0 for different lengths). MLOS rows are
    synonymous codon variants of two proteins (1,704 and 1,701 nt), so this is their alignment identity."""
    arr = np.array([np.frombuffer(s.encode(), dtype=np.uint8) for s in sequences], dtype=object)
    lengths = np.array([len(s) for s in sequences])
    ident = np.zeros((len(sequences), len(sequences)))
    for i in range(len(sequences)):
        same = np.nonzero(lengths == lengths[i])[0]
        ident[i, same] = (np.stack(arr[same]) == arr[i]).mean(1)
    return ident


@requires_mmseqs
def test_similarity_split_is_leak_free_at_its_threshold(shared_data):
    """No val or test row has a training row at >= min_seq_id identity. Linclust alone (greedy) left such rows:
    at 0.95 over seeds 0-19, 14 of 315 MLOS test rows (seeds 1, 6, 7, 10, 12, 13, 16) and 18 val rows (seeds 3,
    4, 9, 12, 14, 16, 19), measured with this identity. Independent check: the Hamming identity of the codon
    variants, which finds exactly the pairs mmseqs finds (163 at 0.95)."""
    spec = load_registry()["mlos"]
    threshold, coverage, fractions = spec.split["min_seq_id"], spec.split["coverage"], spec.split["similarity"]
    loaded = {s: load_dataset("mlos", mirror=shared_data, seed=s) for s in (1, 3)}  # leaked test / val before
    seqs = loaded[1].sequences
    ident = hamming_identity(seqs)

    def leaks(split: np.ndarray) -> dict[str, int]:
        train = split == "train"
        return {p: int((ident[np.ix_(split == p, train)] >= threshold).any(1).sum()) for p in ("val", "test")}

    for seed, d in loaded.items():
        assert leaks(d.split) == {"val": 0, "test": 0}, f"seed {seed}"
    brute = {(i, j) for i, j in zip(*np.nonzero(np.triu(ident >= threshold, 1)))}
    assert set(map(tuple, similar_pairs(seqs, threshold, coverage, "mlos").tolist())) == brute
    groups, n_pairs = similarity_groups(seqs, threshold, coverage, "mlos")
    assert n_pairs == len(brute) == loaded[1].split_info["n_similar_pairs"]
    assert loaded[1].split_info["n_clusters"] == len(np.unique(groups))
    for seed in range(20):  # every seed's split is a cut of these groups (what load_dataset does)
        split = split_indices(len(seqs), fractions, seed, groups)
        if seed in loaded:
            assert (split == loaded[seed].split).all()
        assert leaks(split) == {"val": 0, "test": 0}, f"seed {seed}"
        assert len(set(groups[split == "train"].tolist())) == round(0.8 * len(np.unique(groups)))  # counts groups


@requires_mmseqs
def test_similarity_split_with_too_few_clusters_says_so(shared_data, tmp_path):
    # MLOS = codon variants of two HA proteins: at 50% identity all 167 rows form one group (13,861 pairs)
    reg = registry_with_split(tmp_path, "mlos", {"similarity": [0.8, 0.1, 0.1], "min_seq_id": 0.5, "coverage": 0.8})
    with pytest.raises(DatasetError, match=r"MLOS\.csv: the val split is empty \(split=similarity.*n_clusters=1,"):
        load_dataset("mlos", registry=reg, mirror=shared_data)


def test_similarity_split_without_mmseqs_says_how_to_install(shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # a real PATH without mmseqs
    with pytest.raises(DatasetError) as err:
        load_dataset("mlos", mirror=shared_data)
    msg = str(err.value)
    assert "\n" not in msg and "MLOS.csv" in msg and "'mmseqs' is not on PATH" in msg
    assert "apt-get install mmseqs2" in msg and "conda install -c bioconda mmseqs2" in msg


def test_merge_groups_matches_brute_force_components():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 12, 40), rng.integers(0, 15, 40).astype(str)
    got = merge_groups(a, b)
    # brute force: grow each component until no row outside it shares a label with it
    comp = np.full(40, -1)
    for start in range(40):
        if comp[start] >= 0:
            continue
        members = {start}
        while True:
            grown = {j for j in range(40) if any(a[j] == a[i] or b[j] == b[i] for i in members)}
            if grown == members:
                break
            members = grown
        comp[list(members)] = start
    assert (pd.Series(got).groupby(comp).nunique() == 1).all()
    assert (pd.Series(comp).groupby(got).nunique() == 1).all()


def test_random_split_fractions_and_seed():
    a = split_indices(1000, [0.8, 0.1, 0.1], seed=3)
    assert [(a == p).sum() for p in ("train", "val", "test")] == [800, 100, 100]
    assert (a == split_indices(1000, [0.8, 0.1, 0.1], seed=3)).all()
    assert (a != split_indices(1000, [0.8, 0.1, 0.1], seed=4)).any()


@pytest.mark.parametrize(
    "split, message",
    [
        ({"random": [0.8, 0.1, 0.1], "similarity": [0.8, 0.1, 0.1]}, "expected exactly one of"),
        ({"similarity": [0.8, 0.1, 0.1], "coverage": 0.8}, "similarity split needs min_seq_id"),
        ({"similarity": [0.8, 0.1, 0.1], "min_seq_id": 0.9}, "similarity split needs coverage"),
        ({"similarity": [0.8, 0.1, 0.1], "min_seq_id": 1.5, "coverage": 0.8}, r"min_seq_id must be .*\(0, 1\]"),
        ({"similarity": [0.8, 0.1, 0.1], "min_seq_id": 0.9, "coverage": 0}, "coverage must be"),
        ({"similarity": [0.8, 0.1, 0.1], "min_seq_id": "high", "coverage": 0.8}, "min_seq_id must be"),
        ({"similarity": [0.7, 0.1, 0.1], "min_seq_id": 0.9, "coverage": 0.8}, "similarity fractions must sum to 1"),
        ({"random": [0.8, 0.1, 0.1], "min_seq_id": 0.9}, r"unknown random split key\(s\) \['min_seq_id'\]"),
        ({"column": "Split", "seed": 1}, r"unknown column split key\(s\) \['seed'\]"),
        ({"random": [0.8, 0.1, 0.1], "seed": -1}, "seed must be a non-negative integer"),
        ({"similarity": [0.8, 0.1, 0.1], "min_seq_id": 0.9, "coverage": 0.8, "seed": 1.5}, "seed must be"),
    ],
)
def test_registry_rejects_bad_splits(tmp_path, split, message):
    with pytest.raises(RegistryError, match=r"reg\.yaml: dataset 'toy', key 'split': " + message) as err:
        load_registry(write_registry(tmp_path, {"toy": base_entry("x.csv") | {"split": split}}))
    assert "\n" not in str(err.value)


def helm_cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "helm.cli", *map(str, args)], capture_output=True, text=True, timeout=600, env=env
    )


@requires_mmseqs
@pytest.mark.slow  # subprocess runs of `helm baseline` and `helm probe`
def test_cli_passes_the_downstream_seed_and_records_the_split(shared_data, tmp_path, tiny_runs):
    for seed in (0, 1):
        out = tmp_path / f"b{seed}.json"
        res = helm_cli(
            "baseline", "--kind", "kmer-ridge", "--dataset", "mlos", "--seed", seed, "--out", out,
            "--mirror", shared_data, "--ks", "3", "--alphas", "1",
        )  # fmt: skip
        assert res.returncode == 0, res.stderr
        payload = json.loads(out.read_text())
        expect = load_dataset("mlos", mirror=shared_data, seed=seed)
        assert {k: payload["metrics"][k] for k in expect.stats} == expect.stats
        assert {k: payload["config"][k] for k in expect.split_info} == expect.split_info
        assert payload["config"]["split"] == "similarity" and payload["config"]["split_seed"] == seed
    out = tmp_path / "p.json"
    res = helm_cli(
        "probe", "--run", tiny_runs["mlm"], "--dataset", "mlos", "--seed", 1, "--out", out, "--mirror", shared_data,
        "--epochs", "1", "--batch-sizes", "32", "--lrs", "1e-3", "--quiet", "--threads", "1",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    payload = json.loads(out.read_text())
    expect = load_dataset("mlos", mirror=shared_data, seed=1)
    assert {k: payload["metrics"][k] for k in expect.stats} == expect.stats
    assert {k: payload["config"][k] for k in expect.split_info} == expect.split_info


@pytest.mark.slow  # a subprocess run of `helm baseline`
def test_cli_without_mmseqs_is_a_one_line_error(shared_data, tmp_path):
    out = tmp_path / "b.json"
    env = dict(os.environ, PATH=str(tmp_path))
    res = helm_cli(
        "baseline", "--kind", "kmer-ridge", "--dataset", "mlos", "--seed", 0, "--out", out, "--mirror", shared_data,
        env=env,
    )  # fmt: skip
    assert res.returncode == 2 and not out.exists()
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("helm baseline: error: ") and "apt-get install mmseqs2" in lines[0]


def test_unavailable_dataset_says_why(shared_data):
    with pytest.raises(DatasetError, match="not available"):
        load_dataset("fungal", mirror=shared_data)


def test_registry_rejects_unknown_key_and_missing_key(tmp_path):
    bad = base_entry("x.csv") | {"colour": "red"}
    with pytest.raises(RegistryError, match=r"reg\.yaml.*'toy'.*'colour'.*unknown key"):
        load_registry(write_registry(tmp_path, {"toy": bad}))
    missing = base_entry("x.csv")
    del missing["target_column"]
    with pytest.raises(RegistryError, match=r"'toy'.*'target_column'.*missing"):
        load_registry(write_registry(tmp_path, {"toy": missing}))
    with pytest.raises(RegistryError, match="sum to 1"):
        load_registry(write_registry(tmp_path, {"toy": base_entry("x.csv") | {"split": {"random": [0.5, 0.1, 0.1]}}}))


def test_missing_and_non_numeric_target_column(tmp_path):
    csv = tmp_path / "toy.csv"
    csv.write_text("Sequence,Value,Split\nAUGGCC,1.5,train\nAUGAAA,abc,val\nAUGCCC,2,test\n")
    reg = write_registry(
        tmp_path, {"toy": base_entry("toy.csv"), "nocol": base_entry("toy.csv") | {"target_column": "Y"}}
    )
    with pytest.raises(DatasetError, match=r"toy\.csv: target column 'Value' has 1 non-numeric.*line 3 \('abc'\)"):
        load_dataset("toy", registry=reg, mirror=tmp_path)
    with pytest.raises(DatasetError, match=r"toy\.csv: target_column 'Y'.*not a column"):
        load_dataset("nocol", registry=reg, mirror=tmp_path)


def test_bad_sequence_and_split_rows_name_the_line(tmp_path):
    csv = tmp_path / "toy.csv"
    csv.write_text("Sequence,Value,Split\nAUGGCC,1.5,train\nAUGXXA,1,val\nAUGCCC,2,test\n")
    reg = write_registry(tmp_path, {"toy": base_entry("toy.csv")})
    with pytest.raises(DatasetError, match=r"toy\.csv, line 3: .*invalid_characters"):
        load_dataset("toy", registry=reg, mirror=tmp_path)
    csv.write_text("Sequence,Value,Split\nAUGGCC,1.5,train\nAUGAAA,1,holdout\nAUGCCC,2,test\n")
    with pytest.raises(DatasetError, match=r"line 3: split 'holdout'"):
        load_dataset("toy", registry=reg, mirror=tmp_path)


def test_a_spreadsheet_export_loads_like_the_plain_file(tmp_path):
    plain = "Sequence,Value,Split\nAUGGCC,1.5,train\nAUGAAA,1,val\nAUGCCC,2,test\n"
    (tmp_path / "toy.csv").write_text(plain)
    reg = write_registry(tmp_path, {"toy": base_entry("toy.csv")})
    want = load_dataset("toy", registry=reg, mirror=tmp_path)
    # Excel set to a semicolon list separator: byte-order mark, semicolons, CRLF, a blank after a header name
    excel = "\ufeffSequence ;Value;Split\r\nAUGGCC;1.5;train\r\nAUGAAA;1;val\r\nAUGCCC;2;test\r\n"
    (tmp_path / "toy.csv").write_bytes(excel.encode())
    got = load_dataset("toy", registry=reg, mirror=tmp_path)
    assert got.sequences == want.sequences and got.targets.tolist() == want.targets.tolist()
    assert got.split.tolist() == want.split.tolist()
    (tmp_path / "toy.csv").write_text(plain.replace("AUGAAA", "NNNNNN"))
    with pytest.raises(DatasetError, match=r"toy\.csv, line 3: .*uninformative"):
        load_dataset("toy", registry=reg, mirror=tmp_path)


def test_subsample_keeps_eval_parts(shared_data):
    data = load_dataset("mrfp", mirror=shared_data)
    small = subsample(data, 100, seed=0)
    assert (small.split == "train").sum() == 100
    assert (small.split == "test").sum() == (data.split == "test").sum()
    # every kept row is an original row with its own target
    pairs = set(zip(data.sequences, data.targets, data.split))
    assert set(zip(small.sequences, small.targets, small.split)) <= pairs


def test_default_registry_path_exists():
    assert DEFAULT_REGISTRY.is_file()
