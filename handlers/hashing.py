"""sha256 of an open file, streamed in 1 MiB chunks, in a worker thread.

Reads with ``pread`` from offset 0, so the file object's own offset (shared with whoever
uploads it) is neither used nor moved. Memory: one chunk at a time.
"""

from __future__ import annotations

import hashlib
import os
from functools import partial
from typing import BinaryIO

import anyio.to_thread

__all__ = ["CHUNK", "sha256_fd", "sha256_file"]

CHUNK = 1 << 20


def sha256_fd(fd: int, *, chunk: int = CHUNK) -> str:
    """Hex sha256 of everything readable from ``fd`` (blocking; call it from a thread)."""
    digest = hashlib.sha256()
    offset = 0
    while block := os.pread(fd, chunk, offset):
        digest.update(block)
        offset += len(block)
    return digest.hexdigest()


async def sha256_file(fileobj: BinaryIO, *, chunk: int = CHUNK) -> str:
    """Hex sha256 of ``fileobj``'s file from byte 0, computed off the event loop."""
    return await anyio.to_thread.run_sync(partial(sha256_fd, fileobj.fileno(), chunk=chunk))
