"""What the emulator serves as a stored file's extracted text (pure).

``GET /files/{id}/content`` (Kimi's JSON envelope, GLM's text or batch bytes) and GLM's file
parser both read the text from :func:`text_of`: the file's own text for TEXT_TYPES, else a
placeholder naming the file, so a test can compare what a client fetched with
``Emulator.extracted_text``.
"""

from __future__ import annotations

import json

from providers.emulator.state import ApiError, StoredFile, bad_request
from providers.limits import extension_of

__all__ = ["TEXT_TYPES", "content_error", "extracted", "served_text", "text_of"]

# Types whose "extracted" content is the file's own text; others get a placeholder.
TEXT_TYPES = frozenset(
    {"txt", "md", "csv", "json", "jsonl", "html", "log", "go", "h", "c", "cpp", "cxx", "cc"}
    | {"cs", "java", "js", "css", "jsp", "php", "py", "py3", "asp", "yaml", "yml", "ini"}
    | {"conf", "ts", "tsx"}
)
_MIME = {"json": "application/json", "html": "text/html", "csv": "text/csv", "md": "text/markdown"}


def content_error(f: StoredFile) -> ApiError | None:
    """Why ``GET /files/{id}/content`` is refused: only file-extract (and GLM batch) files."""
    allowed = ("file-extract",) if f.provider == "kimi" else ("batch", "file-extract")
    if f.purpose in allowed:
        return None
    return bad_request(
        f.provider, f"File content is only available for purpose {' or '.join(allowed)}"
    )


def extracted(f: StoredFile, data: bytes | None) -> tuple[bytes, str]:
    """Content bytes and Content-Type; ``data`` is the file's bytes for TEXT_TYPES, else None.

    Moonshot answers JSON ``{"content","file_type","filename","title","type"}`` (what its
    file-extract docs show); GLM answers the raw bytes for batch and the text otherwise.
    """
    ext = extension_of(f.filename)
    text = text_of(f.filename, f.bytes, data)
    if f.provider == "glm":
        if f.purpose == "batch" and data is not None:
            return data, "application/octet-stream"
        return text.encode(), "text/plain; charset=utf-8"
    body = {
        "content": text,
        "file_type": _MIME.get(ext, "text/plain" if ext in TEXT_TYPES else f"application/{ext}"),
        "filename": f.filename,
        "title": "",
        "type": "file",
    }
    return json.dumps(body, ensure_ascii=False).encode(), "application/json"


def text_of(filename: str, size: int, data: bytes | None) -> str:
    """The text extracted from a file: its own (UTF-8) for TEXT_TYPES, else a placeholder.

    ``data`` is the file's bytes (needed for TEXT_TYPES only).
    """
    if data is not None and extension_of(filename) in TEXT_TYPES:
        return data.decode("utf-8", errors="replace")
    return f"[emulator: extracted text of {filename}, {size} bytes]"


def served_text(f: StoredFile, data: bytes) -> str:
    """The text a correct client ends with for ``f`` (``data``: its bytes), whichever way.

    Kimi: the envelope's ``content``; GLM batch: the lines themselves; any other GLM file:
    what ``/content`` or the file parser answers for the same name and bytes.
    """
    if f.provider == "glm" and f.purpose == "batch":
        return data.decode("utf-8", errors="replace")
    return text_of(f.filename, f.bytes, data)
