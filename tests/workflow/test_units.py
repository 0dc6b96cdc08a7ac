"""A units sheet as `data.pretrain` (the paper's ~80 OAS studies are one TSV row each): run for real on local
files; a unit without sha256 is pinned in the sheet's lock file on its first fetch and checked ever after."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import yaml
from wf_utils import REPO, load_config, snakemake, snakemake_env

from helm.fetch import sha256sum

OAS = "pretrain/oas_parameswaran2013_heavy_100k.csv.gz"
PROFILE = str(REPO / "workflow/profiles/default")


def oas_rows(shared_data: Path, path: Path, skip: int, n: int) -> Path:
    with gzip.open(shared_data / OAS, "rt") as fh:
        header = next(fh)
        rows = [line for i, line in zip(range(skip + n), fh) if i >= skip]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress((header + "".join(rows)).encode(), mtime=0))
    return path


def test_units_sheet_of_local_files_runs_and_pins_unpinned_units(tmp_path: Path, shared_data: Path) -> None:
    mirror = tmp_path / "mirror"
    study_a = oas_rows(shared_data, mirror / "oas" / "study_a.csv.gz", 0, 150)
    study_b = oas_rows(shared_data, mirror / "oas" / "study_b.csv.gz", 150, 150)
    sheet = tmp_path / "units.tsv"
    sheet.write_text(
        "name\turl\tsha256\tformat\tfile\n"
        f"study_a\thttps://example.org/oas/study_a.csv.gz\t{sha256sum(study_a)}\toas\t\n"
        "study_b\t\t\toas\toas/study_b.csv.gz\n"
    )
    config = load_config("config/smoke.yaml")
    config["data"].update(pretrain=str(sheet), mirror=str(mirror))
    path = tmp_path / "units.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    env = snakemake_env({"HELM_DATA_MIRROR": ""})
    target = "results/data/3mer/corpus"
    snakemake(tmp_path / "work", "--profile", PROFILE, "--cores", "1", target, config=str(path), env=env)
    lock = Path(f"{sheet}.lock")
    pinned = f"file\tsha256\noas/study_b.csv.gz\t{sha256sum(study_b)}\n"
    assert lock.read_text() == pinned
    summary = json.loads((tmp_path / "work" / target / "summary.json").read_text())
    parts = sorted(p.name for p in (tmp_path / "work" / "results/data/3mer/parts").iterdir())
    assert parts == ["study_a", "study_b"] and summary["rows_read"] == 300
    # the study is re-uploaded with other bytes: the next fetch refuses it, naming the lock file
    oas_rows(shared_data, study_b, 300, 150)
    raw = "results/raw/oas/study_b.csv.gz"
    (tmp_path / "work" / raw).unlink()
    proc = snakemake(tmp_path / "work", "--profile", PROFILE, "--cores", "1", raw, config=str(path), env=env,
                     check=False)  # fmt: skip
    log = (tmp_path / "work" / "results/logs/fetch/oas/study_b.csv.gz.log").read_text()
    assert proc.returncode != 0 and f"recorded in {lock} on its first fetch" in log
    assert lock.read_text() == pinned and not (tmp_path / "work" / raw).exists()
