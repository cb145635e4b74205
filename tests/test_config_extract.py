"""check-config refuses ``extract = true`` where the inbox's purpose has no extracted text."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from daemon.cli import main


def _errors(capsys: pytest.CaptureFixture[str], config: Path) -> tuple[int, list[str]]:
    code = main(["check-config", "-c", str(config)])
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if line.startswith("config error: ")]


def _inbox(path: Path, providers: str, purpose: str) -> str:
    return (
        f'[[inbox]]\nname = "scans"\npath = "{path}"\nproviders = {providers}\n'
        f"purpose = {purpose}\nextract = true\n"
    )


def test_extract_with_a_purpose_without_text_is_refused(
    write: Callable[[str], Path],
    inbox: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Kimi serves no text for ``image`` files: extract = true there exits 2 with one line
    naming the inbox, the key and the fix."""
    monkeypatch.setenv("MOONSHOT_API_KEY", "sk-test")
    config = write(_inbox(inbox, '["kimi"]', '{ kimi = "image" }'))
    assert _errors(capsys, config) == (
        2,
        [
            "config error: inbox[0].extract: inbox 'scans' uploads to Kimi with purpose "
            "'image', which has no extracted text; set extract = false, or use a purpose "
            "with text (file-extract)"
        ],
    )


def test_extract_is_checked_for_every_provider_of_the_inbox(
    write: Callable[[str], Path],
    inbox: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An inbox that may go to GLM as ``fine-tune`` (no text) is refused for GLM alone; its
    Kimi ``file-extract`` purpose is fine."""
    monkeypatch.setenv("MOONSHOT_API_KEY", "sk-test")
    monkeypatch.setenv("ZHIPUAI_API_KEY", "id.secret")
    config = write(_inbox(inbox, '["kimi", "glm"]', '{ glm = "fine-tune" }'))
    assert _errors(capsys, config) == (
        2,
        [
            "config error: inbox[0].extract: inbox 'scans' uploads to GLM with purpose "
            "'fine-tune', which has no extracted text; set extract = false, or use a purpose "
            "with text (agent, batch, code-interpreter, file-extract)"
        ],
    )


def test_extract_with_a_purpose_with_text_passes(
    write: Callable[[str], Path],
    inbox: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``file-extract`` on Kimi has text: extract = true passes check-config (exit 0)."""
    monkeypatch.setenv("MOONSHOT_API_KEY", "sk-test")
    config = write(_inbox(inbox, '["kimi"]', '{ kimi = "file-extract" }'))
    assert _errors(capsys, config) == (0, [])
