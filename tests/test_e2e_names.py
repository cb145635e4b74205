"""End to end: 255-byte names (ASCII and multi-byte) through the running daemon and emulator."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from handlers.names import NAME_MAX, fit_name, sidecar_name
from tests.harness import read_sidecar, running, sha

pytestmark = pytest.mark.anyio

ASCII_255 = "a" * 251 + ".txt"
CJK_255 = "文" * 83 + "ab.txt"
NAMES = (ASCII_255, CJK_255)


async def test_255_byte_names_are_uploaded_archived_and_quarantined(tmp_path: Path) -> None:
    """Two rounds of 255-byte names are each uploaded under their full name and archived
    (the second round under shortened ~1 names) with receipts naming them; empty files with
    the same names are quarantined with reasons that name them; no name passes 255 bytes."""
    async with running(tmp_path) as run:
        for round_ in range(2):
            for name in NAMES:
                (run.inbox() / name).write_bytes(f"round {round_} of {name[:1]}".encode())
            seen = await run.wait_for(2, final_only=True)
            assert sorted((s.relpath, s.result.outcome) for s in seen) == sorted(
                (name, "uploaded") for name in NAMES
            )
        stored = {(f.filename, f.sha256): f.id for f in run.emu.files()}
        assert len(stored) == 4
        for round_ in range(2):
            for name in NAMES:
                data = f"round {round_} of {name[:1]}".encode()
                final = name if round_ == 0 else fit_name(name, tag="~1")
                assert (run.done() / final).read_bytes() == data
                receipt = read_sidecar(run.done() / sidecar_name(final, ".upload.json"))
                assert (receipt["name"], receipt["sha256"]) == (name, sha(data))
                assert receipt["file_id"] == stored[(name, sha(data))]
        for name in NAMES:
            (run.inbox() / name).write_bytes(b"")
        seen = await run.wait_for(2, final_only=True)
        assert sorted((s.relpath, s.result.outcome) for s in seen) == sorted(
            (name, "quarantined") for name in NAMES
        )
        for name in NAMES:
            reason = read_sidecar(run.quarantine() / sidecar_name(name, ".reason.json"))
            assert (reason["reason"], reason["name"]) == ("empty", name)
        everything = [*run.done().iterdir(), *run.quarantine().iterdir()]
        assert len(everything) == 12
        assert max(len(os.fsencode(p.name)) for p in everything) == NAME_MAX
        assert list(run.inbox().iterdir()) == []
        rows = await run.rows()
        assert sorted(r.state for r in rows) == ["done"] * 4 + ["quarantined"] * 2
