"""systemd's notify protocol in pure Python (``sd_notify(3)``), no libsystemd needed.

Each message is one datagram of ``KEY=VALUE`` lines sent to the AF_UNIX SOCK_DGRAM socket
named by ``$NOTIFY_SOCKET`` (a leading ``@`` means the abstract namespace). When the variable
is unset (not run by systemd, or ``Type=`` is not ``notify``) every call is a no-op.

Notification is best-effort by design: a failed send is logged and never stops the daemon —
systemd's own timeouts (start, watchdog) are what catch a daemon that cannot talk to it.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

import anyio

__all__ = ["Notifier", "status_loop", "watchdog_interval", "watchdog_loop"]

logger = logging.getLogger(__name__)


def _address(value: str) -> str | None:
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    logger.warning(
        "systemd notify: NOTIFY_SOCKET=%r is neither a path nor @abstract; ignored", value
    )
    return None


class Notifier:
    """Sends notify messages to systemd; ``Notifier.from_environ()`` is the usual way in."""

    def __init__(self, address: str | None) -> None:
        """``address`` is a socket path or ``@name``; None makes every call a no-op."""
        self.address = _address(address or "")
        self._sock: socket.socket | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> Notifier:
        return cls(environ.get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """Send one datagram of ``KEY=VALUE`` fields; True when it was handed to the kernel."""
        if self.address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                # Never block the event loop: systemd drains its queue, a full queue is a drop.
                self._sock.setblocking(False)
            self._sock.sendto("\n".join(fields).encode(), self.address)
        except OSError as exc:
            logger.warning("systemd notify: cannot send %s (%s)", fields[0], exc)
            return False
        return True

    def ready(self) -> bool:
        return self.send("READY=1")

    def status(self, text: str) -> bool:
        # A newline would start a new KEY=VALUE field: keep STATUS one line.
        return self.send("STATUS=" + " ".join(text.splitlines()))

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def reloading(self) -> bool:
        """``RELOADING=1`` with ``MONOTONIC_USEC`` (what ``Type=notify-reload`` requires too)."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds between pings (half of ``WATCHDOG_USEC``), or None when no watchdog is ours."""
    raw = environ.get("WATCHDOG_USEC", "")
    if not raw.isdigit() or int(raw) == 0:
        return None
    owner = environ.get("WATCHDOG_PID", "")
    if owner and (not owner.isdigit() or int(owner) != pid):
        return None
    return int(raw) / 2 / 1_000_000


async def watchdog_loop(notifier: Notifier, *, environ: Mapping[str, str] = os.environ) -> None:
    """Ping ``WATCHDOG=1`` at half of ``WATCHDOG_USEC`` until cancelled.

    The pings come from a task on the daemon's event loop itself, so a blocked loop stops
    pinging and systemd restarts the process. Returns at once when no watchdog is set for this
    process (``WATCHDOG_PID`` names another one) or notify is disabled.
    """
    interval = watchdog_interval(environ, os.getpid())
    if interval is None or not notifier.enabled:
        return
    logger.debug("systemd notify: watchdog ping every %.3f s", interval)
    while True:
        notifier.watchdog()
        await anyio.sleep(interval)


async def status_loop(
    notifier: Notifier, describe: Callable[[], str], *, interval: float = 5.0
) -> None:
    """Every ``interval`` seconds send ``STATUS=<describe()>`` when the text changed.

    ``describe`` is cheap and synchronous (counts the daemon already holds); what
    ``systemctl status`` shows is the last STATUS sent, so unchanged text is not re-sent.
    """
    if not notifier.enabled:
        return
    last: str | None = None
    while True:
        text = describe()
        if text != last:
            notifier.status(text)
            last = text
        await anyio.sleep(interval)
