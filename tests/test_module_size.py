"""No module of ``daemon/``, ``handlers/`` or ``providers/`` passes 400 lines (house style:
past ~400 lines a module is split by meaning)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("daemon", "handlers", "providers")
MAX_LINES = 400


def _too_long(root: Path) -> dict[str, int]:
    """Each module over MAX_LINES, by its path under ``root``, with its line count."""
    found: dict[str, int] = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            lines = len(path.read_text(encoding="utf-8").splitlines())
            if lines > MAX_LINES:
                found[path.relative_to(root).as_posix()] = lines
    return found


def test_no_module_passes_400_lines() -> None:
    """Every module of the three packages has at most 400 lines (the failure lists the others)."""
    assert _too_long(ROOT) == {}


def test_the_check_names_each_long_module_with_its_length(tmp_path: Path) -> None:
    """The check reports a module of 401 lines by its path and count, and passes one of 400."""
    (tmp_path / "daemon" / "sub").mkdir(parents=True)
    (tmp_path / "handlers").mkdir()
    (tmp_path / "providers").mkdir()
    (tmp_path / "daemon" / "sub" / "long.py").write_text("x = 1\n" * 401, encoding="utf-8")
    (tmp_path / "handlers" / "fits.py").write_text("x = 1\n" * 400, encoding="utf-8")
    assert _too_long(tmp_path) == {"daemon/sub/long.py": 401}
