"""sha256 of an open file, streamed in 1 MiB chunks, in a worker thread (small files inline).

Reads with ``pread`` from offset 0, so the file object's own offset (shared with whoever
uploads it) is neither used nor moved. Memory: one chunk at a time.
"""

from __future__ import annotations

import hashlib
import os
from functools import partial
from typing import BinaryIO

import anyio.to_thread

__all__ = ["CHUNK", "INLINE_MAX", "sha256_fd", "sha256_file"]

CHUNK = 1 << 20
# Below this size hashing takes well under a millisecond: less than the hop to a worker
# thread and back, so it runs on the event loop.
INLINE_MAX = 1 << 20


def sha256_fd(fd: int, *, chunk: int = CHUNK, limit: int | None = None) -> str:
    """Hex sha256 of everything readable from ``fd`` (blocking; call it from a thread), or of
    its first ``limit`` bytes only."""
    digest = hashlib.sha256()
    offset = 0
    while block := os.pread(fd, chunk if limit is None else min(chunk, limit - offset), offset):
        digest.update(block)
        offset += len(block)
    return digest.hexdigest()


async def sha256_file(fileobj: BinaryIO, *, chunk: int = CHUNK, size: int | None = None) -> str:
    """Hex sha256 of ``fileobj``'s file from byte 0, computed off the event loop.

    ``size`` (the size as opened) below ``INLINE_MAX`` hashes on the loop instead, in one
    read; a file that grew past ``size`` meanwhile goes to the thread (the loop never reads
    more than ``size + 1`` bytes). The file is hashed to its end either way.
    """
    if size is not None and 0 <= size < INLINE_MAX:
        block = os.pread(fileobj.fileno(), size + 1, 0)
        if len(block) <= size:  # a short read of a regular file: its end
            return hashlib.sha256(block).hexdigest()
    return await anyio.to_thread.run_sync(partial(sha256_fd, fileobj.fileno(), chunk=chunk))
