"""Tenants seen in traffic, remembered so that fleet moves also find tenants without a phase row.

Only real tenants count: the executor calls `note(tenant)` when a backend answered the tenant's request
with a 2xx (any client can put any id in the tenant header; an id that no backend serves never gets
one). The call is one set lookup for a tenant already noted; a new one is appended to the next batch. A
background task writes the batch in one round trip every `flush_interval_s`. Nothing on the request
path waits for the store; when it is unreachable the names are forgotten and noted again by their next
request.

Bounded everywhere: at most `max_pending` new names between two flushes, `max_tenants` names in memory
(the set is cleared past it, and every `refresh_s` so that active tenants' `last_seen` moves on) and
rows in the table (new tenants are not inserted beyond it; concurrent flushes of several proxies may
pass it by at most one batch each). Rows not seen for `retention_s` are deleted, every `refresh_s`.
"""

from __future__ import annotations

import logging
import time

import asyncpg

from common.periodic import Periodic
from common.store_errors import STORE_ERRORS
from config.operator import SeenTenantSettings
from proxy.control.tenant_archive import not_archived

log = logging.getLogger("cutover.seen_tenants")
# Serialises concurrent creation of the table by several proxies starting at once (any fixed number).
_SCHEMA_LOCK = 0x7365_656E_7465_6E
SCHEMA = """
CREATE TABLE IF NOT EXISTS cutover_seen_tenant (
    tenant      text PRIMARY KEY,
    first_seen  timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz NOT NULL DEFAULT now()
);
"""
_TOUCH = "UPDATE cutover_seen_tenant SET last_seen = now() WHERE tenant = ANY($1::text[])"
# New names only, and only while the table has room. count(*) reads at most `max_tenants` rows, once
# per flush that has new names.
_INSERT = (
    "INSERT INTO cutover_seen_tenant (tenant)"
    " SELECT name FROM unnest($1::text[]) AS name"
    " WHERE NOT EXISTS (SELECT 1 FROM cutover_seen_tenant s WHERE s.tenant = name)"
    " LIMIT greatest($2::bigint - (SELECT count(*) FROM cutover_seen_tenant), 0)"
    " ON CONFLICT (tenant) DO NOTHING"
)
_PRUNE = "DELETE FROM cutover_seen_tenant WHERE last_seen < now() - make_interval(secs => $1)"


async def ensure_seen_schema(conn: asyncpg.Connection) -> None:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
        await conn.execute(SCHEMA)


class SeenTenants:
    def __init__(self, pool: asyncpg.Pool, settings: SeenTenantSettings) -> None:
        self._pool = pool
        self._settings = settings
        # Names written (or about to be) since the last refresh; bounded by clearing it (see `flush`).
        self._seen: set[str] = set()
        self._new: list[str] = []
        self._max_new = settings.max_pending
        self._refreshed_at = time.monotonic()
        self._pruned_at = float("-inf")
        self._schema_ready = False
        self._periodic = Periodic(
            "seen-tenants", settings.flush_interval_s, self._tick, final=self.flush, final_errors=STORE_ERRORS
        )
        self.dropped = 0  # names not noted: more than max_pending between two flushes
        self.written = 0  # names inserted or touched
        self.not_inserted = 0  # new names left out: the table was at max_tenants
        self.pruned = 0

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
            self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()  # and a last flush: what arrived since the one before

    async def _tick(self) -> None:
        try:
            await self.flush()
            if time.monotonic() - self._pruned_at >= self._settings.refresh_s:
                await self.prune()
        except STORE_ERRORS as exc:
            log.debug("could not record seen tenants: %s", type(exc).__name__)

    async def flush(self) -> int:
        """Write the tenants noted since the last flush; return how many rows were inserted or touched."""
        batch, self._new = self._new, []
        now = time.monotonic()
        if (
            now - self._refreshed_at >= self._settings.refresh_s
            or len(self._seen) > self._settings.max_tenants
        ):
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
                touched = _count(await conn.execute(_TOUCH, batch))
                inserted = 0
                if touched < len(batch):
                    inserted = _count(await conn.execute(_INSERT, batch, self._settings.max_tenants))
        except BaseException:
            self._seen.difference_update(batch)  # noted again by their next request
            raise
        self.not_inserted += len(batch) - touched - inserted
        self.written += touched + inserted
        return touched + inserted

    async def prune(self) -> int:
        """Delete the tenants not seen for `retention_s`; return how many."""
        self._pruned_at = time.monotonic()
        try:
            deleted = _count(await self._pool.execute(_PRUNE, self._settings.retention_s))
        except asyncpg.UndefinedTableError:  # nothing recorded yet
            return 0
        self.pruned += deleted
        return deleted


def _count(status: str) -> int:
    """The row count of a command tag (`UPDATE 3`, `INSERT 0 2`, `DELETE 1`)."""
    return int(status.rsplit(" ", 1)[-1])


async def count_seen_only(pool: asyncpg.Pool) -> int:
    """How many tenants seen in traffic have no phase row (they follow the default phase), archived ones
    left out."""
    try:
        count = await pool.fetchval(
            "SELECT count(*) FROM cutover_seen_tenant s"
            " WHERE NOT EXISTS (SELECT 1 FROM cutover_tenant_phase p WHERE p.tenant = s.tenant)"
            f" AND {not_archived('s.tenant')}"
        )
    except asyncpg.UndefinedTableError:  # no proxy has recorded a tenant yet
        return 0
    return int(count)
