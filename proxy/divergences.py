"""Divergent shadow comparisons, stored in PostgreSQL for inspection.

The data plane only `submit`s (a non-blocking put on a bounded queue); one background task writes batches.
A full queue drops the sample and counts it: recording must never slow or fail the serving path.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from proxy.compare import Comparison, Observation

log = logging.getLogger("cutover.divergences")
_BATCH = 100


@dataclass(frozen=True, slots=True)
class Divergence:
    tenant: str
    phase: str
    method: str
    path: str
    query: str
    serving_side: str
    serving: Observation
    shadow: Observation
    comparison: Comparison


class DivergenceRecorder:
    """`on_stored(n)` / `on_dropped(n)` report outcomes (the recorder runs in the shadow process, the
    counters live in the serving process)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        queue_size: int,
        on_stored: Callable[[int], None],
        on_dropped: Callable[[int], None],
    ) -> None:
        self._pool = pool
        self._on_stored = on_stored
        self._on_dropped = on_dropped
        self._queue: asyncio.Queue[Divergence] = asyncio.Queue(queue_size)
        self._task: asyncio.Task[None] | None = None

    def submit(self, divergence: Divergence) -> None:
        try:
            self._queue.put_nowait(divergence)
        except asyncio.QueueFull:
            self._on_dropped(1)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="divergence-recorder")

    async def stop(self, drain_timeout_s: float = 2.0) -> None:
        """Write what is queued (bounded in time), then stop."""
        if self._task is None:
            return
        with suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), drain_timeout_s)
        self._task.cancel()
        with suppress(asyncio.CancelledError):
            await self._task
        if not self._queue.empty():
            log.warning("abandoned %d unrecorded divergence samples at shutdown", self._queue.qsize())

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < _BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._pool.executemany(
                    "INSERT INTO cutover_divergence (tenant, phase, method, path, query, serving_side,"
                    " serving_status, shadow_status, serving_body, shadow_body, differences)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb)",
                    [_row(d) for d in batch],
                )
                self._on_stored(len(batch))
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                self._on_dropped(len(batch))
                log.warning("could not store %d divergence samples: %s", len(batch), type(exc).__name__)
            finally:
                for _ in batch:
                    self._queue.task_done()


def _row(d: Divergence) -> tuple[Any, ...]:
    return (
        d.tenant,
        d.phase,
        d.method,
        d.path,
        d.query,
        d.serving_side,
        d.serving.status,
        d.shadow.status,
        d.serving.body,
        d.shadow.body,
        orjson.dumps(d.comparison.differences).decode(),
    )


async def list_divergences(pool: asyncpg.Pool, tenant: str, *, limit: int = 50) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT * FROM cutover_divergence WHERE tenant = $1 ORDER BY id DESC LIMIT $2", tenant, limit
    )
    return [
        {
            "id": row["id"],
            "tenant": row["tenant"],
            "at": row["at"].isoformat(),
            "phase": row["phase"],
            "method": row["method"],
            "path": row["path"],
            "query": row["query"],
            "serving_side": row["serving_side"],
            "serving_status": row["serving_status"],
            "shadow_status": row["shadow_status"],
            "serving_body": _text(row["serving_body"]),
            "shadow_body": _text(row["shadow_body"]),
            "differences": orjson.loads(row["differences"]),
        }
        for row in rows
    ]


def _text(body: bytes | None) -> str | None:
    return None if body is None else body.decode("utf-8", errors="replace")
