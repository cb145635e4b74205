"""No test module imports another test module: shared fakes and rigs live in their own modules."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).parent


# Imports still waiting for their move, each with where it goes. The runtime helper's branch
# (issue 15) moves the running-daemon harness ``running()`` to tests/harness.py; once it has,
# these entries must go (the second test fails on an entry that no longer occurs).
def _imports_of_test_modules(path: Path, root: Path = TESTS) -> set[tuple[str, str, str]]:
    """(file, module, name) for every import of a ``tests.test_*`` module in ``path`` (a file
    under the tests folder ``root``), lazy ones inside functions included (``import
    tests.test_x`` counts with name ``*``)."""
    found: set[tuple[str, str, str]] = set()
    rel = path.relative_to(root).as_posix()
    package = ".".join(("tests", *path.relative_to(root).parent.parts))
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _is_test_module(alias.name):
                    found.add((rel, alias.name, "*"))
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(node, package)
            for alias in node.names:
                if _is_test_module(module) or _is_test_module(f"{module}.{alias.name}"):
                    found.add((rel, module, alias.name))
    return found


def _absolute(node: ast.ImportFrom, package: str) -> str:
    if not node.level:
        return node.module or ""
    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
    return ".".join([*parts, *([node.module] if node.module else [])])


def _is_test_module(module: str) -> bool:
    return any(part.startswith("test_") for part in module.split(".")[1:]) and (
        module.startswith("tests.")
    )


def _all_imports() -> set[tuple[str, str, str]]:
    found: set[tuple[str, str, str]] = set()
    for path in sorted(TESTS.rglob("*.py")):
        found |= _imports_of_test_modules(path)
    return found


def test_no_test_module_imports_another_test_module() -> None:
    """Every import of a ``tests.test_*`` module from anywhere under tests/ is a failure (what
    several tests share belongs in tests/fakes.py, tests/rigs.py or the harness)."""
    assert _all_imports() == set()


def test_the_check_sees_absolute_relative_and_lazy_imports(tmp_path: Path) -> None:
    """The scan finds ``from tests.test_x import y``, ``import tests.test_x``, a relative
    ``from .test_x import y`` and an import inside a function, and nothing else."""
    root = tmp_path / "tests"
    sample = root / "contracts" / "sample.py"
    sample.parent.mkdir(parents=True)
    sample.write_text(
        "from tests.test_a import one\n"
        "import tests.test_b\n"
        "from .test_c import three\n"
        "from tests import test_d\n"
        "from tests.fakes import FakeClock\n"
        "def later():\n"
        "    from tests.contracts.test_e import five\n",
        encoding="utf-8",
    )
    found = _imports_of_test_modules(sample, root)
    where = "contracts/sample.py"
    assert found == {
        (where, "tests.test_a", "one"),
        (where, "tests.test_b", "*"),
        (where, "tests.contracts.test_c", "three"),
        (where, "tests", "test_d"),
        (where, "tests.contracts.test_e", "five"),
    }
