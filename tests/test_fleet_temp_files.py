"""Temp files are scoped by host id, so a host joining a fleet never removes another host's."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from handlers import moves
from handlers.leftovers import is_temp_leftover, remove_temp_leftovers
from handlers.moves import use_host_id, write_bytes_atomic
from handlers.names import temp_name
from tests.harness import running


@pytest.fixture
def host_b() -> Iterator[None]:
    """This process writes temp files as host ``host-b`` for the test, then as before."""
    before = moves.host_id()
    use_host_id("host-b")
    yield
    use_host_id(before)


def test_temp_name_names_the_host() -> None:
    """A temp name is ``.<name>.inboxd-<host id>-<token>.tmp``."""
    assert temp_name("a.txt", "0a1b2c3d", host="node-1") == ".a.txt.inboxd-node-1-0a1b2c3d.tmp"


@pytest.mark.parametrize(
    ("name", "legacy", "expected"),
    [
        (".a.txt.inboxd-host-b-0a1b2c3d.tmp", False, True),
        (".a.txt.inboxd-host-a-0a1b2c3d.tmp", False, False),  # another host's
        (".a.txt.inboxd-host-a-0a1b2c3d.tmp", True, False),
        (".a.txt.inboxd-0a1b2c3d.tmp", True, True),  # legacy, unscoped: single host only
        (".a.txt.inboxd-0a1b2c3d.tmp", False, False),
        (".a.txt.inboxd-host-b-0a1b2c3.tmp", False, False),
        (".a.txt.inboxd-xhost-b-0a1b2c3d.tmp", False, False),
    ],
)
def test_is_temp_leftover_of_this_host(name: str, legacy: bool, expected: bool) -> None:
    """Only this host's temp names count as leftovers (and the legacy ones when asked)."""
    assert is_temp_leftover(name, host="host-b", legacy=legacy) is expected


def test_writes_use_this_hosts_temp_names(tmp_path: Path, host_b: None) -> None:
    """A write's temp file carries the host id set with use_host_id."""
    seen: list[str] = []
    real_replace = Path.replace

    def replace(self: Path, target: str | Path) -> Path:
        seen.append(self.name)
        return real_replace(self, target)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(Path, "replace", replace)
        write_bytes_atomic(tmp_path / "a.txt.upload.json", b"{}")
    [name] = seen
    assert name.startswith(".a.txt.upload.json.inboxd-host-b-")
    assert is_temp_leftover(name, host="host-b", legacy=False)


def test_remove_only_this_hosts_without_legacy(tmp_path: Path) -> None:
    """With a shared store (no legacy cleanup) only this host's temp files go."""
    names = [
        ".a.inboxd-host-a-0a1b2c3d.tmp",
        ".b.inboxd-host-b-0a1b2c3d.tmp",
        ".c.inboxd-0a1b2c3d.tmp",
    ]
    for name in names:
        (tmp_path / name).write_bytes(b"half")
    assert remove_temp_leftovers([tmp_path], host="host-b", legacy=False) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [names[0], names[2]]


@pytest.mark.anyio
async def test_joining_host_leaves_other_hosts_temp_files(tmp_path: Path) -> None:
    """A daemon starting as host-b on a done folder shared with host-a removes its own and the
    legacy temp files there (no state_url), never host-a's."""
    done = tmp_path / "in.done"
    done.mkdir()
    theirs = done / ".x.pdf.inboxd-host-a-0a1b2c3d.tmp"
    mine = done / ".y.pdf.inboxd-host-b-0a1b2c3d.tmp"
    legacy = done / ".z.pdf.inboxd-0a1b2c3d.tmp"
    for path in (theirs, mine, legacy):
        path.write_bytes(b"half")
    async with running(tmp_path, host_id="host-b"):
        assert sorted(p.name for p in done.iterdir()) == [theirs.name]
    assert theirs.read_bytes() == b"half"
