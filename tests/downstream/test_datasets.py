"""Registry validation and dataset loading on the real CodonBERT / iCodon files."""

from __future__ import annotations

import re

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
    split_indices,
    subsample,
)


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


def test_icodon_split_is_grouped_by_gene_and_seeded(shared_data):
    data = load_dataset("icodon", mirror=shared_data)
    genes = pd.read_csv(data.path, usecols=["gene_id"])["gene_id"].to_numpy()
    parts = [set(genes[data.split == p]) for p in ("train", "val", "test")]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    n_genes = len(set(genes))
    assert abs(len(parts[0]) / n_genes - 0.8) < 0.01 and abs(len(parts[2]) / n_genes - 0.1) < 0.01
    again = load_dataset("icodon", mirror=shared_data)
    assert (again.split == data.split).all()


def test_random_split_fractions_and_seed():
    a = split_indices(1000, [0.8, 0.1, 0.1], seed=3)
    assert [(a == p).sum() for p in ("train", "val", "test")] == [800, 100, 100]
    assert (a == split_indices(1000, [0.8, 0.1, 0.1], seed=3)).all()
    assert (a != split_indices(1000, [0.8, 0.1, 0.1], seed=4)).any()


def test_mlos_random_split(shared_data):
    data = load_dataset("mlos", mirror=shared_data)
    assert len(data.sequences) == 167 and set(data.split) == {"train", "val", "test"}


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
