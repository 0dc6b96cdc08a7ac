"""Locate a raw data file: a local mirror first (offline machines, tests), else download; sha256 checked.

`helm fetch --file downstream/mRFP_Expression.csv --url URL --sha256 HEX --dest results/raw/... [--mirror DIR]`
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import urllib.request
from pathlib import Path


class FetchError(RuntimeError):
    pass


def default_mirror() -> str | None:
    """``$HELM_DATA_MIRROR``: a local copy of the raw data, searched before any download."""
    return os.environ.get("HELM_DATA_MIRROR") or None


def cache_dir() -> Path:
    """Where downloads without an explicit destination land (``$HELM_CACHE``, else ~/.cache/helm-mrna)."""
    return Path(os.environ.get("HELM_CACHE") or Path.home() / ".cache" / "helm-mrna")


def sha256sum(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def find_in_mirror(relpath: str, mirror: str | Path | None) -> Path | None:
    """`mirror/relpath`, else the first file of the same name anywhere under the mirror."""
    if not mirror:
        return None
    root = Path(mirror)
    direct = root / relpath
    if direct.is_file():
        return direct
    hits = sorted(root.rglob(Path(relpath).name)) if root.is_dir() else []
    return hits[0] if hits else None


def locate_file(
    relpath: str,
    *,
    url: str | None = None,
    sha256: str | None = None,
    mirror: str | Path | None = None,
    dest: str | Path | None = None,
) -> Path:
    """Return a verified local copy of ``relpath``.

    Search order: ``dest`` (already fetched), the mirror (default ``$HELM_DATA_MIRROR``), then ``url``. With
    ``dest`` the file is copied (or downloaded) there; without it a mirror hit is returned in place and a
    download goes to ``cache_dir()``. A checksum mismatch is an error naming both digests, never a silent use
    of the wrong bytes.
    """
    mirror = mirror if mirror is not None else default_mirror()
    dest = Path(dest) if dest else None
    cached = cache_dir() / relpath
    candidates = (dest, find_in_mirror(relpath, mirror), None if dest else cached)
    source = next((p for p in candidates if p is not None and p.is_file()), None)
    if source is None:
        if not url:
            where = mirror or "none set: pass --mirror or set HELM_DATA_MIRROR"
            raise FetchError(f"{relpath}: not found in the data mirror ({where}) and no URL is configured")
        target = dest or cached
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".part")
        try:
            with urllib.request.urlopen(url, timeout=60) as resp, open(tmp, "wb") as out:  # noqa: S310
                shutil.copyfileobj(resp, out)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise FetchError(f"{relpath}: download from {url} failed: {exc}") from exc
        tmp.replace(target)
        source = target
    if sha256:
        got = sha256sum(source)
        if got != sha256.lower():
            raise FetchError(f"{source}: sha256 {got} does not match the configured {sha256}")
    if dest is not None and source != dest:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".part")
        shutil.copyfile(source, tmp)
        tmp.replace(dest)
        source = dest
    return source


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="helm fetch", description=__doc__.splitlines()[0])
    parser.add_argument("--file", required=True, help="path of the file relative to a mirror / data root")
    parser.add_argument("--url", default=None)
    parser.add_argument("--sha256", default=None)
    parser.add_argument(
        "--mirror", default=default_mirror(), help="local directory searched before downloading ($HELM_DATA_MIRROR)"
    )
    parser.add_argument("--dest", required=True, help="where the verified copy is written")
    args = parser.parse_args(argv)
    try:
        path = locate_file(args.file, url=args.url, sha256=args.sha256, mirror=args.mirror, dest=args.dest)
    except FetchError as exc:
        parser.exit(1, f"helm fetch: error: {exc}\n")
    print(path)
    return 0
