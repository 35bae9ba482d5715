"""`cutover_copy_items_total{tenant,resource,how}`: what each REST copy did and what mirroring did while
it ran, read once per scrape from the copies' checkpoints (PostgreSQL: `copied`, `skipped`) and the
worker's counts (Redis: `mirrored`, `transferred`, `delete_absent`; `buffer_worker.copy_marks`).

`tenant` is folded as the other per-tenant metrics fold it (`telemetry.labels`: the labelled tenants by
id, the rest as `other`). A store that does not answer leaves its part out of that scrape.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

import asyncpg
from redis.exceptions import RedisError

from backfill.rest_checkpoint import counts as copy_counts
from buffer_worker.copy_marks import all_facts
from proxy.runtime import Runtime
from telemetry.labels import OTHER
from telemetry.prometheus import MetricsExposition

log = logging.getLogger("cutover.metrics")
_STORE_TIMEOUT_S = 3.0
Points = Iterable[tuple[float, dict[str, str]]]


class CopyMetrics:
    def __init__(self, runtime: Runtime, exposition: MetricsExposition) -> None:
        self._runtime = runtime
        self._counts: dict[tuple[str, str, str], int] = {}
        exposition.counter(
            "cutover_copy_items",
            "REST copy, by tenant, resource and how: records the copy wrote to new (copied) or left to"
            " mirroring, which wrote them first (skipped); records mirroring created or changed while the"
            " copy ran (mirrored); intents settled from the authoritative side (transferred); deletes of"
            " records new did not hold (delete_absent)",
            self._points,
        )

    async def refresh(self) -> None:
        """Read the counts before a collection (OpenTelemetry's callbacks are synchronous)."""
        runtime = self._runtime
        found: dict[tuple[str, str, str], int] = {}
        try:
            async with runtime.pool.acquire() as conn, asyncio.timeout(_STORE_TIMEOUT_S):
                rows = await copy_counts(conn)
            for tenant, resource, copied, skipped in rows:
                found[(tenant, resource, "copied")] = copied
                found[(tenant, resource, "skipped")] = skipped
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            log.warning("metrics: copy checkpoints unavailable (%s)", type(exc).__name__)
        buffer = runtime.settings.buffer
        try:
            facts = all_facts(
                runtime.inspector.client, prefix=buffer.key_prefix, partitions=buffer.partitions
            )
            async with asyncio.timeout(_STORE_TIMEOUT_S):
                found.update(await facts)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("metrics: copy facts unavailable (%s)", type(exc).__name__)
        self._counts = found

    def _points(self) -> Points:
        labelled = self._runtime.telemetry.labels.labelled
        folded: dict[tuple[str, str, str], int] = {}
        for (tenant, resource, how), n in self._counts.items():
            key = (tenant if tenant in labelled else OTHER, resource, how)
            folded[key] = folded.get(key, 0) + n
        return [(n, {"tenant": t, "resource": r, "how": h}) for (t, r, h), n in folded.items()]
