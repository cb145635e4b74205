"""Which names in an inbox are ignored, which are refused as ``name_invalid``, and how the
names inboxd derives from a file's name stay within NAME_MAX.

Pure: strings in, answers out. ``name_problem`` accepts what ``os.listdir`` gives for a str
directory (undecodable bytes arrive as lone surrogates, PEP 383) or the raw bytes.

Derived names (``fit_name``): a collision name ``stem~N.ext``, a sidecar ``<name>.upload.json``
or ``<name>.reason.json``, a temp name ``.<name>.inboxd-<host id>-XXXXXXXX.tmp``. Any file name the
filesystem accepts (255 bytes) may make one longer than that; then the stem is cut (in bytes
of ``os.fsencode``, never inside a UTF-8 character) and followed by ``~`` and the first 10 hex
digits of the sha256 of the full name, before the tag, the extension and the suffix::

    <cut stem>~<10 hex>[~N][.ext][suffix]

The same name always gives the same shortened name (a sidecar is found from its file's name),
and two names give the same one only if they share the cut stem AND 40 bits of hash.
"""

from __future__ import annotations

import hashlib
import os
import unicodedata

__all__ = [
    "NAME_MAX",
    "display_name",
    "fit_name",
    "is_temp_name",
    "name_problem",
    "sidecar_name",
    "split_extension",
    "temp_name",
]

NAME_MAX = 255
"""Bytes in one path component (Linux ext4, xfs, btrfs, tmpfs)."""

_HASH_DIGITS = 10
# A longer "extension" is not one (``a.<200 bytes>``): it is cut with the stem.
_EXT_MAX = 32

# Editors, browsers and copy tools write these first and rename when done (design.md § 1).
_TEMP_SUFFIXES = (".part", ".tmp", ".crdownload", ".swp")

# Characters that make a name lie about itself when shown: bidi embeddings and overrides
# ("Trojan Source"), and line/paragraph separators that split log lines.
_DECEPTIVE = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u2028\u2029")


def is_temp_name(name: str) -> bool:
    """True for names a writer is still working on: ``.*``, ``~*``, ``*.part`` and the like.

    Our own sidecars (``*.reason.json``, ``*.upload.json``) are NOT temp names.
    """
    if name.startswith((".", "~")):
        return True
    return name.lower().endswith(_TEMP_SUFFIXES)


def name_problem(raw: bytes | str) -> str | None:
    """Why this file name cannot be uploaded (a detail for ``name_invalid``), or None.

    Refused: empty names, bytes that are not UTF-8 (the providers take UTF-8 names only),
    control characters (C0, DEL, C1), and bidi controls or line separators.
    """
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return f"name is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})"
    return _char_problem(raw)


def _char_problem(name: str) -> str | None:
    if not name:
        return "name is empty"
    for offset, char in enumerate(name):
        if 0xDC80 <= ord(char) <= 0xDCFF:
            byte = ord(char) - 0xDC00
            return f"name is not valid UTF-8 (byte 0x{byte:02x} at character {offset})"
        category = unicodedata.category(char)
        if category == "Cs":
            return f"name holds a lone surrogate U+{ord(char):04X} at character {offset}"
        if category == "Cc":
            return f"name holds control character U+{ord(char):04X} at character {offset}"
        if char in _DECEPTIVE:
            return f"name holds bidi/line-separator U+{ord(char):04X} at character {offset}"
    return None


def display_name(name: str | bytes) -> str:
    """A name safe to put in a log line or a JSON detail: odd characters escaped."""
    if isinstance(name, bytes):
        name = name.decode("utf-8", "surrogateescape")
    out: list[str] = []
    for char in name:
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif unicodedata.category(char) in {"Cc", "Cs"} or char in _DECEPTIVE:
            out.append(f"\\u{code:04x}" if code > 0xFF else f"\\x{code:02x}")
        else:
            out.append(char)
    return "".join(out)


def split_extension(name: str) -> tuple[str, str]:
    """``("report", ".pdf")``; a name without one, a dot-only prefix (``.bashrc``) or an
    extension over 32 bytes gives ``(name, "")``."""
    stem, dot, ext = name.rpartition(".")
    if not stem or not dot or len(os.fsencode(dot + ext)) > _EXT_MAX:
        return name, ""
    return stem, dot + ext


def fit_name(name: str, *, prefix: str = "", tag: str = "", suffix: str = "") -> str:
    """``prefix + stem + tag + ext + suffix``, shortened to NAME_MAX bytes when longer.

    ``name`` is ``stem + ext`` (``split_extension``); ``tag`` is a collision tag (``~2``).
    Shortened: ``prefix + cut stem + "~" + 10 hex of sha256(name) + tag + ext + suffix``.
    """
    stem, ext = split_extension(name)
    whole = f"{prefix}{stem}{tag}{ext}{suffix}"
    if len(os.fsencode(whole)) <= NAME_MAX:
        return whole
    digest = hashlib.sha256(os.fsencode(name)).hexdigest()[:_HASH_DIGITS]
    tail = f"~{digest}{tag}{ext}{suffix}"
    budget = NAME_MAX - len(os.fsencode(prefix + tail))
    if budget < 1:
        raise ValueError(f"{prefix!r} and {tail!r} leave no room for a name")
    return f"{prefix}{_cut(os.fsencode(stem), budget)}{tail}"


def sidecar_name(name: str, suffix: str) -> str:
    """The name of ``name``'s sidecar with ``suffix`` (``.upload.json``, ``.reason.json``)."""
    return fit_name(name, suffix=suffix)


def temp_name(target: str, token: str, *, host: str) -> str:
    """The hidden temp name for writing ``target``: ``.<target>.inboxd-<host>-<token>.tmp``
    (``token``: 8 random lower-case hex digits; ``host``: the writer's host id, so a host
    cleaning up at start (``handlers.leftovers``) never removes another host's)."""
    return fit_name(target, prefix=".", suffix=f".inboxd-{host}-{token}.tmp")


def _cut(raw: bytes, budget: int) -> str:
    """The first ``budget`` bytes of ``raw`` or fewer, never ending inside a UTF-8 character."""
    end = min(budget, len(raw))
    while 0 < end < len(raw) and raw[end] & 0xC0 == 0x80:  # a continuation byte follows
        end -= 1
    return os.fsdecode(raw[:end])
