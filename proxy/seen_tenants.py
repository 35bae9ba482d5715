"""Tenants seen in traffic, remembered so that fleet moves also find tenants without a phase row.

The data plane calls `note(tenant)` on every request that names a tenant: one set lookup, and for a tenant
this process has not written yet, one append. A background task writes the new names to PostgreSQL in
one statement every `flush_interval_s`. Nothing on the request path waits for the store; when it is
unreachable the names are forgotten and noted again by their next request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import suppress
from typing import Any

import asyncpg

from config.operator import SeenTenantSettings

log = logging.getLogger("cutover.seen_tenants")
_STORE_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)
# Serialises concurrent creation of the table by several proxies starting at once (any fixed number).
_SCHEMA_LOCK = 0x7365_656E_7465_6E
SCHEMA = """
CREATE TABLE IF NOT EXISTS cutover_seen_tenant (
    tenant      text PRIMARY KEY,
    first_seen  timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz NOT NULL DEFAULT now()
);
"""
_UPSERT = (
    "INSERT INTO cutover_seen_tenant (tenant) SELECT unnest($1::text[])"
    " ON CONFLICT (tenant) DO UPDATE SET last_seen = now()"
)


async def ensure_seen_schema(conn: asyncpg.Connection) -> None:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
        await conn.execute(SCHEMA)


class SeenTenants:
    def __init__(self, pool: asyncpg.Pool, settings: SeenTenantSettings) -> None:
        self._pool = pool
        self._settings = settings
        # Names written (or about to be) since the last refresh; bounded by clearing it (see `_flush`).
        self._seen: set[str] = set()
        self._new: list[str] = []
        self._max_new = settings.max_pending
        self._max_seen = settings.max_pending * 10
        self._refreshed_at = time.monotonic()
        self._schema_ready = False
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0
        self.written = 0

    # -- hot path -------------------------------------------------------------------------------------
    def note(self, tenant: str) -> None:
        if tenant in self._seen:
            return
        if len(self._new) >= self._max_new:
            self.dropped += 1  # not marked seen: its next request tries again
            return
        self._seen.add(tenant)
        self._new.append(tenant)

    # -- background -----------------------------------------------------------------------------------
    def start(self) -> None:
        if self._settings.enabled:
            self._task = asyncio.create_task(self._run(), name="seen-tenants")

    async def stop(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        with suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        with suppress(*_STORE_ERRORS):
            await asyncio.wait_for(self.flush(), 2)  # what arrived since the last flush

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._settings.flush_interval_s)
            try:
                await self.flush()
            except _STORE_ERRORS as exc:
                log.debug("could not record seen tenants: %s", type(exc).__name__)

    async def flush(self) -> int:
        """Write the tenants noted since the last flush; return how many."""
        batch, self._new = self._new, []
        now = time.monotonic()
        if now - self._refreshed_at >= self._settings.refresh_s or len(self._seen) > self._max_seen:
            # Forget what was written, so active tenants are written again and their last_seen moves on.
            self._seen = set(batch)
            self._refreshed_at = now
        if not batch:
            return 0
        try:
            async with self._pool.acquire() as conn:
                if not self._schema_ready:
                    await ensure_seen_schema(conn)
                    self._schema_ready = True
                await conn.execute(_UPSERT, batch)
        except BaseException:
            self._seen.difference_update(batch)  # noted again by their next request
            raise
        self.written += len(batch)
        return len(batch)


async def list_seen_only(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    """Tenants seen in traffic that have no phase row (they follow the default phase)."""
    try:
        rows = await pool.fetch(
            "SELECT s.tenant, s.first_seen, s.last_seen FROM cutover_seen_tenant s"
            " WHERE NOT EXISTS (SELECT 1 FROM cutover_tenant_phase p WHERE p.tenant = s.tenant)"
            " ORDER BY s.tenant"
        )
    except asyncpg.UndefinedTableError:  # no proxy has recorded a tenant yet
        return []
    return [
        {
            "tenant": row["tenant"],
            "first_seen": row["first_seen"].isoformat(),
            "last_seen": row["last_seen"].isoformat(),
        }
        for row in rows
    ]
