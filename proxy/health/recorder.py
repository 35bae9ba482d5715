"""Writes one data-plane process's per-tenant series to PostgreSQL (`proxy.health.store`), in the
background: nothing on the request path waits for it.

Every `operator.health.flush_interval_s` the counts gathered since the last write (`SideSeries.take`) are
folded to the cap and added to the current bucket in one round trip; a write that fails keeps its counts
for the next one (a short store outage loses nothing, and the counts land in a later bucket). Once per
bucket, the process that samples the buffer (process 0 of each proxy) reads Redis's per-tenant backlog,
and about once a minute any process deletes what is past the retention (deletes of several processes
overlap harmlessly).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from contextlib import suppress
from typing import Any

import asyncpg

from buffer_worker.keys import partition_of
from common.periodic import Periodic
from common.store_errors import BUFFER_ERRORS, STORE_ERRORS
from config.operator import HealthSettings
from proxy.health.series import SideSeries, fold, keep_apart, label_of
from proxy.health.store import prune, write_backlog, write_requests

log = logging.getLogger("cutover.health")
_PRUNE_EVERY_S = 60.0
# Distinct (tenant, side) keys held between two writes, per process: the busiest are almost always among
# the first seen, and whatever is beyond is counted as (other) rather than forgotten.
WINDOW_CAPACITY_MIN = 512

BacklogReader = Callable[[], Awaitable[dict[str, Any]]]


def window_capacity(settings: HealthSettings, labels: Iterable[str]) -> int:
    return max(WINDOW_CAPACITY_MIN, 3 * (16 * settings.top_tenants + len(list(labels))))


def fold_backlog(
    gauges: dict[str, Any], partitions: int, labels: Iterable[str], top_n: int
) -> dict[tuple[str, str], tuple[int, float]]:
    """`BufferInspector.gauges()` → (tenant, side) → (pending, oldest_s) under the cap. The age is that
    of the oldest unapplied intent of the tenant's partition: an upper bound of the tenant's own (its
    exact figure needs a scan of the partition, which the health view does for one tenant)."""
    lag = {p["partition"]: float(p["lag_s"]) for p in gauges["partitions"]}
    pending: dict[tuple[str, str], int] = gauges["tenant_pending"]
    totals: dict[str | None, float] = {}
    for (tenant, _side), n in pending.items():
        totals[tenant] = totals.get(tenant, 0) + n
    kept = keep_apart(totals, labels, top_n)
    folded: dict[tuple[str, str], tuple[int, float]] = {}
    for (tenant, side), n in pending.items():
        if n <= 0:
            continue
        key = (label_of(tenant, kept), side)
        oldest = lag.get(partition_of(tenant, partitions), 0.0)
        before = folded.get(key, (0, 0.0))
        folded[key] = (before[0] + n, max(before[1], oldest))
    return folded


class HealthRecorder:
    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: HealthSettings,
        series: SideSeries,
        *,
        labels: Iterable[str],
        backlog: BacklogReader | None = None,
        partitions: int = 1,
    ) -> None:
        self._pool = pool
        self._settings = settings
        self._series = series
        self._labels = tuple(labels)
        self._backlog = backlog
        self._partitions = partitions
        self._periodic = Periodic(
            "health-recorder",
            settings.flush_interval_s,
            self._tick,
            final=self.flush,
            final_errors=STORE_ERRORS,
        )
        self._sampled_at = float("-inf")
        self._pruned_at = float("-inf")
        self.written = 0  # rows written (requests and backlog)
        self.failed_writes = 0

    def start(self) -> None:
        self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()  # and a last write: what arrived since the one before

    async def _tick(self) -> None:
        await self.flush()
        now = time.monotonic()
        if self._backlog is not None and now - self._sampled_at >= self._settings.bucket_s:
            self._sampled_at = now
            await self.sample_backlog()
        if now - self._pruned_at >= _PRUNE_EVERY_S:
            self._pruned_at = now
            with suppress(*STORE_ERRORS):
                await prune(self._pool, self._settings.retention_s)

    async def flush(self) -> int:
        """Add the counts gathered since the last write to the current bucket; return the rows written."""
        taken = self._series.take()
        if not taken:
            return 0
        rows = fold(taken, self._labels, self._settings.top_tenants)
        try:
            await write_requests(self._pool, rows, self._settings.bucket_s)
        except STORE_ERRORS as exc:
            self._series.merge_back(taken)
            self.failed_writes += 1
            log.warning(
                "could not write per-tenant health counts (%s); kept for the next write", type(exc).__name__
            )
            return 0
        self.written += len(rows)
        return len(rows)

    async def sample_backlog(self) -> int:
        """Record each tenant's backlog toward each side in the current bucket; return the rows written."""
        assert self._backlog is not None
        try:
            async with asyncio.timeout(5):
                gauges = await self._backlog()
        except BUFFER_ERRORS as exc:
            log.debug("buffer backlog not sampled: %s", type(exc).__name__)
            return 0
        rows = fold_backlog(gauges, self._partitions, self._labels, self._settings.top_tenants)
        try:
            await write_backlog(self._pool, rows, self._settings.bucket_s)
        except STORE_ERRORS as exc:
            log.debug("buffer backlog not written: %s", type(exc).__name__)
            return 0
        self.written += len(rows)
        return len(rows)
