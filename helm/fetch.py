"""Locate a raw data file: a local mirror first (offline machines, tests), else download; sha256 checked.

`helm fetch --file downstream/mRFP_Expression.csv --url URL --sha256 HEX --dest results/raw/... [--mirror DIR]`
(``--dest`` is also spelled ``--out`` / ``--output``, as the other commands name their output)

A file without a configured sha256 can be pinned by a lock file (``--lock FILE``): its digest is recorded on the
first fetch and checked on every later one, so a changed download is an error, never silently new data. Units
sheets (``read_units``) list many pretraining files (e.g. OAS's ~80 studies) as TSV rows: name, url, sha256,
format.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import io
import os
import re
import shutil
import urllib.request
from pathlib import Path

from helm.args import HelmParser, command_errors
from helm.files import atomic_path, atomic_write, cache_dir


class FetchError(ValueError):
    """A file that cannot be had as asked (not in the mirror, a failed download, a wrong sha256, a bad sheet):
    a user error, so commands end on it with one line (helm.args.command_errors)."""


def default_mirror() -> str | None:
    """``$HELM_DATA_MIRROR``: a local copy of the raw data, searched before any download."""
    return os.environ.get("HELM_DATA_MIRROR") or None


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
    lock: str | Path | None = None,
) -> Path:
    """Return a verified local copy of ``relpath``.

    Search order: ``dest`` (already fetched), the mirror (default ``$HELM_DATA_MIRROR``), then ``url``. With
    ``dest`` the file is copied (or downloaded) there; without it a mirror hit is returned in place and a
    download goes to ``cache_dir()``. A checksum mismatch is an error naming both digests, never a silent use
    of the wrong bytes. Without ``sha256``, ``lock`` (a TSV of file and sha256) supplies the digest recorded
    by an earlier fetch, or records this one's.
    """
    locked = sha256 is None and lock is not None
    if locked:
        sha256 = read_lock(lock).get(relpath)
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
        try:
            with atomic_path(target) as tmp, open(tmp, "wb") as out:
                with urllib.request.urlopen(url, timeout=60) as resp:  # noqa: S310
                    shutil.copyfileobj(resp, out)
        except OSError as exc:
            raise FetchError(f"{relpath}: download from {url} failed: {exc}") from exc
        source = target
    if sha256:
        got = sha256sum(source)
        if got != sha256.lower():
            where = f"the one recorded in {lock} on its first fetch" if locked else "the configured"
            raise FetchError(f"{source}: sha256 {got} does not match {where} {sha256}")
    elif locked:
        sha256 = record_lock(lock, relpath, sha256sum(source))
    if dest is not None and source != dest:
        with atomic_path(dest) as tmp:
            shutil.copyfile(source, tmp)
        source = dest
    return source


LOCK_HEADER = ("file", "sha256")


def read_lock(path: str | Path) -> dict[str, str]:
    """file -> sha256 recorded in a lock file (empty when it does not exist yet)."""
    path = Path(path)
    if not path.is_file():
        return {}
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh, delimiter="\t"))
    if not rows or tuple(rows[0]) != LOCK_HEADER:
        raise FetchError(f"{path}: not a helm lock file (the header must be: {' '.join(LOCK_HEADER)})")
    bad = next((i for i, row in enumerate(rows[1:], start=2) if row and len(row) != 2), None)
    if bad is not None:
        raise FetchError(f"{path}, line {bad}: expected two tab-separated fields (file, sha256)")
    return {row[0]: row[1] for row in rows[1:] if row}


def record_lock(path: str | Path, relpath: str, digest: str) -> str:
    """Record ``relpath``'s digest unless another fetch (a parallel job) recorded one first; returns the
    recorded digest, and refuses when it differs (two jobs saw different bytes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    guard = os.open(path.parent, os.O_RDONLY)  # the folder itself: no lock-of-the-lock file left beside it
    try:
        try:
            fcntl.flock(guard, fcntl.LOCK_EX)  # parallel fetch jobs: one read-modify-write at a time
        except OSError:  # a file system without flock (some NFS / Lustre mounts): the atomic replace still holds
            pass
        known = read_lock(path)
        if relpath in known:
            if known[relpath] != digest:
                raise FetchError(f"{relpath}: sha256 {digest} does not match {known[relpath]} recorded in {path}")
            return digest
        known[relpath] = digest
        text = io.StringIO()
        csv.writer(text, delimiter="\t", lineterminator="\n").writerows([LOCK_HEADER, *sorted(known.items())])
        atomic_write(path, text.getvalue())
    finally:
        os.close(guard)  # releases the flock
    return digest


UNIT_COLUMNS = ("name", "url", "sha256", "format")
UNIT_FORMATS = ("auto", "txt", "csv", "fasta", "oas")


def read_units(path: str | Path, folder: str = "pretrain") -> list[dict[str, str | None]]:
    """A units sheet (TSV with columns name, url, sha256, format; optional file, orf) as the workflow's
    ``data.pretrain`` entries. ``file`` (the path under the mirror and results/raw) defaults to
    ``<folder>/<last part of the url>``; an empty sha256 is filled from the lock file on the first fetch."""
    path = Path(path)
    if not path.is_file():
        raise FetchError(f"{path}: units sheet not found")
    with open(path, newline="", encoding="utf-8-sig") as fh:
        # lines starting with '#' are notes (where a committed sheet comes from); errors name the file's own lines
        lines = [(number, text) for number, text in enumerate(fh, start=1) if not text.startswith("#")]
        reader = csv.DictReader((text for _, text in lines), delimiter="\t")
        rows = [(lines[reader.line_num - 1][0], row) for row in reader]
        header = [c.strip() for c in (rows[0][1].keys() if rows else [])]
    missing = [c for c in UNIT_COLUMNS if c not in header]
    if not rows or missing:
        raise FetchError(f"{path}: a units sheet needs a header and rows with columns {', '.join(UNIT_COLUMNS)}"
                         + (f" (missing: {', '.join(missing)})" if rows else " (no rows)"))  # fmt: skip
    units, seen, files = [], set(), set()
    for line, row in rows:
        row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
        name, url, digest, fmt = (row[c] for c in UNIT_COLUMNS)
        where = f"{path}, line {line}"
        if not re.fullmatch(r"[A-Za-z0-9_]+", name):
            raise FetchError(f"{where}: unit name {name!r} must be letters, digits and _")
        if name in seen:
            raise FetchError(f"{where}: unit name {name!r} appears twice")
        if digest and not re.fullmatch(r"[0-9a-fA-F]{64}", digest):
            raise FetchError(f"{where}: sha256 {digest!r} is not 64 hex digits")
        if fmt not in UNIT_FORMATS:
            raise FetchError(f"{where}: format {fmt!r} is not one of {', '.join(UNIT_FORMATS)}")
        file = row.get("file") or (f"{folder}/{url.rstrip('/').rsplit('/', 1)[-1]}" if url else "")
        if not file:
            raise FetchError(f"{where}: unit {name!r} has neither a url nor a file")
        if file in files:
            raise FetchError(f"{where}: unit {name!r} is stored as {file} like an earlier unit: add a file column")
        seen.add(name)
        files.add(file)
        units.append({"name": name, "file": file, "url": url or None, "sha256": digest.lower() or None,
                      "format": fmt, "orf": row.get("orf") or "none"})  # fmt: skip
    return units


def units_from_urls(text: str, fmt: str = "oas") -> str:
    """A units sheet (TSV) from any text listing download URLs, e.g. OAS's bulk-download script (one ``wget URL``
    per data unit): one row per distinct URL, named ``<study folder>_<file stem>``, sha256 left empty (pinned
    by the lock file on first fetch)."""
    rows, names = [], set()
    for url in dict.fromkeys(re.findall(r"https?://[^\s'\"]+", text)):
        parts = url.rstrip("/").split("/")
        stem = re.sub(r"\.(csv|tsv|txt|fa|fasta)?(\.gz)?$", "", parts[-1])
        study = parts[-3] if len(parts) >= 3 and parts[-2] in ("csv", "fasta") else parts[-2]
        name = re.sub(r"[^A-Za-z0-9_]+", "_", f"{study}_{stem}").strip("_")
        if name in names:
            raise FetchError(f"two URLs give the unit name {name!r} ({url}); name them by hand")
        names.add(name)
        rows.append(f"{name}\t{url}\t\t{fmt}\n")
    if not rows:
        raise FetchError("no http(s) URLs found")
    return "\t".join(UNIT_COLUMNS) + "\n" + "".join(rows)


def build_parser() -> HelmParser:
    parser = HelmParser("helm fetch", __doc__.splitlines()[0])
    parser.add_argument("--file", help="path of the file relative to a mirror / data root")
    parser.add_argument("--url", default=None, help="download from here when no mirror holds the file")
    parser.add_argument("--sha256", default=None, help="expected digest (unset: --lock, else unchecked)")
    parser.add_argument(
        "--mirror", default=default_mirror(), help="local directory searched before downloading ($HELM_DATA_MIRROR)"
    )
    parser.add_argument("--dest", "--out", "--output", dest="dest", required=True,
                        help="where the verified copy (or, with --units-from, the sheet) goes")  # fmt: skip
    parser.add_argument(
        "--lock", default=None, help="without --sha256: check against (or, first time, record in) this lock file"
    )
    parser.add_argument(
        "--units-from",
        default=None,
        metavar="LIST",
        help="instead of fetching: write a units sheet (data.pretrain) from a file of URLs such as OAS's "
        "bulk_download.sh",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.units_from and not args.file:
        parser.error("--file is required (or --units-from)")
    with command_errors("helm fetch"):
        if args.units_from:
            try:
                sheet = units_from_urls(Path(args.units_from).read_text())
            except (OSError, FetchError) as exc:
                raise FetchError(f"--units-from {args.units_from}: {exc}") from exc
            if Path(args.dest).exists():  # a sheet may carry hand edits: never overwrite it
                raise FileExistsError(f"--dest {args.dest}: exists; remove it or choose another name")
            atomic_write(args.dest, sheet)
            print(f"{args.dest}: {sheet.count(chr(10)) - 1} units")
            return 0
        path = locate_file(args.file, url=args.url, sha256=args.sha256, mirror=args.mirror, dest=args.dest,
                           lock=args.lock)  # fmt: skip
    print(path)
    return 0
