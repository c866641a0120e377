"""The package's import layers: types and constants at the bottom, stores above them,
operations above stores, the command line on top.

Two checks. Each module is imported on its own in a fresh interpreter (in reverse order of
name, so that no module is first imported as a side effect of an earlier one): an import
circle that only works in one order fails here. And the source of every module is read
(AST) to check that nothing imports from a layer above its own — function-level imports
included, since a lazy import that closes a circle is still a circle — and that the import
graph has no cycle.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
import snapdir

PACKAGE_DIR = Path(snapdir.__file__).parent

#: Bottom first. A module may import from its own layer or any below it. A package's
#: ``__init__`` is the package's own name (``snapdir.stores``); ``x.*`` is every module of
#: package ``x`` not listed elsewhere.
LAYERS: list[tuple[str, set[str]]] = [
    ("core", {"snapdir._snapdir", "snapdir._errors", "snapdir._redact", "snapdir._lazy"}),
    ("types", {"snapdir._types", "snapdir._registry", "snapdir._runtime"}),
    ("stores", {"snapdir.stores", "snapdir.stores.*"}),
    (
        "operations",
        {
            "snapdir",
            "snapdir._cache",
            "snapdir._common",
            "snapdir._manifest",
            "snapdir._diff",
            "snapdir._dryrun",
            "snapdir._push",
            "snapdir._pull",
            "snapdir._sync",
            "snapdir._verify",
            "snapdir.cache_admin",
            "snapdir.lifecycle",
            "snapdir.lifecycle.*",
            "snapdir.runs",
            "snapdir.runs.*",
            "snapdir.recording",
            "snapdir.recording.*",
            "snapdir.names",
            "snapdir.names.*",
        },
    ),
    ("tools", {"snapdir._progress", "snapdir.testing"}),
    ("cli-support", {"snapdir.cli._common", "snapdir.cli._output"}),
    ("cli-commands", {"snapdir.cli.*"}),
    ("cli", {"snapdir.cli", "snapdir.__main__"}),
]


def module_files() -> dict[str, Path]:
    """Every Python module of the installed package, by dotted name."""
    out: dict[str, Path] = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        rel = path.relative_to(PACKAGE_DIR.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = module_files()


def layer_of(module: str) -> int:
    for i, (_, names) in enumerate(LAYERS):
        if module in names:
            return i
    best = None
    for i, (_, names) in enumerate(LAYERS):
        for n in names:
            wider = best is None or len(n) > best[1]
            if n.endswith(".*") and module.startswith(n[:-1]) and wider:
                best = (i, len(n))
    if best is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS in {__file__}")
    return best[0]


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(module: str, path: Path) -> list[tuple[str, int, bool]]:
    """``(imported snapdir module, line, runtime)`` for every import in the module's source;
    ``runtime`` is false for imports under ``if TYPE_CHECKING:`` (never executed)."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    here = module if is_pkg else module.rpartition(".")[0]
    found: list[tuple[str, int, bool]] = []

    def target(name: str) -> str | None:
        while name and name not in MODULES and name != "snapdir._snapdir":
            name = name.rpartition(".")[0]
        return name or None

    def visit(node: ast.AST, runtime: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for stmt in node.body:
                visit(stmt, False)
            for stmt in node.orelse:
                visit(stmt, runtime)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "snapdir":
                    t = target(alias.name)
                    if t:
                        found.append((t, node.lineno, runtime))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            if base.split(".")[0] == "snapdir":
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    t = sub if (sub in MODULES or sub == "snapdir._snapdir") else target(base)
                    if t:
                        found.append((t, node.lineno, runtime))
        for child in ast.iter_child_nodes(node):
            visit(child, runtime)

    visit(tree, True)
    return found


def test_every_module_has_a_layer() -> None:
    assert "snapdir.cli" in MODULES
    assert "snapdir.stores.file" in MODULES
    for module in MODULES:
        layer_of(module)


def test_no_module_imports_from_a_higher_layer() -> None:
    bad = []
    for module, path in MODULES.items():
        mine = layer_of(module)
        for imported, line, _ in imports_of(module, path):
            theirs = layer_of(imported)
            if theirs > mine:
                bad.append(
                    f"{path.relative_to(PACKAGE_DIR.parent)}:{line}: {module} "
                    f"({LAYERS[mine][0]}) imports {imported} ({LAYERS[theirs][0]})"
                )
    assert not bad, "imports from a higher layer:\n" + "\n".join(bad)


def test_the_runtime_import_graph_has_no_cycle() -> None:
    graph = {
        m: sorted({t for t, _, runtime in imports_of(m, p) if runtime and t != m})
        for m, p in MODULES.items()
    }
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def dfs(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in graph.get(m, []):
            if state.get(n) == 1:
                cycle = [*stack[stack.index(n) :], n]
                raise AssertionError("import circle: " + " -> ".join(cycle))
            if n not in state:
                dfs(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            dfs(m)


def test_the_checks_see_a_violation(tmp_path: Path) -> None:
    """The AST reader finds lazy (function-level) imports and resolves relative ones."""
    src = tmp_path / "_types.py"
    src.write_text(
        "TYPE_CHECKING = False\n"
        "if TYPE_CHECKING:\n    from .stores.file import FileStore\n"
        "def f():\n    from .stores import registered_schemes\n    from . import _manifest\n"
    )
    got = imports_of("snapdir._types", src)
    assert ("snapdir.stores.file", 3, False) in got
    assert ("snapdir.stores", 5, True) in got
    assert ("snapdir._manifest", 6, True) in got
    assert layer_of("snapdir.stores") > layer_of("snapdir._types")


# Reverse order: a module is never first loaded as a side effect of one imported before it.
IMPORTABLE = sorted((m for m in MODULES if m != "snapdir.__main__"), reverse=True)


@pytest.mark.parametrize("module", IMPORTABLE)
def test_each_module_imports_alone_in_a_fresh_interpreter(module: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", f"import {module}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"import {module} failed alone:\n{proc.stderr}"


def test_main_module_runs_alone() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "snapdir", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("snapdir ")
