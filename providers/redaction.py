"""The process-wide registry of secret values (API keys), and their removal from any text.

Redaction by shape (``providers.classify.redact``) misses a key of an unusual shape; this
removes each configured key by its exact value wherever inboxd stores or prints a string:
provider error messages (``providers.errors``), log lines (``daemon.ops.logs``), ``inboxd
status``, metric labels. The daemon registers the keys of its settings at start and at every
reload, and each CLI command that loads settings does the same (``daemon.config.keys.find_keys``).

Values are only ever added, never forgotten, for the life of the process: after a reload
changes a key, an upload still in flight on the old key may quote it in an error.
A GLM key (``id.secret``) is registered whole and as its two parts, split on the first
``"."``; a part shorter than ``MIN_PART`` characters is not registered on its own (it would
blank out ordinary words), the whole key always is. Each value is also registered as it
appears inside a JSON string and percent-encoded in a URL.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from urllib.parse import quote

__all__ = [
    "MIN_PART",
    "REDACTED",
    "add_secret",
    "add_secrets",
    "clear_secrets",
    "known_secrets",
    "scrub",
]

REDACTED = "[redacted]"
MIN_PART = 8

_lock = threading.Lock()
# Longest first, so a value containing another is replaced whole. Replaced, never mutated:
# readers in any thread see one consistent tuple without taking the lock.
_forms: tuple[str, ...] = ()
_values: frozenset[str] = frozenset()


def _spellings(value: str) -> set[str]:
    return {value, json.dumps(value, ensure_ascii=False)[1:-1], quote(value, safe="")}


def add_secret(value: str | None, *, parts: bool = True) -> None:
    """Register an API key (and, with ``parts``, its ``id``/``secret`` halves) for redaction."""
    global _forms, _values  # noqa: PLW0603 - the one process-wide registry, swapped whole
    if value is None or not value.strip():
        return
    values = {value.strip()}
    if parts and "." in value:
        values |= {p for p in value.strip().split(".", 1) if len(p) >= MIN_PART}
    with _lock:
        if values <= _values:
            return
        _values = _values | values
        forms = {form for v in _values for form in _spellings(v) if form}
        _forms = tuple(sorted(forms, key=len, reverse=True))


def add_secrets(values: Iterable[str | None]) -> None:
    """``add_secret`` for each value."""
    for value in values:
        add_secret(value)


def known_secrets() -> tuple[str, ...]:
    """Every registered spelling, longest first."""
    return _forms


def scrub(text: str, replacement: str = REDACTED) -> str:
    """``text`` with every registered secret replaced by ``replacement``."""
    for form in _forms:
        if form in text:
            text = text.replace(form, replacement)
    return text


def clear_secrets() -> None:
    """Forget every registered value (tests only: a process never forgets a key)."""
    global _forms, _values
    with _lock:
        _forms, _values = (), frozenset()
