"""daemon.ops.logs: text and JSON lines, the JOURNAL_STREAM rule, and secret redaction."""

from __future__ import annotations

import io
import json
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.config.settings import LogSettings
from daemon.ops.logs import setup_logging

SECRET = "sk-Test0123456789abcdefSECRET"
ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00"


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Put the root logger (and the quietened libraries) back as they were after each test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: logging.getLogger(name).level for name in ("httpx", "openai")}
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    for name, value in levels.items():
        logging.getLogger(name).setLevel(value)


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


log = logging.getLogger("inboxd.test")


def test_text_has_an_iso_timestamp_outside_systemd() -> None:
    """Without JOURNAL_STREAM a text line starts with an ISO 8601 UTC timestamp."""
    out = io.StringIO()
    setup_logging(LogSettings(), stream=out, environ={})
    log.info("uploaded %s", "a.pdf", extra={"inbox": "scans", "provider": "kimi", "size": 10})
    (line,) = lines(out)
    assert re.fullmatch(
        ISO + r" INFO inboxd.test: uploaded a.pdf inbox=scans provider=kimi size=10", line
    ), line


def test_text_under_journald_has_no_timestamp_and_a_priority() -> None:
    """With JOURNAL_STREAM set the line has no timestamp of ours and a ``<N>`` syslog priority."""
    out = io.StringIO()
    setup_logging(LogSettings(), stream=out, environ={"JOURNAL_STREAM": "8:12345"})
    log.warning("quarantined", extra={"file": "my report.pdf", "reason": "too_large"})
    log.error("auth failed")
    assert lines(out) == [
        '<4>WARNING inboxd.test: quarantined file="my report.pdf" reason=too_large',
        "<3>ERROR inboxd.test: auth failed",
    ]


@pytest.mark.parametrize(("matches", "journal"), [(True, True), (False, False)])
def test_journal_stream_must_name_our_stream(tmp_path: Path, matches: bool, journal: bool) -> None:
    """On a real file JOURNAL_STREAM counts only when its DEV:INODE is that file's."""
    path = tmp_path / "stderr.log"
    with path.open("w") as stream:
        st = os.fstat(stream.fileno())
        value = f"{st.st_dev}:{st.st_ino}" if matches else f"{st.st_dev}:{st.st_ino + 1}"
        setup_logging(LogSettings(), stream=stream, environ={"JOURNAL_STREAM": value})
        log.info("hello")
    (line,) = path.read_text().splitlines()
    if journal:
        assert line == "<6>INFO inboxd.test: hello"
    else:
        assert re.fullmatch(ISO + " INFO inboxd.test: hello", line), line


def test_json_is_one_object_per_line_with_structured_fields() -> None:
    """JSON lines carry ts, level, logger, msg and each ``extra=`` field as a top-level key."""
    out = io.StringIO()
    setup_logging(LogSettings(format="json"), stream=out, environ={"JOURNAL_STREAM": "1:2"})
    fields = {
        "inbox": "scans",
        "file": "a.pdf",
        "provider": "glm",
        "file_id": "file-123",
        "size": 2048,
        "duration": 1.25,
    }
    log.info("uploaded", extra=fields)
    log.warning("quarantined", extra={"reason": "empty"})
    first, second = (json.loads(line) for line in lines(out))
    assert re.fullmatch(ISO, first.pop("ts"))
    assert first == {"level": "info", "logger": "inboxd.test", "msg": "uploaded", **fields}
    second.pop("ts")
    assert second == {
        "level": "warning",
        "logger": "inboxd.test",
        "msg": "quarantined",
        "reason": "empty",
    }


def test_json_keeps_a_traceback_on_one_line() -> None:
    """An exception's traceback goes in ``exc`` and the record stays one line."""
    out = io.StringIO()
    setup_logging(LogSettings(format="json"), stream=out, environ={})
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("failed")
    (line,) = lines(out)
    record = json.loads(line)
    assert record["msg"] == "failed"
    assert record["exc"].startswith("Traceback (most recent call last):")
    assert record["exc"].endswith("RuntimeError: boom")


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_secrets_are_redacted_everywhere_in_the_line(fmt: str) -> None:
    """A configured secret in the message, an argument, a field or a traceback becomes ***."""
    out = io.StringIO()
    setup_logging(LogSettings(format=fmt), stream=out, environ={}, secrets=[SECRET, ""])
    log.info("key is " + SECRET)
    log.info("key is %s", SECRET)
    log.info("field", extra={"provider": f"kimi {SECRET}"})
    try:
        raise ValueError(f"Bearer {SECRET}")
    except ValueError:
        log.exception("request failed")
    text = out.getvalue()
    assert SECRET not in text
    assert text.count("***") == 4


def test_debug_is_dropped_at_info_and_http_libraries_are_quiet() -> None:
    """At level info, our debug lines and httpx's per-request info lines are not written."""
    out = io.StringIO()
    setup_logging(LogSettings(level="info"), stream=out, environ={"JOURNAL_STREAM": "1:2"})
    log.debug("noise")
    logging.getLogger("httpx").info("HTTP Request: POST https://example.invalid/v1/files")
    log.info("kept")
    assert lines(out) == ["<6>INFO inboxd.test: kept"]


def test_setting_up_again_replaces_the_handler() -> None:
    """A second setup (config reload) leaves one handler: each record is written once."""
    first, second = io.StringIO(), io.StringIO()
    setup_logging(LogSettings(), stream=first, environ={"JOURNAL_STREAM": "1:2"})
    setup_logging(LogSettings(format="json"), stream=second, environ={})
    log.info("once")
    assert first.getvalue() == ""
    assert [json.loads(line)["msg"] for line in lines(second)] == ["once"]
