"""Locate a raw data file: a local mirror first (offline machines, tests), else download; sha256 checked.

`helm fetch --file downstream/mRFP_Expression.csv --url URL --sha256 HEX --dest results/raw/... [--mirror DIR]`
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import urllib.request
from pathlib import Path


class FetchError(RuntimeError):
    pass


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

    Search order: ``dest`` (already fetched), the mirror, then ``url``. With ``dest`` the file is copied
    (or downloaded) there; without it a mirror hit is returned in place. A checksum mismatch is an error
    naming both digests, never a silent use of the wrong bytes.
    """
    dest = Path(dest) if dest else None
    candidates = [p for p in (dest, find_in_mirror(relpath, mirror)) if p is not None and p.is_file()]
    source: Path | None = candidates[0] if candidates else None
    if source is None:
        if not url:
            raise FetchError(f"{relpath}: not found in mirror {mirror!s} and no URL is configured")
        if dest is None:
            raise FetchError(f"{relpath}: downloading needs a destination path")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".part")
        try:
            with urllib.request.urlopen(url, timeout=60) as resp, open(tmp, "wb") as out:  # noqa: S310
                shutil.copyfileobj(resp, out)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise FetchError(f"{relpath}: download from {url} failed: {exc}") from exc
        tmp.replace(dest)
        source = dest
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
    parser.add_argument("--mirror", default=None, help="local directory searched before downloading")
    parser.add_argument("--dest", required=True, help="where the verified copy is written")
    args = parser.parse_args(argv)
    try:
        path = locate_file(args.file, url=args.url, sha256=args.sha256, mirror=args.mirror, dest=args.dest)
    except FetchError as exc:
        parser.exit(1, f"helm fetch: error: {exc}\n")
    print(path)
    return 0
