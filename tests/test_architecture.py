"""Guards that keep the architecture as docs/architecture.md describes it.

Each test fails the suite when the tree drifts from a rule the project set itself:

* ``ruff check builder tests benchmarks`` reports nothing (ruff comes with the
  ``test`` extra, so CI's ``pip install -e '.[test]'`` has it);
* ``mypy --strict`` passes on the packages listed in ``pyproject.toml`` under
  ``[tool.pybuild] mypy-strict``.  A list of our own rather than mypy's per-module
  ``strict = true``: mypy applies ``strict`` from an override section to every
  module, so the list is the only way to be strict on some packages and not yet on
  others.  Modules outside the list are still analysed (``--follow-imports=silent``)
  so that listed code is checked against their real types, but their errors are
  not reported.  The list grows until it is every package under ``builder/``;
* no module under ``builder/`` passes 500 lines and no function 60, except the
  offenders named in the allow-lists below, which may only shrink: a listed entry
  that is now within the limit fails the test until it is taken off the list;
* SQL text and sqlite3 connections appear only in ``builder/store``;
* a package imports only packages of its own layer or a lower one.  The order is
  written once, here (``LAYERS``), and must match the "Module rules" table of
  docs/architecture.md.  Every ``import``/``from`` is checked, also those inside
  functions and under ``if TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
import functools
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "builder"

# The layers, lowest first: a package may import from its own layer and those below.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "syscalls", "interrupt", "textsafe", "untrusted", "platforms", "userns",
     "emulation", "limits", "rootpath", "replay"),
    ("dockerfile", "context", "layers"),
    ("store",),
    ("snapshot",),
    ("run", "image"),
    ("cache", "explain", "registry", "lint"),
    ("engine",),
    ("cli", "__main__", "entry"),
)
LAYER_OF = {name: index for index, names in enumerate(LAYERS) for name in names}
# builder/__init__.py (``__version__``) sits under every layer: anyone may import it
# and it imports nothing of ours.
PACKAGE_ROOT = "__init__"

MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60
# Modules over MAX_MODULE_LINES, as "builder/x/y.py", while they are being split.
# Only shrinks: an entry that fits fails the test until it is taken off.
MODULES_OVER_BUDGET: frozenset[str] = frozenset()
# Functions over MAX_FUNCTION_LINES, as "path:Class.function".  Only shrinks, too.
FUNCTIONS_OVER_BUDGET: frozenset[str] = frozenset()


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *argv], cwd=REPO, capture_output=True,
                          text=True, timeout=600)


def _require(module: str) -> None:
    probe = _run(module, "--version")
    if probe.returncode != 0:
        pytest.fail(f"{module} is not installed: pip install -e '.[test]'\n{probe.stderr}")


# -- lint and types -----------------------------------------------------------

def test_ruff_reports_nothing() -> None:
    _require("ruff")
    result = _run("ruff", "check", "--no-cache", "builder", "tests", "benchmarks")
    assert result.returncode == 0, result.stdout + result.stderr


def _strict_targets() -> list[str]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    names: list[str] = config["tool"]["pybuild"]["mypy-strict"]
    targets = []
    for name in names:
        path = REPO / name.replace(".", "/")
        if path.is_dir():
            targets.append(_rel(path))
        elif path.with_suffix(".py").is_file():
            targets.append(_rel(path.with_suffix(".py")))
        else:
            pytest.fail(f"pyproject.toml [tool.pybuild] mypy-strict: no module {name}")
    return targets


def test_mypy_strict_on_listed_packages(tmp_path: Path) -> None:
    _require("mypy")
    targets = _strict_targets()
    assert targets, "pyproject.toml [tool.pybuild] mypy-strict is empty"
    # A cache of its own: cold every time (a few seconds), never shared with a
    # mypy someone runs by hand on a half-edited tree.
    result = _run("mypy", "--strict", "--follow-imports=silent", "--no-error-summary",
                  "--cache-dir", str(tmp_path / "mypy-cache"), *targets)
    assert result.returncode == 0, result.stdout + result.stderr


# -- budgets ------------------------------------------------------------------

def _functions(tree: ast.AST, prefix: str = "") -> list[tuple[str, int]]:
    """Every function and method with its length in lines, as (qualified name, lines)."""
    found = []
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            name = prefix + node.name
            found.append((name, (node.end_lineno or node.lineno) - node.lineno + 1))
            found += _functions(node, name + ".")
        elif isinstance(node, ast.ClassDef):
            found += _functions(node, prefix + node.name + ".")
        else:
            found += _functions(node, prefix)
    return found


@functools.cache
def _over_budget() -> tuple[dict[str, int], dict[str, int]]:
    modules: dict[str, int] = {}
    functions: dict[str, int] = {}
    for path in _modules():
        text = path.read_text()
        lines = len(text.splitlines())
        if lines > MAX_MODULE_LINES:
            modules[_rel(path)] = lines
        for name, length in _functions(ast.parse(text, str(path))):
            if length > MAX_FUNCTION_LINES:
                functions[f"{_rel(path)}:{name}"] = length
    return modules, functions


def test_modules_within_line_budget() -> None:
    modules, _ = _over_budget()
    new = {m: n for m, n in modules.items() if m not in MODULES_OVER_BUDGET}
    assert not new, f"modules over {MAX_MODULE_LINES} lines: {new}"
    fixed = sorted(MODULES_OVER_BUDGET - modules.keys())
    assert not fixed, f"within budget now, take them off MODULES_OVER_BUDGET: {fixed}"


def test_functions_within_line_budget() -> None:
    _, functions = _over_budget()
    new = {f: n for f, n in functions.items() if f not in FUNCTIONS_OVER_BUDGET}
    assert not new, f"functions over {MAX_FUNCTION_LINES} lines: {new}"
    fixed = sorted(FUNCTIONS_OVER_BUDGET - functions.keys())
    assert not fixed, f"within budget now (or gone), take them off FUNCTIONS_OVER_BUDGET: {fixed}"


# -- layering -----------------------------------------------------------------

def _component(dotted: str) -> str:
    """The top-level part of builder a dotted name lives in (``builder.x.y`` -> ``x``)."""
    parts = dotted.split(".")
    if len(parts) == 1:
        return PACKAGE_ROOT
    name = parts[1]
    if (PACKAGE / name).is_dir() or (PACKAGE / f"{name}.py").is_file():
        return name
    return PACKAGE_ROOT   # an attribute of builder/__init__.py, e.g. __version__


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every builder module ``path`` imports, as (line, dotted name), wherever the import is."""
    package = ".".join(path.relative_to(REPO).parts[:-1])
    return _imports_in(path.read_text(), package, str(path))


def _imports_in(source: str, package: str, filename: str = "<test>") -> list[tuple[int, str]]:
    """``_imports`` of source text that lives in ``package`` (for relative imports)."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:   # relative: `.` is the package itself, `..` its parent
                parts = package.split(".")
                base = ".".join([*parts[: len(parts) - node.level + 1], *filter(None, [base])])
            # `from builder import limits` names a module; `from builder.x import y` a name in x.
            found += [(node.lineno, f"{base}.{alias.name}" if base == "builder" else base)
                      for alias in node.names]
    return [(line, name) for line, name in found if name.split(".")[0] == "builder"]


def _owner(path: Path) -> str:
    """The top-level part of builder a module belongs to (builder/x/y.py -> ``x``)."""
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def test_every_module_has_a_layer() -> None:
    unknown = sorted({_rel(p) for p in _modules() if _owner(p) not in {*LAYER_OF, PACKAGE_ROOT}})
    assert not unknown, f"not in LAYERS (tests/test_architecture.py): {unknown}"


def test_no_package_imports_a_higher_layer() -> None:
    wrong = []
    for path in _modules():
        own = _owner(path)
        for line, name in _imports(path):
            target = _component(name)
            if own == PACKAGE_ROOT:
                wrong.append(f"{_rel(path)}:{line}: the package root imports {name}")
            elif LAYER_OF.get(target, -1) > LAYER_OF.get(own, len(LAYERS)):
                wrong.append(f"{_rel(path)}:{line}: {own} (layer {LAYER_OF[own]}) imports "
                             f"{name} (layer {LAYER_OF[target]})")
    assert not wrong, "\n".join(wrong)


_SQL = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE\s+FROM|CREATE\s+(TABLE|INDEX)|PRAGMA)\b")


def test_sql_only_in_the_store() -> None:
    """The store owns its schema and every query (docs/architecture.md): no SQL text
    and no sqlite3 connection anywhere else (the CLI may name sqlite3's error class to
    print a full disk as one line)."""
    found = []
    for path in _modules():
        if _owner(path) == "store":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and _SQL.search(node.value) and "FROM" in node.value.upper():
                found.append(f"{_rel(path)}:{node.lineno}: SQL text")
            if isinstance(node, ast.Attribute) and node.attr == "connect" \
                    and isinstance(node.value, ast.Name) and node.value.id == "sqlite3":
                found.append(f"{_rel(path)}:{node.lineno}: sqlite3.connect")
    assert not found, "\n".join(found)


def _documented_layers() -> dict[str, int]:
    """The "Module rules" table of docs/architecture.md, as package -> layer."""
    text = (REPO / "docs" / "architecture.md").read_text()
    section = text.split("## Module rules", 1)[1].split("\n## ", 1)[0]
    layers: dict[str, int] = {}
    for row in section.splitlines():
        cells = [cell.strip() for cell in row.strip().strip("|").split("|")]
        if len(cells) < 2 or not cells[0].isdigit():
            continue   # the header, its rule, prose
        for name in re.findall(r"`([^`]+)`", cells[1]):
            layers[name] = int(cells[0])
    return layers


def test_documented_layers_match() -> None:
    documented = _documented_layers()
    assert documented, "docs/architecture.md: no Module rules table found"
    assert documented == LAYER_OF, (
        f"docs/architecture.md only: {sorted(documented.items() - LAYER_OF.items())}; "
        f"tests/test_architecture.py only: {sorted(LAYER_OF.items() - documented.items())}")


@pytest.mark.parametrize(("source", "expected"), [
    ("import builder.layers.tar_write", ["builder.layers.tar_write"]),
    ("from builder import limits, errors", ["builder.limits", "builder.errors"]),
    ("from builder.store.store import Store", ["builder.store.store"]),
    ("def f():\n    from builder.engine import engine", ["builder.engine"]),
    ("if TYPE_CHECKING:\n    import builder.cli", ["builder.cli"]),
    ("from . import tar_read", ["builder.layers"]),
    ("from .. import store", ["builder.store"]),
    ("from ..engine.copy import x", ["builder.engine.copy"]),
    ("import os\nfrom typing import Any", []),
])
def test_imports_are_all_found(source: str, expected: list[str]) -> None:
    """The import scanner itself: relative, nested and multi-name imports all count."""
    assert [name for _, name in _imports_in(source, "builder.layers")] == expected
