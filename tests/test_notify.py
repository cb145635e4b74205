"""daemon.ops.notify: the exact datagrams systemd receives, over a real unix datagram socket."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from daemon.ops.notify import Notifier, status_loop, watchdog_interval, watchdog_loop


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound AF_UNIX datagram socket standing in for systemd, and its NOTIFY_SOCKET value."""
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        yield sock, str(path)


@pytest.fixture
def abstract_receiver() -> Iterator[tuple[socket.socket, str]]:
    """The same, bound in the abstract namespace (``@name``)."""
    name = f"inboxd-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        yield sock, "@" + name


async def receive(sock: socket.socket) -> bytes:
    """The next datagram on ``sock``, waiting on the loop (never sleeping), at most 5 s."""
    with anyio.fail_after(5):
        while True:
            try:
                return sock.recv(4096, socket.MSG_DONTWAIT)
            except BlockingIOError:
                await anyio.wait_readable(sock)


def pending(sock: socket.socket) -> list[bytes]:
    """Every datagram already queued on ``sock``."""
    out = []
    while True:
        try:
            out.append(sock.recv(4096, socket.MSG_DONTWAIT))
        except BlockingIOError:
            return out


@pytest.mark.anyio
async def test_each_message_is_the_exact_datagram(receiver: tuple[socket.socket, str]) -> None:
    """ready, status, stopping and watchdog each send exactly their sd_notify datagram."""
    sock, address = receiver
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": address})
    assert notifier.ready()
    assert notifier.status("3 queued, 1 uploading\n2 quarantined")
    assert notifier.watchdog()
    assert notifier.stopping()
    got = [await receive(sock) for _ in range(4)]
    notifier.close()
    assert got == [
        b"READY=1",
        b"STATUS=3 queued, 1 uploading 2 quarantined",
        b"WATCHDOG=1",
        b"STOPPING=1",
    ]


@pytest.mark.anyio
async def test_reloading_carries_the_monotonic_clock(receiver: tuple[socket.socket, str]) -> None:
    """RELOADING=1 comes with MONOTONIC_USEC read from CLOCK_MONOTONIC at the time of sending."""
    sock, address = receiver
    notifier = Notifier(address)
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    first, second = (await receive(sock)).decode().split("\n")
    notifier.close()
    assert first == "RELOADING=1"
    name, _, value = second.partition("=")
    assert name == "MONOTONIC_USEC"
    assert before <= int(value) <= after


@pytest.mark.anyio
async def test_abstract_namespace_socket(abstract_receiver: tuple[socket.socket, str]) -> None:
    """A NOTIFY_SOCKET starting with ``@`` reaches the abstract-namespace socket."""
    sock, address = abstract_receiver
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": address})
    notifier.ready()
    assert await receive(sock) == b"READY=1"
    notifier.close()


@pytest.mark.parametrize("value", [None, "", "relative/path"])
def test_no_usable_socket_is_a_no_op(value: str | None) -> None:
    """Without a usable NOTIFY_SOCKET every call returns False and nothing is sent."""
    environ = {} if value is None else {"NOTIFY_SOCKET": value}
    notifier = Notifier.from_environ(environ)
    assert not notifier.enabled
    assert [notifier.ready(), notifier.status("x"), notifier.stopping()] == [False, False, False]


def test_a_vanished_socket_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A send to a socket nobody listens on returns False and logs a warning."""
    notifier = Notifier(str(tmp_path / "gone.sock"))
    assert notifier.ready() is False
    notifier.close()
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [
        "systemd notify: cannot send READY=1"
    ]


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "20000"}, 0.01),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "abc"}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4243"}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "x"}, None),
    ],
)
def test_watchdog_interval(environ: dict[str, str], expected: float | None) -> None:
    """Pings come at half of WATCHDOG_USEC, only when WATCHDOG_PID (if set) is our pid."""
    assert watchdog_interval(environ, pid=4242) == expected


@pytest.mark.anyio
async def test_watchdog_loop_pings_at_half_the_interval(
    receiver: tuple[socket.socket, str],
) -> None:
    """With WATCHDOG_USEC=20000 the loop sends WATCHDOG=1 every 10 ms until cancelled."""
    sock, address = receiver
    notifier = Notifier(address)
    environ = {"WATCHDOG_USEC": "20000", "WATCHDOG_PID": str(os.getpid())}
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: watchdog_loop(notifier, environ=environ))
        first = await receive(sock)
        start = anyio.current_time()
        rest = [await receive(sock) for _ in range(5)]
        elapsed = anyio.current_time() - start
        tg.cancel_scope.cancel()
    notifier.close()
    assert [first, *rest] == [b"WATCHDOG=1"] * 6
    # Five more pings need at least five 10 ms intervals; never a burst.
    assert elapsed >= 5 * 0.01 * 0.95


@pytest.mark.anyio
async def test_watchdog_loop_returns_when_the_watchdog_is_another_process(
    receiver: tuple[socket.socket, str],
) -> None:
    """WATCHDOG_PID naming another process means no pings at all from us."""
    sock, address = receiver
    notifier = Notifier(address)
    environ = {"WATCHDOG_USEC": "20000", "WATCHDOG_PID": str(os.getpid() + 1)}
    with anyio.fail_after(5):
        await watchdog_loop(notifier, environ=environ)
    notifier.close()
    assert pending(sock) == []


@pytest.mark.anyio
async def test_a_blocked_loop_stops_the_pings(receiver: tuple[socket.socket, str]) -> None:
    """While the event loop is blocked no ping is sent: systemd would see the hang."""
    sock, address = receiver
    notifier = Notifier(address)
    environ = {"WATCHDOG_USEC": "20000"}
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: watchdog_loop(notifier, environ=environ))
        await receive(sock)
        pending(sock)
        # Block the loop itself for 10 intervals (this blocking IS the behaviour under test).
        time.sleep(0.1)  # noqa: ASYNC251 (simulates a stuck event loop on purpose)
        during = pending(sock)
        tg.cancel_scope.cancel()
    notifier.close()
    assert during == []


@pytest.mark.anyio
async def test_status_loop_sends_only_changed_text(receiver: tuple[socket.socket, str]) -> None:
    """status_loop sends STATUS each time the description changes, and never a repeat."""
    sock, address = receiver
    notifier = Notifier(address)
    texts = iter(["0 queued", "0 queued", "2 queued, 1 uploading", "2 queued, 1 uploading"])
    done = anyio.Event()

    def describe() -> str:
        text = next(texts, None)
        if text is None:
            done.set()
            return "2 queued, 1 uploading"
        return text

    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: status_loop(notifier, describe, interval=0.001))
        with anyio.fail_after(5):
            await done.wait()
        tg.cancel_scope.cancel()
    notifier.close()
    assert pending(sock) == [b"STATUS=0 queued", b"STATUS=2 queued, 1 uploading"]
