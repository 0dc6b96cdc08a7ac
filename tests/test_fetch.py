"""helm.fetch: mirror-first lookup, sha256 verification, download into a destination or the cache."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from helm.fetch import FetchError, locate_file, main, read_lock, read_units, record_lock, sha256sum

MRFP = "downstream/mRFP_Expression.csv"
MRFP_SHA = "ed32c1e547ca4db464ef873768fcc6b3f4738704981a88bd9b842bd4e630ed99"  # from shared/data/MANIFEST.md


def test_mirror_hit_is_verified_and_returned_in_place(shared_data: Path) -> None:
    assert locate_file(MRFP, sha256=MRFP_SHA, mirror=shared_data) == shared_data / MRFP
    # found by name anywhere under the mirror when the relative path differs
    assert locate_file("elsewhere/mRFP_Expression.csv", sha256=MRFP_SHA, mirror=shared_data) == shared_data / MRFP


def test_wrong_checksum_is_an_error_naming_both_digests(shared_data: Path) -> None:
    with pytest.raises(FetchError, match=f"does not match the configured {'0' * 64}"):
        locate_file(MRFP, sha256="0" * 64, mirror=shared_data)


def test_missing_file_without_url_says_where_it_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HELM_DATA_MIRROR", raising=False)
    monkeypatch.setenv("HELM_CACHE", str(tmp_path / "cache"))
    with pytest.raises(FetchError, match="not found in the data mirror .*none set"):
        locate_file("nope.csv")


def test_download_goes_to_dest_or_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "remote" / "data.txt"
    src.parent.mkdir()
    src.write_text("ACGT\n")
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    monkeypatch.setenv("HELM_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HELM_DATA_MIRROR", raising=False)
    url = src.as_uri()  # urllib reads file:// like any URL: a real download path, offline
    cached = locate_file("sub/data.txt", url=url, sha256=digest)
    assert cached == tmp_path / "cache" / "sub" / "data.txt" and sha256sum(cached) == digest
    src.unlink()  # a second lookup is served from the cache
    assert locate_file("sub/data.txt", url=url, sha256=digest) == cached
    dest = tmp_path / "out" / "copy.txt"
    assert locate_file("sub/data.txt", url=url, sha256=digest, mirror=tmp_path / "cache", dest=dest) == dest
    assert dest.read_text() == "ACGT\n" and [p.name for p in dest.parent.iterdir()] == ["copy.txt"]  # no temporaries
    assert sorted(p.name for p in cached.parent.iterdir()) == ["data.txt"]


def test_cli_copies_into_dest_and_reports_errors(shared_data: Path, tmp_path: Path, capsys) -> None:
    dest = tmp_path / "raw" / "mrfp.csv"
    assert main(["--file", MRFP, "--sha256", MRFP_SHA, "--mirror", str(shared_data), "--dest", str(dest)]) == 0
    assert sha256sum(dest) == MRFP_SHA
    out = tmp_path / "raw" / "again.csv"  # --out / --output: the output's name in every command
    assert main(["--file", MRFP, "--sha256", MRFP_SHA, "--mirror", str(shared_data), "--output", str(out)]) == 0
    assert sha256sum(out) == MRFP_SHA
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["--file", "missing.csv", "--mirror", str(tmp_path / "empty"), "--dest", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith("helm fetch: error: missing.csv") and len(err.splitlines()) == 1


def test_a_lock_file_pins_a_unit_without_sha256(tmp_path: Path) -> None:
    mirror, lock = tmp_path / "mirror", tmp_path / "units.tsv.lock"
    (mirror / "pretrain").mkdir(parents=True)
    unit = mirror / "pretrain" / "study1.csv"
    unit.write_text("sequence\nATGAAA\n")
    first = locate_file("pretrain/study1.csv", mirror=mirror, dest=tmp_path / "raw" / "a.csv", lock=lock)
    assert lock.read_text() == f"file\tsha256\npretrain/study1.csv\t{sha256sum(unit)}\n" and first.is_file()
    # a later fetch of the same bytes passes; changed bytes (a re-uploaded study) are an error naming the lock
    assert locate_file("pretrain/study1.csv", mirror=mirror, dest=tmp_path / "raw" / "b.csv", lock=lock).is_file()
    unit.write_text("sequence\nATGCCC\n")
    with pytest.raises(FetchError, match=r"does not match the one recorded in .*units\.tsv\.lock on its first fetch"):
        locate_file("pretrain/study1.csv", mirror=mirror, dest=tmp_path / "raw" / "c.csv", lock=lock)
    assert not (tmp_path / "raw" / "c.csv").exists()
    # a configured sha256 wins over the lock, which is then neither read nor written
    assert locate_file("pretrain/study1.csv", mirror=mirror, sha256=sha256sum(unit), lock=lock) == unit
    assert "ATGCCC" not in lock.read_text() and len(lock.read_text().splitlines()) == 2


def test_recording_the_same_file_twice_with_other_bytes_is_refused(tmp_path: Path) -> None:
    lock = tmp_path / "l.lock"
    assert record_lock(lock, "a.csv", "1" * 64) == "1" * 64
    assert record_lock(lock, "b.csv", "2" * 64) == "2" * 64 and read_lock(lock) == {
        "a.csv": "1" * 64,
        "b.csv": "2" * 64,
    }
    with pytest.raises(FetchError, match="recorded in"):
        record_lock(lock, "a.csv", "3" * 64)
    (tmp_path / "bad.lock").write_text("x\ty\n")
    with pytest.raises(FetchError, match="not a helm lock file"):
        read_lock(tmp_path / "bad.lock")


def test_units_sheet_rows_become_workflow_units(tmp_path: Path) -> None:
    sheet = tmp_path / "units.tsv"
    sheet.write_text(
        "name\turl\tsha256\tformat\n"
        f"Eliyahu_2018\thttps://opig.stats.ox.ac.uk/webapps/ngsdb/unpaired/Eliyahu_2018/csv/SRR1.csv.gz\t\toas\n"
        f"local\t\t{'A' * 64}\tfasta\n"
    )
    with pytest.raises(FetchError, match=r"units\.tsv, line 3: unit 'local' has neither a url nor a file"):
        read_units(sheet)
    sheet.write_text(sheet.read_text().replace("name\turl\tsha256\tformat", "name\turl\tsha256\tformat\tfile")
                     .replace("\toas\n", "\toas\t\n").replace("\tfasta\n", "\tfasta\tpretrain/local.fa\n"))  # fmt: skip
    assert read_units(sheet) == [
        {"name": "Eliyahu_2018", "file": "pretrain/SRR1.csv.gz", "sha256": None, "format": "oas", "orf": "none",
         "url": "https://opig.stats.ox.ac.uk/webapps/ngsdb/unpaired/Eliyahu_2018/csv/SRR1.csv.gz"},
        {"name": "local", "file": "pretrain/local.fa", "url": None, "sha256": "a" * 64, "format": "fasta",
         "orf": "none"},
    ]  # fmt: skip
    cases = [("Eli-2018\tu\t\toas", "line 2: unit name 'Eli-2018' must be letters"),
             ("E\tu\tzz\toas", "line 2: sha256 'zz' is not 64 hex"), ("E\tu\t\tgenbank", "line 2: format 'genbank'"),
             ("E\tu\t\toas\nE\tv\t\toas", "line 3: unit name 'E' appears twice")]  # fmt: skip
    for rows, message in cases:
        (tmp_path / "bad.tsv").write_text("name\turl\tsha256\tformat\n" + rows + "\n")
        with pytest.raises(FetchError, match=f"bad\\.tsv, {message}"):
            read_units(tmp_path / "bad.tsv")
    (tmp_path / "cols.tsv").write_text("name\turl\nx\ty\n")
    with pytest.raises(FetchError, match="missing: sha256, format"):
        read_units(tmp_path / "cols.tsv")


def test_a_units_sheet_from_the_oas_bulk_download_script(tmp_path: Path, capsys) -> None:
    script = tmp_path / "bulk_download.sh"
    base = "https://opig.stats.ox.ac.uk/webapps/ngsdb/unpaired"
    script.write_text(f"wget {base}/Eliyahu_2018/csv/SRR5989773_1_Heavy_IGHA.csv.gz\n"
                      f"wget {base}/Gidoni_2019/csv/ERR2843400_Heavy_IGHE.csv.gz\n"
                      f"wget {base}/Gidoni_2019/csv/ERR2843400_Heavy_IGHE.csv.gz\n")  # fmt: skip
    sheet = tmp_path / "units.tsv"
    assert main(["--units-from", str(script), "--dest", str(sheet)]) == 0
    assert "2 units" in capsys.readouterr().out
    units = read_units(sheet)
    assert [u["name"] for u in units] == ["Eliyahu_2018_SRR5989773_1_Heavy_IGHA", "Gidoni_2019_ERR2843400_Heavy_IGHE"]
    assert units[1]["file"] == "pretrain/ERR2843400_Heavy_IGHE.csv.gz" and units[1]["sha256"] is None
    assert all(u["format"] == "oas" and u["url"].startswith(base) for u in units)
    with pytest.raises(SystemExit) as exc:  # an existing sheet (maybe edited by hand) is never overwritten
        main(["--units-from", str(script), "--dest", str(sheet)])
    assert exc.value.code == 2 and "exists" in capsys.readouterr().err
