"""Which names in an inbox are ignored, and which are refused as ``name_invalid``.

Pure: strings in, answers out. ``name_problem`` accepts what ``os.listdir`` gives for a str
directory (undecodable bytes arrive as lone surrogates, PEP 383) or the raw bytes.
"""

from __future__ import annotations

import unicodedata

__all__ = ["display_name", "is_temp_name", "name_problem"]

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
