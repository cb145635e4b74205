"""The remote side end to end at scale: 3,000 files through a Kimi account capped at 1,000
with max_files = 900 and extract = true, and a keep_remote = false inbox.

Real emulator on loopback (its faithful 1,000-file Kimi cap), real SQLite state file, real
folders, the daemon in-process (``tests.harness.running``). The emulator records every file
it ever stored, every DELETE and the most files the account held at any moment: the test
reads those, it never polls or sleeps.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from daemon.config.settings import RetentionSettings
from handlers.archive import EXTRACTED_SUFFIX, receipt_path
from providers.emulator.extraction import served_text
from tests.harness import Run, drop, provider_section, read_sidecar, running, sha

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.timeout(2400)]

FILES = 3000
MAX_FILES = 900


def _contents(n: int, tag: str) -> dict[str, bytes]:
    """``n`` small files of distinct content (a few bytes each)."""
    return {f"{tag}{i:04}.txt": f"{tag} {i}\n".encode() for i in range(n)}


def _drop_all(run: Run, contents: dict[str, bytes], inbox: str = "in") -> None:
    for name, data in contents.items():
        drop(run.inbox(inbox), name, data)


def _assert_nothing_quarantined(run: Run, inbox: str = "in") -> None:
    quarantine = run.quarantine(inbox)
    assert not quarantine.exists() or list(quarantine.iterdir()) == []
    assert list(run.inbox(inbox).iterdir()) == []


async def test_3000_files_through_a_capped_account_with_extraction(tmp_path: Path) -> None:
    """Every file is uploaded once and archived with its extracted text (the emulator's
    text), none quarantined, and the account never holds more than max_files = 900."""
    kimi = provider_section("kimi", retention=RetentionSettings(max_files=MAX_FILES))
    contents = _contents(FILES, "f")
    async with running(
        tmp_path, providers={"kimi": kimi}, inboxes=({"name": "in", "extract": True},)
    ) as run:
        _drop_all(run, contents)
        seen = await run.wait_for(FILES, limit=2000, final_only=True)  # a guard, not a timing
        assert Counter(s.result.outcome for s in seen) == {"uploaded": FILES}
        # A pass the last uploads asked for may still be deleting (the copy gone, its receipt
        # not yet marked): one more pass waits for it, and the account is still from here on.
        await run.daemon.current().remote.run("kimi")
        emu = run.emu
        stored = emu.stored_ever("kimi")
        on_account = {f.id for f in emu.files()}
        # Each content stored exactly once, ever (deleted copies included).
        assert sorted(f.sha256 for f in stored) == sorted(sha(d) for d in contents.values())
        assert emu.peak_files("kimi") <= MAX_FILES
        by_id = {f.id: f for f in stored}
        for name, data in contents.items():
            archived = run.done() / name
            assert archived.read_bytes() == data
            receipt = read_sidecar(receipt_path(archived))
            record = by_id[str(receipt["file_id"])]
            expected = served_text(record, data)
            if record.id in on_account:
                assert emu.extracted_text(record.id) == expected
            text = archived.with_name(name + EXTRACTED_SUFFIX).read_text(encoding="utf-8")
            assert text == expected
            assert ("remote_deleted_at" in receipt) == (record.id not in on_account)
        _assert_nothing_quarantined(run)
        # Retention deleted only what it had to: the account ends at the limit or just under.
        assert len(on_account) <= MAX_FILES
        assert Counter(emu.delete_log("kimi")).most_common(1)[0][1] == 1


async def test_keep_remote_false_leaves_none_of_the_inbox_on_the_account(
    tmp_path: Path,
) -> None:
    """With keep_remote = false, 200 files end archived, the account holds none of them,
    each receipt has remote_deleted_at and each copy was deleted once (one DELETE, one
    ledger record with reason keep_remote)."""
    contents = _contents(200, "k")
    async with running(tmp_path, inboxes=({"name": "in", "keep_remote": False},)) as run:
        _drop_all(run, contents)
        seen = await run.wait_for(len(contents), limit=300, final_only=True)
        assert Counter(s.result.outcome for s in seen) == {"uploaded": len(contents)}
        emu = run.emu
        assert emu.files() == []
        stored = emu.stored_ever("kimi")
        assert sorted(f.sha256 for f in stored) == sorted(sha(d) for d in contents.values())
        ids = sorted(f.id for f in stored)
        assert sorted(emu.delete_log("kimi")) == ids
        for name in contents:
            receipt = read_sidecar(receipt_path(run.done() / name))
            assert "remote_deleted_at" in receipt
        rows = await run.daemon.current().store.fetch(
            "SELECT file_id, reason, outcome FROM remote_deletions WHERE provider = 'kimi'"
        )
        assert sorted(r["file_id"] for r in rows) == ids  # one record per copy
        assert {(r["reason"], r["outcome"]) for r in rows} == {("keep_remote", "deleted")}
        _assert_nothing_quarantined(run)
