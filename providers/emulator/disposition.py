"""Read a multipart part's ``Content-Disposition`` as a real server does (pure).

The filename stored is the parameter's value as sent: a quoted-string has its quoted-pairs
read (``\\\\`` → ``\\``, RFC 9110 § 5.6.4) and nothing else happens to it. In particular
``%22`` stays ``%22`` (httpx writes ``"`` that way, HTML5 style, and a server does not decode
it), a leading ``\\`` is kept, and ``;`` or ``=`` inside the quotes are part of the name.
aiohttp's own parser strips leading ``\\`` and ``/`` and gives up on a second ``;``, so the
emulator does not use it. ``filename*=charset''percent-encoded`` (RFC 6266) wins over
``filename`` when both are sent, as the RFC says.
"""

from __future__ import annotations

from urllib.parse import unquote

__all__ = ["disposition_params"]


def _quoted(header: str, pos: int) -> tuple[str, int]:
    """The quoted-string starting after the opening quote at ``pos``; (value, next pos)."""
    out: list[str] = []
    while pos < len(header):
        char = header[pos]
        if char == "\\" and pos + 1 < len(header):
            out.append(header[pos + 1])
            pos += 2
        elif char == '"':
            return "".join(out), pos + 1
        else:
            out.append(char)
            pos += 1
    return "".join(out), pos  # unterminated: take what was there


def _extended(value: str) -> str | None:
    """An RFC 5987 ``charset'lang'percent-encoded`` value, decoded; None if malformed."""
    charset, sep, rest = value.partition("'")
    _, sep2, encoded = rest.partition("'")
    if not sep or not sep2:
        return None
    try:
        return unquote(encoded, charset or "utf-8", "strict")
    except (LookupError, UnicodeDecodeError):
        return None


def disposition_params(header: str | None) -> dict[str, str]:
    """The parameters of a ``Content-Disposition`` header (keys lower case, ``*`` applied)."""
    if not header:
        return {}
    params: dict[str, str] = {}
    extended: dict[str, str] = {}
    pos = header.find(";")
    if pos < 0:
        return {}
    pos += 1
    while pos < len(header):
        while pos < len(header) and header[pos] in " \t;":
            pos += 1
        eq = header.find("=", pos)
        semi = header.find(";", pos)
        if eq < 0 or (0 <= semi < eq):
            pos = len(header) if semi < 0 else semi + 1
            continue
        key = header[pos:eq].strip().lower()
        pos = eq + 1
        while pos < len(header) and header[pos] in " \t":
            pos += 1
        if pos < len(header) and header[pos] == '"':
            value, pos = _quoted(header, pos + 1)
        else:
            end = header.find(";", pos)
            end = len(header) if end < 0 else end
            value, pos = header[pos:end].strip(), end
        if key.endswith("*"):
            decoded = _extended(value)
            if decoded is not None:
                extended[key[:-1]] = decoded
        elif key:
            params.setdefault(key, value)
    return params | extended
