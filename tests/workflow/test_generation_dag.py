"""Dry runs of the real Snakefile: every generate job of a grid embeds with one embedder (docs/ARCHITECTURE.md,
"Workflow"): the ESM-2 checkpoint of `generation.esm`, else the reference encoder trained once."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml
from wf_utils import job_counts, load_config, requests, snakemake


def two_clm_config(tmp_path: Path, **generation) -> Path:
    """The smoke config with a grid of two CLM runs (and one MLM run, which generate skips), two seeds."""
    config = load_config("config/smoke.yaml")
    config["grids"] = {
        "clm": {"arch": ["gpt2"], "mode": ["clm"], "size": ["tiny"], "loss": ["xe", "hxe0.4"], "tokenizer": ["3mer"]},
        "mlm": {"arch": ["gpt2"], "mode": ["mlm"], "size": ["tiny"], "loss": ["xe"], "tokenizer": ["3mer"]},
    }
    config["downstream"]["seeds"] = [0, 1]
    config["generation"] = {**config.get("generation", {}), **generation}
    path = tmp_path / "two_clm.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def commands(output: str, prefix: str) -> list[list[str]]:
    """The shell commands of a dry run (-p) that start with `prefix`, split into words."""
    found = re.findall(r"^Shell command: (.*)$", output, flags=re.M)
    return [shlex.split(c) for c in found if c.startswith(prefix)]


def flag(words: list[str], name: str) -> str | None:
    return words[words.index(name) + 1] if name in words else None


def test_generate_jobs_share_one_reference_encoder_trained_once(tmp_path: Path) -> None:
    cfg = two_clm_config(tmp_path)
    proc = snakemake(tmp_path, "-n", "-p", "--configfile", str(cfg), config="", timeout=300)
    counts = job_counts(proc.stdout)
    assert counts["generate"] == 2 * 2  # two CLM runs x two seeds
    assert counts["reference_encoder"] == 1
    units = load_config("config/smoke.yaml")["data"]["pretrain"]
    assert counts["reference_corpus"] == 1 and counts["reference_unit"] == len(units)
    generate = commands(proc.stdout, "helm generate")
    assert len(generate) == 4
    assert {flag(g, "--run") for g in generate} == {"results/pretrain/gpt2-clm-tiny-xe-3mer",
                                                     "results/pretrain/gpt2-clm-tiny-hxe0.4-3mer"}  # fmt: skip
    assert {flag(g, "--embed-run") for g in generate} == {"results/reference_encoder"}
    assert not any("--esm" in g for g in generate)
    # the encoder: a protein MLM with plain XE, trained on the translated units, into that directory
    train = requests(proc.stdout)["results/reference_encoder/request.yaml"]
    assert train["data"]["data_dir"] == "results/data/aa/corpus"
    assert train["run"]["output"] == "results/reference_encoder"
    assert (train["data"]["data_type"], train["data"]["mode"], train["objective"]["loss"]) == ("aa", "mlm", "XE")
    assert train["model"]["bidirectional"] is True and train["preset"] == "bert-tiny" and "tags" not in train
    for prep in commands(proc.stdout, "helm prepare --input"):
        if flag(prep, "--tokenizer") == "aa":
            assert "--translate" in prep and flag(prep, "--output").startswith("results/data/aa/parts/")


def test_generate_jobs_share_one_esm_checkpoint(tmp_path: Path) -> None:
    esm = tmp_path / "esm2_t12_35M_UR50D"
    esm.mkdir()
    (esm / "config.json").write_text("{}")  # a dry run only checks that the checkpoint directory is there
    cfg = two_clm_config(tmp_path, esm=str(esm))
    proc = snakemake(tmp_path, "-n", "-p", "--configfile", str(cfg), config="", timeout=300)
    counts = job_counts(proc.stdout)
    assert counts["generate"] == 4
    assert not {"reference_encoder", "reference_corpus", "reference_unit"} & set(counts)
    generate = commands(proc.stdout, "helm generate")
    assert {flag(g, "--esm") for g in generate} == {str(esm)} and len(generate) == 4
    assert not any("--embed-run" in g for g in generate)


def test_generation_embedder_config_errors(tmp_path: Path) -> None:
    missing = two_clm_config(tmp_path, esm=str(tmp_path / "no_such_checkpoint"))
    proc = snakemake(tmp_path, "-n", "--configfile", str(missing), config="", check=False)
    assert proc.returncode != 0 and "generation.esm" in proc.stdout + proc.stderr
    assert "no_such_checkpoint" in proc.stdout + proc.stderr

    config = yaml.safe_load(two_clm_config(tmp_path).read_text())
    config["downstream"]["tasks"]["generation"]["args"]["embed-run"] = "results/pretrain/other"
    per_task = tmp_path / "per_task.yaml"
    per_task.write_text(yaml.safe_dump(config))
    proc = snakemake(tmp_path, "-n", "--configfile", str(per_task), config="", check=False)
    assert proc.returncode != 0 and "downstream.tasks.generation.args.embed-run" in proc.stdout + proc.stderr

    config = yaml.safe_load(two_clm_config(tmp_path).read_text())
    config["generation"]["reference_encoder"]["args"]["loss"] = "HXE"
    fixed = tmp_path / "fixed.yaml"
    fixed.write_text(yaml.safe_dump(config))
    proc = snakemake(tmp_path, "-n", "--configfile", str(fixed), config="", check=False)
    assert proc.returncode != 0 and "generation.reference_encoder.args.loss" in proc.stdout + proc.stderr

    config["generation"] = {"esm_dir": "x"}  # the schema knows the keys
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(yaml.safe_dump(config))
    proc = snakemake(tmp_path, "-n", "--configfile", str(unknown), config="", check=False)
    assert proc.returncode != 0 and "esm_dir" in proc.stdout + proc.stderr
