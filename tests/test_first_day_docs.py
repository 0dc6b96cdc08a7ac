"""What a new user reads first (issue 22, points 7 and 8): `make install` is in README and `make help`, and the
long commands in README say how long they take."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# commands that run for minutes on the 2-core development machine: README gives the time each took beside it
LONG = ("make smoke", "python train.py", "helm probe --run", "helm embed")
DURATION = re.compile(r"\b\d[\d.,]*\s*(?:s|min|h)\b")


def command_groups(text: str) -> list[str]:
    """Each shell command of README's bash blocks with its continuation lines and the comment lines just above."""
    groups = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        comments: list[str] = []
        lines = block.splitlines()
        i = 0
        while i < len(lines):
            line = lines[i]
            if line.lstrip().startswith("#"):
                comments.append(line)
            elif line.strip():
                command = [line]
                while command[-1].split("#")[0].rstrip().endswith("\\") and i + 1 < len(lines):
                    i += 1
                    command.append(lines[i])
                groups.append("\n".join(command) + "\n" + "\n".join(comments))
                comments = []
            i += 1
    return groups


def test_command_groups_keep_continuations_and_comments() -> None:
    text = "```bash\n# takes 3 min\npython train.py --a \\\n    --b  # x\nhelm embed --c\n```\n"
    assert command_groups(text) == ["python train.py --a \\\n    --b  # x\n# takes 3 min", "helm embed --c\n"]


def test_make_install_is_in_make_help_and_readme() -> None:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    out = subprocess.run(["make", "-s", "help"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert re.search(r"^make install\s+- ", out, re.M), out
    readme = (REPO / "README.md").read_text()
    assert any(g.startswith("make install") for g in command_groups(readme))


@pytest.mark.parametrize("prefix", LONG)
def test_long_readme_commands_say_how_long_they_take(prefix: str) -> None:
    groups = [g for g in command_groups((REPO / "README.md").read_text()) if g.startswith(prefix)]
    assert groups, f"README has no `{prefix}` command"
    for group in groups:
        assert DURATION.search(group), f"no expected time beside:\n{group}"
