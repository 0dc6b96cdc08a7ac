"""helm.fetch: mirror-first lookup, sha256 verification, download into a destination or the cache."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from helm.fetch import FetchError, locate_file, main, sha256sum

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
    assert dest.read_text() == "ACGT\n" and not dest.with_name("copy.txt.part").exists()


def test_cli_copies_into_dest_and_reports_errors(shared_data: Path, tmp_path: Path, capsys) -> None:
    dest = tmp_path / "raw" / "mrfp.csv"
    assert main(["--file", MRFP, "--sha256", MRFP_SHA, "--mirror", str(shared_data), "--dest", str(dest)]) == 0
    assert sha256sum(dest) == MRFP_SHA
    with pytest.raises(SystemExit) as exc:
        main(["--file", "missing.csv", "--mirror", str(tmp_path / "empty"), "--dest", str(tmp_path / "x")])
    assert exc.value.code == 1 and "helm fetch: error: missing.csv" in capsys.readouterr().err
