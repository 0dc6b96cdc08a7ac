"""helm/ imports point down only: the import graph of the package, read from the AST of every module with
function-level imports included, has no cycle; and every module imports alone in a fresh interpreter (no module
works only because another one happened to be imported first)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "helm"


def module_name(file: Path) -> str:
    parts = file.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    """Dotted name -> file of every module of helm/ (a package is its __init__.py)."""
    return {module_name(file): file for file in sorted(PACKAGE.rglob("*.py"))}


def _imported(node: ast.AST, here: str, is_package: bool, modules: dict[str, Path]) -> list[str]:
    """The helm modules one import statement (or ``importlib.import_module("literal")`` call) loads."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        if node.level:  # relative: resolved against this module's package
            package = here.split(".") if is_package else here.split(".")[:-1]
            base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        # `from helm.x import y` loads helm.x, and helm.x.y as well where y is a submodule
        names = [base] + [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules]
    elif (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "import_module"
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    ):
        names = [node.args[0].value]
    else:
        return []
    # `import helm.models.config` names a module; a package's name means its __init__.py (the node `helm.models`)
    return [name for name in names if name in modules and name != here]


def import_graph() -> dict[str, set[str]]:
    """Module -> the helm modules it imports anywhere in its body (top level, functions, ``TYPE_CHECKING``)."""
    modules = all_modules()
    graph: dict[str, set[str]] = {}
    for name, file in modules.items():
        tree = ast.parse(file.read_text(), filename=str(file))
        is_package = file.name == "__init__.py"
        graph[name] = {dep for node in ast.walk(tree) for dep in _imported(node, name, is_package, modules)}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle (its modules in import order, the first repeated at the end), or None; depth-first search."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return path[path.index(dep) :] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def all_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per knot of mutually importing modules (strongly connected component, Tarjan), so a failure names
    every knot at once."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    knots: list[set[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for dep in graph.get(node, ()):
            if dep not in index:
                connect(dep)
                low[node] = min(low[node], low[dep])
            elif dep in stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            knot = {stack.pop()}
            while node not in knot:
                knot.add(stack.pop())
            if len(knot) > 1:
                knots.append(knot)

    for node in sorted(graph):
        if node not in index:
            connect(node)
    inside = [{n: graph[n] & knot for n in knot} for knot in knots]
    return sorted(find_cycle(sub) for sub in inside)


def test_graph_reader_sees_function_level_relative_and_submodule_imports():
    """The reader itself: a cycle hidden in a function, a relative import and `from pkg import submodule`."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None
    two_knots = {**graph, "x": {"y"}, "y": {"x", "a"}}
    assert all_cycles(two_knots) == [["a", "b", "c", "a"], ["x", "y", "x"]]
    modules = {"helm": Path(), "helm.models": Path(), "helm.models.config": Path(), "helm.run": Path()}
    function_level = ast.parse("def f():\n    from ..run import atomic_write\n")
    found = {d for n in ast.walk(function_level) for d in _imported(n, "helm.models.config", False, modules)}
    assert found == {"helm.run"}
    package_relative = ast.parse("from . import config\n")
    found = {d for n in ast.walk(package_relative) for d in _imported(n, "helm.models", True, modules)}
    assert found == {"helm.models.config"}
    submodule = ast.parse("from helm import models\n")
    found = {d for n in ast.walk(submodule) for d in _imported(n, "helm.run", False, modules)}
    assert found == {"helm", "helm.models"}


def test_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 40, sorted(graph)  # the whole package was read
    cycles = all_cycles(graph)
    assert not cycles, "import cycles in helm/: " + "; ".join(" -> ".join(cycle) for cycle in cycles)


# Third-party libraries the children share (imported once, before any helm module); a missing one is left out.
SHARED = ("numpy", "yaml", "torch", "lightning.pytorch", "transformers", "safetensors.torch", "scipy.stats",
          "sklearn.linear_model", "pandas", "matplotlib.pyplot", "timm.optim", "tokenizers", "tqdm.auto")  # fmt: skip
# One interpreter imports SHARED, then forks a child per helm module that imports only that module: the child starts
# with no helm module loaded (a fresh interpreter as far as helm is concerned), in milliseconds instead of the
# seconds a new interpreter needs to import torch again. A child's failure comes back as its traceback's last lines.
ALONE = """
import contextlib, importlib, json, os, sys, traceback
for name in sys.argv[2:]:
    with contextlib.suppress(ImportError):
        importlib.import_module(name)
assert not [m for m in sys.modules if m == "helm" or m.startswith("helm.")], "helm imported before the children"
failures = {}
for module in json.loads(sys.argv[1]):
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            importlib.import_module(module)
            code = 0
        except BaseException:
            os.write(write, traceback.format_exc()[-3000:].encode())
            code = 1
        os._exit(code)
    os.close(write)
    with os.fdopen(read) as pipe:
        message = pipe.read()
    if os.waitpid(pid, 0)[1] != 0:
        failures[module] = message or "the child died"
print(json.dumps(failures))
"""


@pytest.fixture(scope="module")
def alone_failures() -> dict[str, str]:
    done = subprocess.run(
        [sys.executable, "-c", ALONE, json.dumps(sorted(all_modules())), *SHARED],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.parametrize("module", sorted(all_modules()))
def test_every_module_imports_alone(module, alone_failures):
    """Optional extras (mamba_ssm, ViennaRNA, DNA Chisel) may be missing: every module still imports without them."""
    assert module not in alone_failures, f"`import {module}` alone fails:\n{alone_failures[module]}"


def test_a_module_that_needs_another_imported_first_is_caught(tmp_path):
    """The fork runner sees a failure that an import order elsewhere would hide."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "good.py").write_text("import json\n")
    (tmp_path / "pkg" / "bad.py").write_text("import sys\nsys.modules['pkg.good'].VALUE\n")
    modules = ["pkg.good", "pkg.bad"]
    done = subprocess.run([sys.executable, "-c", ALONE, json.dumps(modules)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, check=True)  # fmt: skip
    failures = json.loads(done.stdout.splitlines()[-1])
    assert list(failures) == ["pkg.bad"] and "KeyError: 'pkg.good'" in failures["pkg.bad"]
