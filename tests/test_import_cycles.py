"""No import cycle among ``daemon/``, ``handlers/`` and ``providers/``, lazy imports included.

Every module's imports are read with ``ast`` (top level, inside functions, under
``if TYPE_CHECKING:``) and resolved to modules of the tree: ``from pkg import name`` where
``name`` is a submodule counts as that submodule, and importing ``a.b.c`` also imports the
packages ``a`` and ``a.b`` (their ``__init__``). A strongly connected component of more than
one module (or a module importing itself) is a cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("daemon", "handlers", "providers")


def _modules(root: Path) -> dict[str, Path]:
    """Every module of the three packages: dotted name -> file."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _with_parents(name: str, modules: Mapping[str, Path]) -> set[str]:
    """``name`` and the packages above it that are modules of the tree."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & modules.keys()


def _imports(name: str, path: Path, modules: Mapping[str, Path]) -> set[str]:
    """The modules of the tree that ``name`` (at ``path``) imports, anywhere in its body."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                out |= _with_parents(alias.name, modules)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            out |= _with_parents(source, modules)
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                if sub in modules:
                    out |= _with_parents(sub, modules)
    out.discard(name)  # a package's own __init__ naming itself is not an edge
    return out


def _cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the modules of the tree it imports."""
    modules = _modules(root)
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_the_cycle_finder_reports_a_lazy_and_a_type_checking_cycle(tmp_path: Path) -> None:
    """A cycle closed only by a function-level import and one closed by a TYPE_CHECKING
    import are both found, through a ``from package import submodule``."""
    pkg = tmp_path / "daemon"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from daemon.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from daemon import a\n")
    (pkg / "c.py").write_text("import daemon.d\n")
    (pkg / "d.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .c import x\n"
    )
    for package in ("handlers", "providers"):
        (tmp_path / package).mkdir()
    assert _cycles(import_graph(tmp_path)) == [
        ["daemon.a", "daemon.sub.b"],
        ["daemon.c", "daemon.d"],
    ]


def test_no_import_cycle_among_daemon_handlers_and_providers() -> None:
    """No module of the three packages reaches itself through its imports, lazy ones included."""
    cycles = _cycles(import_graph())
    assert cycles == [], "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)
