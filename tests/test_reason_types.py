"""The quarantine reasons are one Literal: mypy refuses a reason that is not in it."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from mypy import api

ROOT = Path(__file__).resolve().parent.parent

_CALL = """\
from __future__ import annotations

from pathlib import Path

from handlers.quarantine import quarantine
from providers.errors import Permanent, RejectedFile


def go(src: Path, qdir: Path) -> None:
    quarantine(
        src, qdir, reason={reason!r}, detail="", inbox="in", size=1, sha256=None, now=0.0
    )
    RejectedFile({reason!r}, "")
    Permanent("", reason={reason!r})
"""


def _mypy(tmp_path: Path, reason: str) -> tuple[str, int]:
    snippet = tmp_path / "snippet.py"
    snippet.write_text(textwrap.dedent(_CALL.format(reason=reason)), encoding="utf-8")
    stdout, _, status = api.run(
        [
            "--strict",
            "--follow-imports=silent",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--config-file",
            "",
            str(snippet),
        ]
    )
    return stdout, status


def test_a_reason_not_in_the_literal_fails_mypy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """quarantine(reason=...), RejectedFile(...) and Permanent(reason=...) with a code that is
    not a Reason are three mypy errors; with a Reason, none."""
    monkeypatch.chdir(ROOT)  # mypy finds handlers/ and providers/ from the repository root
    out, status = _mypy(tmp_path, "no_such_reason")
    assert status == 1
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert len(errors) == 3
    assert all("Literal['no_such_reason']" in line and "[arg-type]" in line for line in errors)
    out, status = _mypy(tmp_path, "empty")
    assert (status, out.strip()) == (0, "Success: no issues found in 1 source file")
