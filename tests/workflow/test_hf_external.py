"""downstream.external: foreign Hugging Face checkpoints become extra rows through the same embed/probe jobs (dry
runs of the real Snakefile, a few seconds each)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from wf_utils import job_counts, load_config, snakemake


def shell_commands(output: str) -> list[str]:
    return re.findall(r"Shell command: (.*)", output)


def test_external_checkpoints_get_every_probe_task(tmp_path: Path) -> None:
    ckpt = tmp_path / "tiny bert"  # a blank in the path: every command must quote it
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}")  # a dry run loads nothing
    config = load_config("config/smoke.yaml")
    config["downstream"]["external"] = {"codonbert": {"path": str(ckpt), "args": {"hf-alphabet": "rna"}}}
    # a fine-tuning probe task reads the checkpoint itself (`probe --hf`), a frozen one its features file
    config["downstream"]["tasks"]["mRFP_lora"] = {"command": "probe", "dataset": "mrfp",
                                                  "args": {"finetune": "lora", "head": "linear"}}  # fmt: skip
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    base = config | {"downstream": {k: v for k, v in config["downstream"].items() if k != "external"}}
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    before = job_counts(snakemake(tmp_path / "a", "-n", config=str(tmp_path / "base.yaml")).stdout)
    proc = snakemake(tmp_path / "b", "-n", "-p", config=str(path))
    after = job_counts(proc.stdout)
    # one embed job (mRFP, frozen) and two probe jobs (mRFP, mRFP_lora) more; nothing else changes
    assert after == before | {"embed": before["embed"] + 1, "probe": before["probe"] + 2}
    commands = shell_commands(proc.stdout)
    hf = f"--hf '{ckpt}' --hf-name codonbert --hf-alphabet rna"
    embed = [c for c in commands if c.startswith("helm embed") and "hf:codonbert" in c]
    assert len(embed) == 1 and hf in embed[0] and "--out results/embeddings/mrfp/hf:codonbert.safetensors" in embed[0]
    probes = [c for c in commands if c.startswith("helm probe") and "hf:codonbert" in c]
    assert len(probes) == 2
    assert any("--features results/embeddings/mrfp/hf:codonbert.safetensors" in c for c in probes)
    assert any(hf in c and "--finetune lora" in c for c in probes)
    tables = next(c for c in commands if c.startswith("helm tables"))
    assert "results/downstream/mRFP/hf:codonbert/seed0.json" in tables
    assert "results/downstream/mRFP_lora/hf:codonbert/seed0.json" in tables

    # a folder that is not a checkpoint fails before any job, naming the config key
    config["downstream"]["external"] = {"codonbert": str(tmp_path / "nope")}
    path.write_text(yaml.safe_dump(config))
    proc = snakemake(tmp_path / "c", "-n", config=str(path), check=False)
    assert proc.returncode != 0 and "downstream.external.codonbert" in proc.stdout + proc.stderr
