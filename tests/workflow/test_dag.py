"""Dry runs of the real Snakefile: the paper grid's DAG, the smoke grid's coverage, targets, resources, lint."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from wf_utils import REPO, expected_runs, job_counts, load_config, requests, snakemake, snakemake_env

RUN_ID = re.compile(r"results/pretrain/([^/\s,]+)/metrics\.json")


def pretrain_outputs(output: str) -> set[str]:
    """Run ids of the pretrain jobs a dry run lists (their `output:` lines)."""
    ids = set()
    for block in output.split("\nrule ")[1:] + output.split("\nlocalrule ")[1:]:
        if block.startswith("pretrain:"):
            ids |= set(RUN_ID.findall(block.split("\n    log:")[0]))
    return ids


def test_full_grid_dry_run_lists_every_pretrain_job(tmp_path: Path, record_property) -> None:
    config = load_config("config/config.yaml")
    points = expected_runs(config)
    start = time.perf_counter()
    proc = snakemake(tmp_path, "-n", config="", timeout=300)
    elapsed = time.perf_counter() - start
    record_property("full_grid_dry_run_s", round(elapsed, 2))
    print(f"full paper grid dry run: {elapsed:.1f} s")
    counts = job_counts(proc.stdout)
    assert counts["pretrain"] == len(points)
    ids = pretrain_outputs(proc.stdout)
    assert ids == {"-".join(p) for p in points}
    # every probe task x seed for every run, generation for CLM runs only
    tasks = config["downstream"]["tasks"]
    n_seeds = len(config["downstream"]["seeds"])
    n_probe = sum(t["command"] == "probe" for t in tasks.values())
    n_clm = sum(p[1] == "clm" for p in points)
    assert counts["probe"] == n_probe * len(points) * n_seeds
    assert counts["generate"] == n_clm * n_seeds
    assert counts["baseline"] == n_probe * len(config["downstream"]["baselines"]) * n_seeds
    assert counts["tables"] == 1


def test_smoke_grid_covers_every_rule(tmp_path: Path) -> None:
    config = load_config("config/smoke.yaml")
    points = expected_runs(config)
    counts = job_counts(snakemake(tmp_path, "-n").stdout)
    rules = ("fetch", "learn_tokenizer", "prepare_unit", "merge_units", "pretrain", "probe", "baseline", "annotate",
             "cluster", "generate", "design", "design_table", "tables", "all")  # fmt: skip
    for rule in rules:
        assert counts.get(rule, 0) >= 1, rule
    assert counts["pretrain"] == len(points)
    assert len({p[0] for p in points}) >= 2 and {p[1] for p in points} == {"mlm", "clm"}
    losses = {config["losses"][p[3]]["loss"] for p in points}
    assert {"XE", "HXE"} <= losses


def test_paper_presets_exist() -> None:
    """Every preset the paper grid names is a registered model preset (helm.models)."""
    from helm.models import list_presets

    config = load_config("config/config.yaml")
    presets = set(list_presets())
    overrides = config["pretrain"].get("presets", {})
    for arch, mode, size, _, _ in expected_runs(config):
        entry = overrides.get(f"{arch}-{size}", f"{arch}-{size}")
        name = entry[mode] if isinstance(entry, dict) else entry
        assert name in presets, name


def test_one_run_target_plans_only_its_chain(tmp_path: Path) -> None:
    config = load_config("config/config.yaml")
    proc = snakemake(tmp_path, "-n", "results/pretrain/gpt2-mlm-50m-hxe0.4-3mer/metrics.json", config="")
    counts = job_counts(proc.stdout)
    n_units = len(config["data"]["pretrain"])
    assert counts == {"fetch": n_units, "prepare_unit": n_units, "merge_units": 1, "pretrain": 1}
    assert pretrain_outputs(proc.stdout) == {"gpt2-mlm-50m-hxe0.4-3mer"}


def test_run_ids_outside_the_grid_are_not_buildable(tmp_path: Path) -> None:
    proc = snakemake(tmp_path, "-n", "results/pretrain/gpt2-mlm-50m-hxe0.3-3mer/metrics.json", config="", check=False)
    assert proc.returncode != 0
    assert "MissingRuleException" in proc.stdout + proc.stderr or "No rule to produce" in proc.stdout + proc.stderr


def test_slurm_profile_takes_resources_from_config(tmp_path: Path) -> None:
    config = load_config("config/config.yaml")
    proc = snakemake(tmp_path, "-n", "--profile", str(REPO / "workflow/profiles/slurm"),
                     "results/pretrain/mamba-clm-50m-xe-3mer/metrics.json", config="")  # fmt: skip
    block = proc.stdout.split("rule pretrain:")[1].split("\n\n")[0]
    resources = dict(re.findall(r"(\w+)=([^,\s]+)", block.split("resources:")[1].splitlines()[0]))
    want = {**config["resources"]["pretrain"], **config["resources"]["rules"].get("pretrain", {})}
    assert int(resources["gpu"]) == want["gpu"]
    assert int(resources["mem_mb"]) == want["mem_mb"]
    assert int(resources["runtime"]) == want["runtime"]
    assert "slurm_partition" not in resources  # the site profile's partitions decide (make slurm-profile)
    assert requests(proc.stdout)["results/pretrain/mamba-clm-50m-xe-3mer/request.yaml"]["preset"] == "mamba-50m-clm"


def test_schema_rejects_unknown_keys(tmp_path: Path) -> None:
    config = load_config("config/smoke.yaml")
    config["pretrain"]["argz"] = {"lr": 1}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    proc = snakemake(tmp_path, "-n", "--configfile", str(bad), config="", check=False)
    assert proc.returncode != 0
    assert "argz" in proc.stdout + proc.stderr


def test_a_bad_training_setting_stops_the_dry_run_with_one_line(tmp_path: Path) -> None:
    """pretrain.args, arch_args and each grid point's request are read by helm's own --config reader when the DAG
    is built: a typo or a bad value ends `snakemake -n` (exit 2) with one line naming it, before any job."""
    cases = [
        ("args", "warmup-epoch", 0, "pretrain.args: unknown key 'warmup-epoch'; did you mean warmup_epochs"),
        ("args", "batch_size", "big", "pretrain.args: batch_size: expected int, got 'big'"),
        ("arch_args", "mamba", {"lr": -1}, "pretrain run mamba-clm-tiny-hxe0.4-3mer: --lr -1.0: must be > 0"),
    ]
    for section, key, value, message in cases:
        config = load_config("config/smoke.yaml")
        config["pretrain"].setdefault(section, {})[key] = value
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump(config))
        proc = snakemake(tmp_path / "w", "-n", "--configfile", str(path), config="", check=False)
        out = proc.stdout + proc.stderr
        errors = [line for line in out.splitlines() if "error" in line.lower()]
        assert proc.returncode == 2 and "Traceback" not in out, out
        assert len(errors) == 1 and errors[0].startswith(f"helm workflow: error: {message}"), errors
        assert not (tmp_path / "w" / "results").exists()


def test_lint_is_clean(tmp_path: Path) -> None:
    for config in ("config/config.yaml", "config/smoke.yaml"):
        proc = snakemake(tmp_path, "--lint", config=config)
        assert "Congratulations, your workflow is in a good condition!" in proc.stdout + proc.stderr, (
            proc.stdout + proc.stderr
        )


@pytest.mark.parametrize("profile", ["default", "slurm"])
def test_profiles_keep_finished_jobs_on_code_edits(profile: str) -> None:
    settings = yaml.safe_load((REPO / "workflow/profiles" / profile / "config.v8+.yaml").read_text())
    assert set(settings["rerun-triggers"]) == {"mtime", "input"}


def test_site_slurm_profile_is_installed_once_and_found_by_name(tmp_path: Path) -> None:
    env = {**snakemake_env(), "HOME": str(tmp_path / "home")}
    env.pop("XDG_CONFIG_HOME", None)
    make = ["make", "-s", "slurm-profile", "ACCOUNT=proj42", "PARTITION=gpu-a100"]
    subprocess.run(make, cwd=REPO, env=env, check=True, capture_output=True, text=True)
    profile = tmp_path / "home" / ".config" / "snakemake" / "slurm" / "config.v8+.yaml"
    written = yaml.safe_load(profile.read_text())
    assert written["executor"] == "slurm"
    assert written["default-resources"] == ["slurm_account=proj42", "slurm_partition=gpu-a100"]
    before = profile.read_text()
    again = subprocess.run([*make[:3], "ACCOUNT=other"], cwd=REPO, env=env, capture_output=True, text=True)
    assert again.returncode != 0 and "is never overwritten" in again.stderr and profile.read_text() == before
    # from the repository root, `--profile slurm` is found by name; rule resources from the config win
    proc = snakemake(tmp_path / "work", "--profile", "slurm", "-n", config="config/config.yaml", env=env,
                     timeout=300)  # fmt: skip
    assert "Using profile slurm for setting default command line arguments." in proc.stderr
    block = proc.stdout.split("rule pretrain:")[1].split("\n\n")[0]
    assert "slurm_account=proj42" in block and "slurm_partition=gpu-a100" in block
    prepare = proc.stdout.split("rule prepare_unit:")[1].split("\n\n")[0]
    assert "slurm_partition=gpu-a100" in prepare  # no partition in the config: the site default for every job


def test_multi_gpu_runs_become_one_slurm_job_with_a_task_per_rank(tmp_path: Path) -> None:
    config = load_config("config/config.yaml")
    config["resources"]["pretrain"].update(gpu=4, nodes=2, gpu_model="a100")
    path = tmp_path / "multi.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = snakemake(tmp_path, "-n", "-p", "--profile", str(REPO / "workflow/profiles/slurm"),
                     "results/pretrain/gpt2-mlm-50m-xe-3mer/metrics.json", config=str(path))  # fmt: skip
    block = proc.stdout.split("rule pretrain:")[1].split("\n\n")[0]
    resources = dict(re.findall(r"(\w+)=([^,\s]+)", block.split("resources:")[1].splitlines()[0]))
    assert resources["mpi"] == "srun" and resources["tasks_per_node"] == "4" and resources["nodes"] == "2"
    assert resources["gres"] == "gpu:a100:4" and "gpu" not in resources  # --gpus would count the whole job
    shell = proc.stdout.split("rule pretrain:")[1]
    srun = "srun --nodes=2 --ntasks-per-node=4 --ntasks=8 --cpus-per-task=16 --gres=gpu:a100:4"
    assert f'$([ -n "${{SLURM_JOB_ID:-}}" ] && echo {srun}) helm train' in shell
    request = "results/pretrain/gpt2-mlm-50m-xe-3mer/request.yaml"
    ranks = {"num_devices": 4, "num_nodes": 2, "distributed_backend": "ddp"}
    assert ranks.items() <= requests(proc.stdout)[request]["run"].items()
    # one GPU per run (the default) keeps the command and resources of a single process
    proc = snakemake(tmp_path, "-n", "-p", "results/pretrain/gpt2-mlm-50m-xe-3mer/metrics.json", config="")
    shell = proc.stdout.split("rule pretrain:")[1]
    assert "srun" not in shell.split("rule ")[0] and not ranks.keys() & requests(proc.stdout)[request]["run"].keys()


@pytest.mark.parametrize("name", ["config/smoke.yaml", "config/study.yaml"])
def test_every_pretrain_job_writes_a_resumable_checkpoint_before_it_ends(tmp_path: Path, name: str) -> None:
    """Issue 27.6: a killed pretrain job resumes from last.ckpt instead of starting over, in every config: the smoke
    config's own interval (below its run length) and the schema's default where a config names none."""
    proc = snakemake(tmp_path, "-n", "-p", "--until", "pretrain", config=name)
    found = requests(proc.stdout)
    cfg = load_config(name)
    assert len(found) == job_counts(proc.stdout)["pretrain"] > 0  # one request per pretrain job
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    setting = schema["properties"]["pretrain"]["properties"].get("checkpoint_every_n_steps", {})
    want = cfg["pretrain"].get("checkpoint_every_n_steps", setting.get("default"))
    for file, request in found.items():
        assert request["run"]["checkpoint_every_n_steps"] == want > 0, file
    if "max-steps" in cfg["pretrain"]["args"]:
        assert want < cfg["pretrain"]["args"]["max-steps"]
