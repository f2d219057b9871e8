"""The package's structure as a test: no import circle among its modules, no module reaching into
another's private names, and no module too big to read in one sitting. Read from the source with ``ast``;
nothing is imported or run."""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import agent_relay

PACKAGE = "agent_relay"
ROOT = Path(agent_relay.__file__).resolve().parent
MAX_LINES = 500
# Underscore names that are public API by convention: SQLAlchemy's Row (a named tuple) and namedtuple.
PUBLIC_UNDERSCORE = frozenset({"_mapping", "_asdict", "_fields", "_replace", "_make"})


@dataclasses.dataclass(frozen=True)
class Module:
    name: str  # dotted: agent_relay.ledger.writer (a package by its own name: agent_relay.ledger)
    path: Path
    tree: ast.Module
    lines: int

    @property
    def is_package(self) -> bool:
        return self.path.name == "__init__.py"

    @property
    def where(self) -> str:
        return str(self.path.relative_to(ROOT.parent))


def _modules() -> dict[str, Module]:
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        text = path.read_text(encoding="utf-8")
        name = ".".join(parts)
        found[name] = Module(name, path, ast.parse(text, filename=str(path)), len(text.splitlines()))
    return found


MODULES = _modules()


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _base(module: Module, node: ast.ImportFrom) -> str:
    """The absolute module an ``from ... import`` names (relative imports resolved)."""
    if node.level == 0:
        return node.module or ""
    parts = module.name.split(".")
    if not module.is_package:
        parts = parts[:-1]  # a module's relative imports start from the package it is in
    if node.level > 1:
        parts = parts[: len(parts) - (node.level - 1)]
    return ".".join([*parts, *([node.module] if node.module else [])])


@dataclasses.dataclass(frozen=True)
class Import:
    """One name an ``import`` statement takes from a package module: ``target`` is the module it runs
    (a submodule imported by name counts as that submodule, ``from . import semconv`` as
    ``agent_relay.semconv``); ``name`` is the name taken from it (``None``: the module itself)."""

    target: str
    name: str | None
    line: int


def _imports(module: Module) -> Iterator[Import]:
    """Every import of a package module in ``module``, anywhere: top level, functions, ``if
    TYPE_CHECKING:`` blocks."""
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == PACKAGE:
                    yield Import(alias.name, None, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = _base(module, node)
            if base.split(".")[0] != PACKAGE:
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in MODULES:
                    yield Import(sub, None, node.lineno)
                else:
                    yield Import(base, alias.name, node.lineno)


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph() -> tuple[dict[str, set[str]], list[str]]:
    """Module -> the package modules importing it runs; and the imports that name no module of the
    package (a typo, or a module moved away), which would leave the graph incomplete.

    Importing ``a.b.c`` also runs package ``a.b``'s ``__init__`` -- unless the importer is itself inside
    ``a.b`` (then that package is already being imported). So ``agent_relay/__init__.py`` is never run by
    an import in a submodule; only an explicit ``import agent_relay`` / ``from agent_relay import x``
    (``x`` not a submodule) makes it a dependency.
    """
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    unresolved = []
    for module in MODULES.values():
        inside = set(_ancestors(module.name)) | {module.name}
        for imp in _imports(module):
            if imp.target not in MODULES:
                unresolved.append(f"{module.where}:{imp.line} imports {imp.target}, which is not a module")
                continue
            runs = {imp.target, *(p for p in _ancestors(imp.target) if p not in inside)}
            graph[module.name] |= runs - {module.name}
    return graph, unresolved


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a path that ends where it starts (``[a, b, a]``), or ``None``."""
    done: set[str] = set()
    path: list[str] = []
    on_path: set[str] = set()

    def visit(node: str) -> list[str] | None:
        path.append(node)
        on_path.add(node)
        for nxt in sorted(graph[node]):
            if nxt in on_path:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in done:
                cycle = visit(nxt)
                if cycle is not None:
                    return cycle
        path.pop()
        on_path.discard(node)
        done.add(node)
        return None

    for start in sorted(graph):
        if start not in done:
            cycle = visit(start)
            if cycle is not None:
                return cycle
    return None


def test_the_graph_sees_the_package() -> None:
    # the walk found the package, and the graph reads every kind of import the package uses
    expected = {"agent_relay", "agent_relay.ledger", "agent_relay.ledger.writer", "agent_relay.cli"}
    assert expected <= MODULES.keys()
    graph, _ = import_graph()
    assert "agent_relay.semconv" in graph["agent_relay.spans"]  # `from . import semconv`
    assert "agent_relay.ledger.columns" in graph["agent_relay.ledger.sql_calls"]  # `from . import columns`
    assert "agent_relay.errors" in graph["agent_relay.ledger.writer"]  # `from ..errors import ...`
    assert "agent_relay" not in graph["agent_relay.spans"]  # a submodule does not run the package init
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle() -> None:
    graph, unresolved = import_graph()
    assert not unresolved, "imports the graph cannot place:\n" + "\n".join(unresolved)
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle (TYPE_CHECKING and function-level imports included): " + " -> ".join(
        cycle or []
    )


def _defined_names(tree: ast.Module) -> set[str]:
    """The names a module defines itself: functions, classes, assignment targets (``self._x = ...``
    included) and ``__slots__`` strings."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "__slots__" for t in targets) and node.value:
                names |= {
                    c.value
                    for c in ast.walk(node.value)
                    if isinstance(c, ast.Constant) and isinstance(c.value, str)
                }
    return names


def test_no_module_uses_another_modules_private_names() -> None:
    found = []
    for module in MODULES.values():
        for imp in _imports(module):
            if imp.name is not None and _private(imp.name):
                found.append(f"{module.where}:{imp.line} imports {imp.name} from {imp.target}")
        defined = _defined_names(module.tree)
        for node in ast.walk(module.tree):
            if (
                isinstance(node, ast.Attribute)
                and _private(node.attr)
                and node.attr not in PUBLIC_UNDERSCORE
                and node.attr not in defined
            ):
                found.append(
                    f"{module.where}:{node.lineno} uses .{node.attr}, which {module.name} does not define"
                )
    assert not found, "private names used across modules:\n" + "\n".join(found)


def test_private_name_rules_catch_what_they_should() -> None:
    tree = ast.parse("class A:\n    __slots__ = ('_a',)\n    def f(self):\n        self._b = 1\n")
    assert _defined_names(tree) == {"__slots__", "_a", "_b", "A", "f"}
    assert _private("_x") and not _private("__init__") and not _private("x")


def test_no_module_is_over_500_lines() -> None:
    big = sorted(
        (f"{m.where}: {m.lines} lines" for m in MODULES.values() if m.lines > MAX_LINES),
    )
    assert not big, f"modules over {MAX_LINES} lines (split them):\n" + "\n".join(big)
