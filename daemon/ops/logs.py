"""Logging set-up: journald-friendly text or JSON lines, with secrets redacted.

Text under systemd (``$JOURNAL_STREAM`` names our stream) carries no timestamp of its own —
journald stamps every line — and starts with a ``<N>`` syslog priority so ``journalctl -p``
filters by level. Elsewhere each line starts with an ISO 8601 UTC timestamp. JSON is one
object per line: ``ts``, ``level``, ``logger``, ``msg``, then every structured field passed
with ``extra=`` (``inbox``, ``file``, ``provider``, ``file_id``, ``size``, ``duration``,
``reason`` ...), and ``exc`` for a traceback.

Secrets never reach a log line by construction; the handler also replaces each configured
secret (every value in the process-wide registry, ``providers.redaction``, which
``setup_logging`` adds its ``secrets`` to) with ``***`` in the final formatted line, as a
second line of defence.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from daemon.config.settings import LogSettings, Settings
from providers.redaction import add_secrets, scrub

__all__ = [
    "JsonFormatter",
    "RedactingHandler",
    "TextFormatter",
    "logging_to",
    "setup_logging",
]

REDACTED = "***"

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}
# syslog priorities (sd-daemon(3) prefixes) for journald.
_PRIORITY = {"DEBUG": 7, "INFO": 6, "WARNING": 4, "ERROR": 3, "CRITICAL": 2}
# Chatty libraries: one line per HTTP request is noise at info level.
_QUIET = (
    "httpx",
    "httpx2",
    "httpcore",
    "httpcore2",
    "openai",
    "zhipuai",
    "aiohttp.access",
    "watchfiles",
)


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


def _timestamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds")


def _logfmt(value: Any) -> str:
    text = str(value)
    if not text or any(c in text for c in ' "=\n\t'):
        return json.dumps(text, ensure_ascii=False)
    return text


class TextFormatter(logging.Formatter):
    """``[ts ]LEVEL logger: message key=value ...``; ``journal=True`` drops ts, adds ``<N>``."""

    def __init__(self, *, journal: bool) -> None:
        super().__init__()
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        line = f"{record.levelname} {record.name}: {record.getMessage()}"
        fields = " ".join(f"{k}={_logfmt(v)}" for k, v in _extras(record).items())
        if fields:
            line = f"{line} {fields}"
        if self.journal:
            line = f"<{_PRIORITY.get(record.levelname, 6)}>{line}"
        else:
            line = f"{_timestamp(record)} {line}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line; structured ``extra=`` fields become top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _extras(record).items():
            obj.setdefault(key, value)
        if record.exc_info:
            obj["exc"] = self.formatException(record.exc_info)
        return json.dumps(obj, ensure_ascii=False, default=str)


class RedactingHandler(logging.StreamHandler[TextIO]):
    """A stream handler that replaces every secret with ``***`` in the formatted line.

    The secrets are its own and every value in the process-wide registry at the time of
    the line (a key a reload added is covered without a new handler).
    """

    def __init__(self, stream: TextIO, secrets: Sequence[str]) -> None:
        super().__init__(stream)
        forms: set[str] = set()
        for secret in secrets:
            if secret:
                forms.add(secret)
                # The same secret as it appears inside a JSON string.
                forms.add(json.dumps(secret, ensure_ascii=False)[1:-1])
        # Longest first, so a secret containing another is replaced whole.
        self.secrets = sorted(forms, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        for secret in self.secrets:
            line = line.replace(secret, REDACTED)
        return scrub(line, REDACTED)


def _journal_stream(stream: TextIO, environ: Mapping[str, str]) -> bool:
    """Whether ``stream`` is the journal: ``$JOURNAL_STREAM`` is ``DEV:INODE`` of it."""
    value = environ.get("JOURNAL_STREAM", "")
    if not value:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        # Not a real file (a test buffer, a wrapper): trust the variable.
        return True
    return value == f"{st.st_dev}:{st.st_ino}"


def setup_logging(
    settings: LogSettings,
    *,
    stream: TextIO = sys.stderr,
    environ: Mapping[str, str] = os.environ,
    secrets: Sequence[str] = (),
) -> logging.Handler:
    """Install inboxd's one log handler on the root logger (again on reload: it replaces it).

    ``secrets`` are also added to the process-wide registry (``providers.redaction``).
    """
    add_secrets(secrets)
    formatter: logging.Formatter
    if settings.format == "json":
        formatter = JsonFormatter()
    else:
        formatter = TextFormatter(journal=_journal_stream(stream, environ))
    handler = RedactingHandler(stream, secrets)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, RedactingHandler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    level = getattr(logging, settings.level.upper())
    root.setLevel(level)
    for name in _QUIET:
        # Their per-request lines only when debugging.
        logging.getLogger(name).setLevel(
            logging.INFO if level <= logging.DEBUG else max(level, logging.WARNING)
        )
    return handler


def logging_to(stream: TextIO = sys.stderr) -> Callable[[Settings], None]:
    """Configure logging from a config's ``log`` section onto ``stream``, its API keys
    redacted: what ``inboxd run`` does at start and a reload does when ``log`` changed."""

    def configure(settings: Settings) -> None:
        keys = (settings.providers.get(name).api_key for name in ("kimi", "glm"))
        secrets = [key.get_secret_value() for key in keys if key is not None]
        setup_logging(settings.log, stream=stream, secrets=secrets)

    return configure
