"""Divergent shadow comparisons, stored in PostgreSQL for inspection, with bounded retention.

A `Sample` is built already masked (`proxy.shadow.sample`): nothing here sees a raw masked value. The
shadow process only `submit`s (a non-blocking put on a bounded queue); one background task writes
batches. A full queue drops the sample and counts it: recording must never slow the comparisons.

Retention: after each batch, each tenant in it keeps its newest `max_samples_per_tenant` samples; every
`prune_interval_s`, samples older than `max_age_s` go.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson

from common.store_errors import STORE_ERRORS
from common.tasks import cancel_and_wait
from config.divergence import RetentionSettings

log = logging.getLogger("cutover.divergences")
_BATCH = 100


@dataclass(frozen=True, slots=True)
class Sample:
    tenant: str
    phase: str
    resource: str
    verdict: str
    method: str
    path: str
    query: str  # masked parameters already hashed
    request_headers: list[tuple[str, str]]
    serving_side: str
    serving_status: int | None
    shadow_status: int | None
    serving_body: bytes | None  # decoded and masked
    shadow_body: bytes | None
    differences: list[dict[str, Any]]  # masked, each with "noise": bool
    fields: list[str]  # the divergent (not noise) fields
    response_headers: dict[str, dict[str, str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class DivergenceRecorder:
    """`on_stored(n)` / `on_dropped(n)` report outcomes (the recorder runs in the shadow process, the
    counters live in the serving process)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        queue_size: int,
        retention: RetentionSettings,
        on_stored: Callable[[int], None],
        on_dropped: Callable[[int], None],
    ) -> None:
        self._pool = pool
        self._retention = retention
        self._on_stored = on_stored
        self._on_dropped = on_dropped
        self._queue: asyncio.Queue[Sample] = asyncio.Queue(queue_size)
        self._task: asyncio.Task[None] | None = None
        self._last_age_prune = 0.0

    def submit(self, sample: Sample) -> None:
        try:
            self._queue.put_nowait(sample)
        except asyncio.QueueFull:
            self._on_dropped(1)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="divergence-recorder")

    async def stop(self, drain_timeout_s: float = 2.0) -> None:
        """Write what is queued (bounded in time), then stop."""
        if self._task is None:
            return
        with suppress(TimeoutError):
            async with asyncio.timeout(drain_timeout_s):
                await self._queue.join()
        await cancel_and_wait(self._task)
        if not self._queue.empty():
            log.warning("abandoned %d unrecorded divergence samples at shutdown", self._queue.qsize())

    async def _run(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self._retention.prune_interval_s):
                    batch = [await self._queue.get()]
            except TimeoutError:
                await self._prune_by_age()
                continue
            while len(batch) < _BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await insert_samples(self._pool, batch)
                self._on_stored(len(batch))
                await prune(self._pool, {s.tenant for s in batch}, self._retention.max_samples_per_tenant)
                if time.monotonic() - self._last_age_prune > self._retention.prune_interval_s:
                    await self._prune_by_age()
            except STORE_ERRORS as exc:
                self._on_dropped(len(batch))
                log.warning("could not store %d divergence samples: %s", len(batch), type(exc).__name__)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _prune_by_age(self) -> None:
        self._last_age_prune = time.monotonic()
        try:
            await prune_older_than(self._pool, self._retention.max_age_s)
        except STORE_ERRORS as exc:
            log.warning("could not prune old divergence samples: %s", type(exc).__name__)


async def insert_samples(pool: asyncpg.Pool, samples: list[Sample]) -> None:
    await pool.executemany(
        "INSERT INTO cutover_divergence (tenant, phase, resource, verdict, method, path, query,"
        " request_headers, serving_side, serving_status, shadow_status, serving_body, shadow_body,"
        " differences, fields, response_headers, notes)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10, $11, $12, $13, $14::jsonb, $15,"
        " $16::jsonb, $17::jsonb)",
        [_row(s) for s in samples],
    )


def _row(s: Sample) -> tuple[Any, ...]:
    return (
        s.tenant,
        s.phase,
        s.resource,
        s.verdict,
        s.method,
        s.path,
        s.query,
        orjson.dumps(s.request_headers).decode(),
        s.serving_side,
        s.serving_status,
        s.shadow_status,
        s.serving_body,
        s.shadow_body,
        orjson.dumps(s.differences).decode(),
        s.fields,
        orjson.dumps(s.response_headers).decode(),
        orjson.dumps(s.notes).decode(),
    )


async def prune(pool: asyncpg.Pool, tenants: set[str], keep: int) -> int:
    """Keep each tenant's newest `keep` samples; return how many were deleted."""
    deleted = 0
    for tenant in tenants:
        status = await pool.execute(
            "DELETE FROM cutover_divergence WHERE tenant = $1 AND id <= (SELECT id FROM cutover_divergence"
            " WHERE tenant = $1 ORDER BY id DESC OFFSET $2 LIMIT 1)",
            tenant,
            keep,
        )
        deleted += int(status.split()[-1])
    return deleted


async def prune_older_than(pool: asyncpg.Pool, max_age_s: float) -> int:
    status = await pool.execute(
        "DELETE FROM cutover_divergence WHERE at < now() - make_interval(secs => $1)", max_age_s
    )
    return int(status.split()[-1])


async def list_divergences(
    pool: asyncpg.Pool,
    tenant: str,
    *,
    limit: int = 50,
    field_name: str | None = None,
    before_id: int | None = None,
) -> list[dict[str, Any]]:
    """Newest first; `before_id`: only samples older than that one (the next page)."""
    rows = await pool.fetch(
        "SELECT * FROM cutover_divergence WHERE tenant = $1 AND ($3::text IS NULL OR $3 = ANY(fields))"
        " AND ($4::bigint IS NULL OR id < $4) ORDER BY id DESC LIMIT $2",
        tenant,
        limit,
        field_name,
        before_id,
    )
    return [_divergence(row) for row in rows]


async def get_divergence(pool: asyncpg.Pool, tenant: str, divergence_id: int) -> dict[str, Any] | None:
    row = await pool.fetchrow(
        "SELECT * FROM cutover_divergence WHERE tenant = $1 AND id = $2", tenant, divergence_id
    )
    return None if row is None else _divergence(row)


def _divergence(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "tenant": row["tenant"],
        "at": row["at"].isoformat(),
        "phase": row["phase"],
        "resource": row["resource"],
        "verdict": row["verdict"],
        "method": row["method"],
        "path": row["path"],
        "query": row["query"],
        "request_headers": orjson.loads(row["request_headers"]),
        "serving_side": row["serving_side"],
        "serving_status": row["serving_status"],
        "shadow_status": row["shadow_status"],
        "serving_body": _text(row["serving_body"]),
        "shadow_body": _text(row["shadow_body"]),
        "response_headers": orjson.loads(row["response_headers"]),
        "differences": orjson.loads(row["differences"]),
        "fields": list(row["fields"]),
        "notes": orjson.loads(row["notes"]),
    }


def _text(body: bytes | None) -> str | None:
    return None if body is None else body.decode("utf-8", errors="replace")
