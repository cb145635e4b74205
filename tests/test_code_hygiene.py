"""What a reviewer would flag, checked over daemon/, handlers/ and providers/: unused private
constants, ledger states spelled as literals, docstrings that point at code that is gone."""

from __future__ import annotations

import ast
import importlib
import io
import re
import tokenize
from collections.abc import Iterator
from pathlib import Path

from handlers.ledger import STATES

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("daemon", "handlers", "providers")
# ``providers.kimi``/``providers.glm`` in prose are config tables (``[providers.kimi]``).
_CONFIG_KEYS = re.compile(r"providers\.(kimi|glm)\b")
_REFERENCE = re.compile(r"\b((?:daemon|handlers|providers)(?:\.[A-Za-z_][A-Za-z0-9_]*)+)")
_PATH = re.compile(r"\b((?:daemon|handlers|providers)/[A-Za-z0-9_/]+\.py)\b")


def _sources() -> Iterator[tuple[Path, str]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield path, path.read_text("utf-8")


def _prose(source: str) -> Iterator[str]:
    """Every docstring (module, class, function, attribute) and comment of ``source``."""
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            yield node.value.value
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            yield token.string


def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            if not hasattr(target, attr):
                # a field or attribute declared on the class (set in __init__)
                return attr in getattr(target, "__annotations__", {})
            target = getattr(target, attr)
        return True
    return False


def test_every_private_module_constant_is_used() -> None:
    """A module-level ``_NAME = ...`` is read somewhere in its module (none is dead)."""
    unused = []
    for path, source in _sources():
        tree = ast.parse(source)
        defined = {
            target.id: node.lineno
            for node in tree.body
            if isinstance(node, ast.Assign | ast.AnnAssign)
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
            if isinstance(target, ast.Name)
            and target.id.startswith("_")
            and not target.id.startswith("__")
        }
        read = {
            node.id
            for node in ast.walk(tree)
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)
        }
        unused += [
            f"{path.relative_to(ROOT)}:{line}: {name}"
            for name, line in defined.items()
            if name not in read
        ]
    assert unused == []


def test_ledger_states_are_named_by_their_constants() -> None:
    """No ``transition(row, "done")``: every ledger transition names its state's constant."""
    literal = []
    for path, source in _sources():
        for node in ast.walk(ast.parse(source)):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "transition"
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and node.args[1].value in STATES
            ):
                literal.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.args[1].value!r}")
    assert literal == []


def test_docstrings_and_comments_point_at_code_that_exists() -> None:
    """Every ``daemon.x.y``/``handlers.x``/``providers.x`` reference and every
    ``daemon/x.py`` path in a docstring or comment names a module or object that exists."""
    stale = []
    for path, source in _sources():
        for text in _prose(source):
            for dotted in _REFERENCE.findall(_CONFIG_KEYS.sub("", text)):
                if not _resolves(dotted.rstrip(".")):
                    stale.append(f"{path.relative_to(ROOT)}: {dotted}")
            stale += [
                f"{path.relative_to(ROOT)}: {ref}"
                for ref in _PATH.findall(text)
                if not (ROOT / ref).exists()
            ]
    assert stale == []


# Classes that share a name on purpose: the emulator's and the SDK-facing ones are separate
# worlds, none here yet. Keep this empty unless a clash is the clearest naming.
_SHARED_CLASS_NAMES: frozenset[str] = frozenset()


def test_no_two_public_classes_share_a_name() -> None:
    """Two unrelated classes with one name (two ``Outcome``s, two ``Store``s) confuse every
    reader and every import: each class name under daemon/, handlers/, providers/ is unique."""
    where: dict[str, list[str]] = {}
    for path, source in _sources():
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                where.setdefault(node.name, []).append(str(path.relative_to(ROOT)))
    clashes = {
        name: paths
        for name, paths in where.items()
        if len(paths) > 1 and name not in _SHARED_CLASS_NAMES
    }
    assert clashes == {}
