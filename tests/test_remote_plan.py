"""The retention pass's pure planning: which remote files go, in which order, and why."""

from __future__ import annotations

import pytest

from daemon.remote.plan import (
    DAY,
    Attempt,
    Deletion,
    Owned,
    RetentionLimits,
    find_orphans,
    plan_deletions,
    short_of,
)
from providers.types import RemoteFile

NOW = 1_800_000_000.0


def rf(file_id: str, created: float, size: int = 10, name: str = "") -> RemoteFile:
    return RemoteFile("kimi", file_id, name or f"{file_id}.txt", size, created, "file-extract")


def own(*ids: str, unsettled: tuple[str, ...] = ()) -> dict[str, Owned]:
    return {
        i: Owned(i, n, "in", f"{i}.txt", f"/done/{i}.txt.upload.json", i not in unsettled)
        for n, i in enumerate(ids, 1)
    }


def planned(deletions: list[Deletion]) -> list[tuple[str, str]]:
    return [(d.file.id, d.reason) for d in deletions]


# (listing, own ids, limits, expected deletions in order); a case id with "unsettled" has
# file "a" still in flight (its row active).
CASES = [
    pytest.param(
        [rf("a", 1), rf("b", 2), rf("c", 3)],
        ("a", "b", "c"),
        RetentionLimits(),
        [],
        id="no-limits-keep-everything",
    ),
    pytest.param(
        [rf("c", 3), rf("a", 1), rf("b", 2)],
        ("a", "b", "c"),
        RetentionLimits(max_files=2),
        [("a", "max_files")],
        id="max-files-oldest-first",
    ),
    pytest.param(
        [rf("x", 0), rf("y", 0.5), rf("a", 1), rf("b", 2)],
        ("a", "b"),
        RetentionLimits(max_files=2),
        [("a", "max_files"), ("b", "max_files")],
        id="foreign-files-count-but-are-never-chosen",
    ),
    pytest.param(
        [rf("a", 1, 50), rf("b", 2, 50), rf("c", 3, 50)],
        ("a", "b", "c"),
        RetentionLimits(max_bytes=100),
        [("a", "max_bytes")],
        id="max-bytes-whole-account",
    ),
    pytest.param(
        [rf("a", 1, 5), rf("b", 2, 200), rf("c", 3, 5)],
        ("a", "b", "c"),
        RetentionLimits(max_files=2, max_bytes=100),
        [("a", "max_files"), ("b", "max_bytes")],
        id="reason-names-the-limit-still-exceeded",
    ),
    pytest.param(
        [rf("a", NOW - 31 * DAY), rf("b", NOW - 29 * DAY), rf("x", NOW - 90 * DAY)],
        ("a", "b"),
        RetentionLimits(max_age_days=30),
        [("a", "max_age")],
        id="max-age-own-files-only",
    ),
    pytest.param(
        [rf("a", NOW - 40 * DAY), rf("b", NOW - 3), rf("c", NOW - 2), rf("d", NOW - 1)],
        ("a", "b", "c", "d"),
        RetentionLimits(max_files=2, max_age_days=30),
        [("a", "max_age"), ("b", "max_files")],
        id="age-first-then-caps-counting-what-age-freed",
    ),
    pytest.param(
        [rf("a", 1), rf("b", 2), rf("c", 3)],
        ("a", "b", "c"),
        RetentionLimits(max_files=1),
        [("a", "max_files"), ("b", "max_files")],
        id="several-deletions-oldest-first",
    ),
    pytest.param(
        [rf("a", 1), rf("b", 2), rf("c", 3)],
        ("a", "b", "c"),
        RetentionLimits(max_files=2),
        [("b", "max_files")],
        id="unsettled-row-file-is-never-chosen",
    ),
    pytest.param(
        [rf("x", 1), rf("y", 2), rf("z", 3)],
        (),
        RetentionLimits(max_files=1, max_bytes=1, max_age_days=0.001),
        [],
        id="nothing-inboxd-uploaded-nothing-deleted",
    ),
]


@pytest.mark.parametrize(("files", "ids", "limits", "expected"), CASES)
def test_plan_deletions(
    request: pytest.FixtureRequest,
    files: list[RemoteFile],
    ids: tuple[str, ...],
    limits: RetentionLimits,
    expected: list[tuple[str, str]],
) -> None:
    """Each listing and limit gives exactly these deletions, in this order."""
    unsettled = ("a",) if "unsettled" in request.node.callspec.id else ()
    owned = own(*ids, unsettled=unsettled)
    assert planned(plan_deletions(files, owned, limits, now=NOW)) == expected


def test_orphans_go_before_cap_deletions_and_free_room() -> None:
    """An orphan is deleted first and counts as freed room, so fewer receipted files go."""
    files = [rf("a", 1), rf("b", 2), rf("o", 3)]
    orphan = Deletion(rf("o", 3), "orphan", ledger_id=9)
    got = plan_deletions(
        files, own("a", "b"), RetentionLimits(max_files=1), now=NOW, orphans=[orphan]
    )
    assert planned(got) == [("o", "orphan"), ("a", "max_files")]


# (listing, attempt, claimed, expected orphan ids)
ORPHAN_CASES = [
    pytest.param(
        [rf("o", 105, 7, "r.pdf")],
        Attempt(1, "sub/r.pdf", 7, "file-extract", intent_at=100, finished_at=110),
        (),
        ["o"],
        id="same-name-size-time",
    ),
    pytest.param(
        [rf("o", 105, 8, "r.pdf")],
        Attempt(1, "r.pdf", 7, "file-extract", intent_at=100, finished_at=110),
        (),
        [],
        id="other-size",
    ),
    pytest.param(
        [rf("o", 105, 7, "r.pdf")],
        Attempt(1, "r.pdf", 7, "file-extract", intent_at=100, finished_at=110),
        ("o",),
        [],
        id="claimed-by-a-ledger-row",
    ),
    pytest.param(
        [rf("o", 50, 7, "r.pdf")],
        Attempt(1, "r.pdf", 7, "file-extract", intent_at=100, finished_at=110),
        (),
        [],
        id="stored-before-the-intent-minus-skew",
    ),
    pytest.param(
        [rf("o", 500, 7, "r.pdf")],
        Attempt(1, "r.pdf", 7, "file-extract", intent_at=100, finished_at=110),
        (),
        [],
        id="stored-after-the-row-finished-plus-skew",
    ),
    pytest.param(
        [rf("o", 105, 7, "say %22hi%22.txt")],
        Attempt(1, 'say "hi".txt', 7, "file-extract", intent_at=100, finished_at=110),
        (),
        ["o"],
        id="wire-name-as-reconciliation-matches-it",
    ),
]


@pytest.mark.parametrize(("files", "attempt", "claimed", "expected"), ORPHAN_CASES)
def test_find_orphans(
    files: list[RemoteFile], attempt: Attempt, claimed: tuple[str, ...], expected: list[str]
) -> None:
    """A finished row's attempt adopts exactly the copy reconciliation would have matched."""
    got = find_orphans(files, [attempt], claimed=claimed, skew=30.0)
    assert [d.file.id for d in got] == expected
    assert all(d.reason == "orphan" and d.ledger_id == attempt.ledger_id for d in got)


def test_two_attempts_never_adopt_one_copy() -> None:
    """Two finished rows with the same name and size orphan two copies, never one twice."""
    files = [rf("o1", 105, 7, "r.pdf"), rf("o2", 106, 7, "r.pdf")]
    attempts = [
        Attempt(1, "r.pdf", 7, "file-extract", intent_at=100, finished_at=110),
        Attempt(2, "r.pdf", 7, "file-extract", intent_at=101, finished_at=110),
    ]
    got = find_orphans(files, attempts, claimed=(), skew=30.0)
    assert [(d.file.id, d.ledger_id) for d in got] == [("o1", 1), ("o2", 2)]


def test_a_pass_makes_room_for_the_uploads_waiting() -> None:
    """With room asked for 2 uploads, a pass leaves max_files - 2 files (oldest own first),
    and max_bytes - their bytes."""
    files = [rf("a", 1, 40), rf("b", 2, 40), rf("c", 3, 40), rf("d", 4, 40)]
    owned = own("a", "b", "c", "d")
    by_count = plan_deletions(files, owned, RetentionLimits(max_files=4), now=NOW, room=(2, 0))
    assert planned(by_count) == [("a", "max_files"), ("b", "max_files")]
    by_size = plan_deletions(files, owned, RetentionLimits(max_bytes=160), now=NOW, room=(1, 50))
    assert planned(by_size) == [("a", "max_bytes"), ("b", "max_bytes")]


def test_a_copy_whose_content_is_in_use_is_not_chosen() -> None:
    """A copy whose content the pipeline holds now (an upload waiting for room may hold it)
    is skipped: the next oldest goes instead, so a pass never waits on a waiting upload."""
    files = [rf("a", 1), rf("b", 2), rf("c", 3)]
    owned = {
        i: Owned(i, n, "in", f"{i}.txt", None, sha256=f"sha-{i}")
        for n, i in enumerate(("a", "b", "c"), 1)
    }
    got = plan_deletions(files, owned, RetentionLimits(max_files=2), now=NOW, busy={"sha-a"})
    assert planned(got) == [("b", "max_files")]


@pytest.mark.parametrize(
    ("files", "nbytes", "room", "expected"),
    [
        (8, 80, (2, 0), False),
        (9, 80, (2, 0), True),
        (1, 95, (1, 10), True),
        (1, 90, (1, 10), False),
        (0, 0, (20, 0), False),
    ],
)
def test_short_of(files: int, nbytes: int, room: tuple[int, int], expected: bool) -> None:
    """A pass falls short when the account is still over the limits less the room asked for
    (max_files = 10, max_bytes = 100; room past the limit asks for an empty account)."""
    limits = RetentionLimits(max_files=10, max_bytes=100)
    assert short_of(files, nbytes, limits, room) is expected
