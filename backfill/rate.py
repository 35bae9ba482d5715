"""The backfill's throttle (`--rows-per-s`), shared by the table copy (rows per chunk) and the REST copy
(one record per write)."""

from __future__ import annotations

import asyncio
import time


class RateLimit:
    """Keeps the rows copied by all workers together at or below `rows_per_s` on average."""

    def __init__(self, rows_per_s: float | None) -> None:
        self._rate = rows_per_s or 0.0
        self._started: float | None = None
        self._rows = 0

    @property
    def limited(self) -> bool:
        return self._rate > 0

    async def take(self, rows: int) -> None:
        if self._rate <= 0:
            return
        now = time.monotonic()
        if self._started is None:
            self._started = now
        self._rows += rows
        due = self._started + self._rows / self._rate
        if due > now:
            await asyncio.sleep(due - now)
