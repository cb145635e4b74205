"""The circuit breakers' table, as the store's methods (``providers.types.BreakerStore``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from daemon.state import _ledger_sql as sql
from daemon.state._conn import Conn, Row
from providers.types import BreakerRecord

__all__ = ["BreakerTable"]

T = TypeVar("T")


class BreakerTable:
    """Mixed into ``daemon.state.store.Store``: its breaker methods, on the same state."""

    _clock: Callable[[], float]

    async def _write(self, fn: Callable[[Conn], T]) -> T:
        raise NotImplementedError

    async def _fetch(self, query: str, params: Sequence[Any] = ()) -> list[Row]:
        raise NotImplementedError

    # -- breakers ---------------------------------------------------------------------------

    async def load_breaker(self, provider: str) -> BreakerRecord | None:
        """The persisted breaker of ``provider``, or None when it never left ``closed``."""
        rows = await self._fetch("SELECT * FROM breakers WHERE provider = ?", (provider,))
        return sql.breaker_from_row(rows[0]) if rows else None

    async def save_breaker(self, provider: str, record: BreakerRecord) -> None:
        """Persist ``record`` as the breaker of ``provider`` (committed on return)."""
        params = sql.breaker_params(provider, record)
        await self._write(lambda db: db.run(sql.SAVE_BREAKER, params))

    async def claim_probe(self, provider: str, *, now: float, lease_until: float) -> bool:
        """Atomically claim the one half-open probe (see ``providers.types.BreakerStore``)."""
        params = (lease_until, self._clock(), provider, now, now)
        return await self._write(lambda db: db.run(sql.CLAIM_PROBE, params) == 1)

    async def reset_breaker(self, provider: str) -> None:
        """Close ``provider``'s breaker and forget its history (``inboxd breaker reset``)."""
        record = BreakerRecord(reason="reset by operator", updated_at=self._clock())
        await self.save_breaker(provider, record)

    async def all_breakers(self) -> dict[str, BreakerRecord]:
        """Every persisted breaker, by provider name."""
        rows = await self._fetch("SELECT * FROM breakers ORDER BY provider")
        return {row["provider"]: sql.breaker_from_row(row) for row in rows}
