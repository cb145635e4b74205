"""Streamed sha256 equals hashlib's, ignores the shared file offset, runs off the loop."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from handlers.hashing import INLINE_MAX, sha256_fd, sha256_file


@pytest.fixture
def big(tmp_path: Path) -> tuple[Path, str]:
    """A 5 MiB + 3 byte file (not a chunk multiple) and its hashlib digest."""
    data = os.urandom(5 * (1 << 20) + 3)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def test_sha256_fd_matches_hashlib(big: tuple[Path, str]) -> None:
    """The streamed digest of a multi-MiB file equals hashlib over the whole bytes."""
    path, expected = big
    fd = os.open(path, os.O_RDONLY)
    try:
        assert sha256_fd(fd) == expected
        assert sha256_fd(fd, chunk=4096) == expected
    finally:
        os.close(fd)


@pytest.mark.anyio
async def test_sha256_file_ignores_offset(big: tuple[Path, str]) -> None:
    """The async digest starts at byte 0 whatever the offset is, and leaves the offset alone."""
    path, expected = big
    with path.open("rb") as fh:
        fh.seek(12345)
        assert await sha256_file(fh) == expected
        assert fh.tell() == 12345


def test_empty_digest(tmp_path: Path) -> None:
    """An empty file hashes to the well-known empty sha256."""
    path = tmp_path / "e"
    path.touch()
    fd = os.open(path, os.O_RDONLY)
    try:
        assert sha256_fd(fd) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    finally:
        os.close(fd)


@pytest.mark.anyio
async def test_small_file_hashed_inline_matches_hashlib(tmp_path: Path) -> None:
    """A file below INLINE_MAX given with its size hashes to hashlib's digest on the loop."""
    data = os.urandom(16 * 1024 + 5)
    path = tmp_path / "small.bin"
    path.write_bytes(data)
    with path.open("rb") as fh:
        fh.seek(7)
        assert await sha256_file(fh, size=len(data)) == hashlib.sha256(data).hexdigest()
        assert fh.tell() == 7


@pytest.mark.anyio
async def test_file_grown_past_its_size_is_hashed_whole(tmp_path: Path) -> None:
    """A file longer than the size it was opened at is hashed to its end, not cut at size."""
    data = os.urandom(INLINE_MAX + 10)
    path = tmp_path / "grown.bin"
    path.write_bytes(data)
    with path.open("rb") as fh:
        assert await sha256_file(fh, size=100) == hashlib.sha256(data).hexdigest()
        assert await sha256_file(fh, size=0) == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("limit", [0, 1, 4095, 4096, 4097, 3 * (1 << 20) + 5])
def test_sha256_fd_limit_hashes_the_first_bytes_only(tmp_path: Path, limit: int) -> None:
    """With ``limit``, the digest is that of exactly the first ``limit`` bytes, across chunks."""
    data = os.urandom(3 * (1 << 20) + 100)
    path = tmp_path / "p"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert sha256_fd(fd, chunk=4096, limit=limit) == hashlib.sha256(data[:limit]).hexdigest()
    finally:
        os.close(fd)
