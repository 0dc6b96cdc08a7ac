"""Every relative link and image in README.md and docs/**/*.md names a file (or folder) the repository tracks:
a link that works only in the author's checkout (an ignored or uncommitted artifact) is broken for everyone else."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parents[1]
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")  # [text](target) and ![alt](target)
CODE = re.compile(r"```.*?```|`[^`\n]*`", re.S)  # links inside code are examples, not links


def tracked() -> set[str]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"not a git checkout ({e}): cannot tell which files are tracked")
    files = {f for f in out.decode().split("\0") if f}
    folders = {str(p) for f in files for p in Path(f).parents if str(p) != "."}
    return files | folders


def relative_links(text: str) -> list[str]:
    links = [m.group(1) for m in LINK.finditer(CODE.sub("", text))]
    return [t for t in links if not re.match(r"^[a-z][a-z0-9+.-]*:|^#|^//", t)]  # not http:, mailto:, #anchor


def documents() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def test_link_pattern_finds_links_and_images_but_not_code() -> None:
    text = 'see [a](docs/A.md#x), ![fig](docs/f.png "t"), [web](https://x.org), [top](#results), `[no](b.md)`'
    assert relative_links(text) == ["docs/A.md#x", "docs/f.png"]


@pytest.mark.parametrize("doc", documents(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_names_a_tracked_file(doc: Path) -> None:
    files = tracked()
    broken = []
    for target in relative_links(doc.read_text(encoding="utf-8")):
        path = (doc.parent / unquote(target.split("#")[0])).resolve()
        try:
            rel = str(path.relative_to(REPO))
        except ValueError:
            broken.append(f"{target} (outside the repository)")
            continue
        if rel not in files:
            broken.append(f"{target} ({'exists but is not tracked' if path.exists() else 'missing'})")
    assert not broken, f"{doc.relative_to(REPO)}: {broken}"
