"""The status line: what ``systemctl status`` shows and the periodic summary log line."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from daemon.ops.notify import Notifier

__all__ = ["STATUS_INTERVAL", "StatusLine", "status_text"]

logger = logging.getLogger(__name__)

STATUS_INTERVAL = 5.0


def status_text(counts: Mapping[str, int], depth: int) -> str:
    """The one-line status of the ledger ``counts`` and the intake's ``depth``."""
    return (
        f"done {counts.get('done', 0)}, quarantined {counts.get('quarantined', 0)}, "
        f"uploading {counts.get('uploading', 0)}, queued {depth}"
    )


class StatusLine:
    """Sends the status to systemd when it changed and logs it every summary interval."""

    def __init__(self, notifier: Notifier) -> None:
        self._notifier = notifier
        self._last = ""
        self._next_summary: float | None = None

    def tick(self, counts: Mapping[str, int], depth: int, *, now: float, every: float) -> float:
        """One status tick at ``now`` (anyio's clock); seconds until the next one."""
        if self._next_summary is None:
            self._next_summary = now + every
        text = status_text(counts, depth)
        if text != self._last:  # systemctl status shows the last one: resend only changes
            self._notifier.status(text)
            self._last = text
        if now >= self._next_summary:
            logger.info("summary: %s", text)
            # The interval as reloaded; a late tick does not cause a burst of summaries.
            self._next_summary += every
            if self._next_summary <= now:
                self._next_summary = now + every
        return max(0.0, min(STATUS_INTERVAL, self._next_summary - now))
