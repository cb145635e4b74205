"""The README's quarantine table names every reason code the code can produce, and no other."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

from providers.errors import REASONS

ROOT = Path(__file__).resolve().parent.parent
# Where reasons are made: validation, limits, routing, dispatch, provider errors.
SOURCES = [ROOT / "handlers", ROOT / "providers"]
_CODE = re.compile(r"[a-z]+(_[a-z]+)*")


def _str(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def _name(func: ast.expr) -> str:
    return func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")


def _returns_reason_pair(fn: ast.FunctionDef) -> bool:
    """A function typed ``-> Refusal`` (or ``| None``): a ``(reason, detail)`` verdict."""
    return fn.returns is not None and "Refusal" in ast.unparse(fn.returns)


def _reasons_in(tree: ast.AST) -> Iterator[str]:
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and _name(node.func) == "RejectedFile"
            and node.args
            and (value := _str(node.args[0])) is not None
        ):
            yield value
        if isinstance(node, ast.Call) and _name(node.func) == "Permanent":
            for kw in node.keywords:
                if kw.arg == "reason" and (value := _str(kw.value)) is not None:
                    yield value
        if isinstance(node, ast.FunctionDef) and _returns_reason_pair(node):
            for inner in ast.walk(node):
                if (
                    isinstance(inner, ast.Return)
                    and isinstance(inner.value, ast.Tuple)
                    and (value := _str(inner.value.elts[0])) is not None
                ):
                    yield value
                if isinstance(inner, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == "reason" for t in inner.targets
                ):
                    yield from (
                        c.value
                        for c in ast.walk(inner.value)
                        if isinstance(c, ast.Constant) and isinstance(c.value, str)
                    )


def produced_reasons() -> set[str]:
    """Every quarantine reason literal in the code that makes them."""
    found: set[str] = set()
    for folder in SOURCES:
        for path in folder.rglob("*.py"):
            if "emulator" in path.parts:
                continue  # the fake provider's own answers, not inboxd's reasons
            found.update(_reasons_in(ast.parse(path.read_text("utf-8"))))
    return {r for r in found if _CODE.fullmatch(r)}


def readme_reasons() -> list[str]:
    """The reason column of the README's quarantine table, in order."""
    text = (ROOT / "README.md").read_text("utf-8")
    table = text.split("| reason | meaning |", 1)[1].split("\n\n", 1)[0]
    return re.findall(r"^\| `([a-z_]+)` \|", table, flags=re.MULTILINE)


def test_every_reason_the_code_produces_is_in_reasons() -> None:
    """Each reason literal of RejectedFile, Permanent and the routing/validation verdicts is
    one of providers.errors.Reason (mypy checks the typed ones; this catches a literal made
    where a plain str is expected)."""
    produced = produced_reasons()
    assert {"empty", "not_found", "no_provider", "upload_failed"} <= produced  # the scan works
    assert produced - set(REASONS) == set()


def test_readme_table_lists_exactly_the_reasons() -> None:
    """The README's quarantine table has one row per Reason, and no other row."""
    rows = readme_reasons()
    assert sorted(rows) == sorted(set(rows))  # no row twice
    assert set(rows) == set(REASONS)
