"""The names a provider may list for a file we sent under a given name (pure).

Every transport sends the name as a multipart ``filename`` written by httpx (or httpx2 under
openai 3.x), which follows the HTML5 form encoding: ``"`` becomes ``%22``, each C0 control
character but ESC becomes ``%XX``, and ``\\`` is written as the quoted-pair ``\\\\``. Nothing
else changes: ``%`` and non-ASCII text go as they are (UTF-8). The providers store the value
as sent (``say "hi".txt`` is listed as ``say %22hi%22.txt``). A server that does not read the
quoted-pair keeps ``\\\\``; one that decodes ``%22`` keeps the name itself. Reconciliation tries
every one of these forms, so a dropped answer never makes a second copy.
"""

from __future__ import annotations

__all__ = ["wire_filenames", "wire_form"]

_HTML5 = {'"': "%22"} | {chr(c): f"%{c:02X}" for c in range(0x20) if c != 0x1B}


def wire_form(name: str) -> str:
    """The name as httpx encodes it into a multipart ``filename``, quoted-pairs read back."""
    return "".join(_HTML5.get(char, char) for char in name)


def wire_filenames(name: str) -> frozenset[str]:
    """Every form a provider may list ``name`` under after our transports sent it."""
    sent = wire_form(name)
    return frozenset({sent, sent.replace("\\", "\\\\"), name})
