"""No function in helm/ is longer than 80 lines (docstring and decorators included): a longer one is split into
named pieces, each readable on one screen."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAX_LINES = 80


def _lengths(node: ast.AST, prefix: str, found: dict[str, int]) -> None:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
            start = min([child.lineno, *(d.lineno for d in child.decorator_list)])
            found[f"{prefix}{child.name}"] = child.end_lineno - start + 1
            _lengths(child, f"{prefix}{child.name}.", found)
        elif isinstance(child, ast.ClassDef):
            _lengths(child, f"{prefix}{child.name}.", found)


def functions(root: Path = REPO / "helm") -> dict[str, int]:
    """``path::qualified.name`` (path from root's parent) -> length in lines of every function and method."""
    found: dict[str, int] = {}
    for file in sorted(root.rglob("*.py")):
        _lengths(ast.parse(file.read_text(), filename=str(file)), f"{file.relative_to(root.parent)}::", found)
    return found


def test_the_reader_measures_nested_functions_and_methods(tmp_path):
    (tmp_path / "m.py").write_text("class A:\n    @staticmethod\n    def f():\n        def g():\n            pass\n\n"
                                   "        return 1\n\n\ndef h(): pass\n")  # fmt: skip
    sizes = {name.split("::")[1]: n for name, n in functions(tmp_path).items()}
    assert sizes == {"A.f": 6, "A.f.g": 2, "h": 1}  # A.f: from its decorator to its last line


def test_no_function_over_80_lines():
    long = {name: n for name, n in functions().items() if n > MAX_LINES}
    assert not long, f"functions over {MAX_LINES} lines (split them into named pieces): {long}"
