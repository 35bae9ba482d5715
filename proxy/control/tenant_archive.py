"""Archived tenants: out of sight, never out of the record.

A tenant that is done with (a load test's, a customer gone, a typo that made a row) is archived: it no
longer shows in `GET /tenants` (so fleet moves never select it), nor on the status page, and its phase
cannot change until it is unarchived. Nothing is deleted: its phase row, its phase audit, its
divergences and verify reports stay, and the data plane serves it by its phase as before. Archiving and
unarchiving are audited (`cutover_tenant_archive_audit`: who, when, which, why).

`ARCHIVED` is an SQL condition for the queries that list tenants: `NOT EXISTS` against the primary key,
one index probe per listed row.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

ARCHIVE_SCHEMA = """
CREATE TABLE IF NOT EXISTS cutover_tenant_archive (
    tenant       text PRIMARY KEY,
    archived_at  timestamptz NOT NULL DEFAULT now(),
    archived_by  text NOT NULL,
    reason       text NOT NULL
);
CREATE TABLE IF NOT EXISTS cutover_tenant_archive_audit (
    id      bigserial PRIMARY KEY,
    tenant  text NOT NULL,
    at      timestamptz NOT NULL DEFAULT now(),
    actor   text NOT NULL,
    action  text NOT NULL,  -- archive | unarchive
    reason  text NOT NULL
);
CREATE INDEX IF NOT EXISTS cutover_tenant_archive_audit_tenant ON cutover_tenant_archive_audit (tenant, id);
"""


def not_archived(column: str) -> str:
    """SQL: the tenant in `column` is not archived."""
    return f"NOT EXISTS (SELECT 1 FROM cutover_tenant_archive a WHERE a.tenant = {column})"


_KNOWN = """
SELECT EXISTS (SELECT 1 FROM cutover_tenant_phase WHERE tenant = $1)
    OR EXISTS (SELECT 1 FROM cutover_seen_tenant WHERE tenant = $1)
"""
_KNOWN_WITHOUT_SEEN = "SELECT EXISTS (SELECT 1 FROM cutover_tenant_phase WHERE tenant = $1)"


async def is_known(pool: asyncpg.Pool, tenant: str) -> bool:
    """A phase row, or seen in traffic: what `GET /tenants` lists (archived or not)."""
    try:
        return bool(await pool.fetchval(_KNOWN, tenant))
    except asyncpg.UndefinedTableError:  # no proxy has recorded a tenant from traffic yet
        return bool(await pool.fetchval(_KNOWN_WITHOUT_SEEN, tenant))


async def archived(pool: asyncpg.Pool, tenant: str) -> dict[str, Any] | None:
    row = await pool.fetchrow("SELECT * FROM cutover_tenant_archive WHERE tenant = $1", tenant)
    return None if row is None else _entry(row)


async def set_archived(
    pool: asyncpg.Pool, tenant: str, *, archive: bool, actor: str, reason: str
) -> tuple[bool, int | None]:
    """Archive or unarchive; (whether anything changed, the audit entry's id). Doing it twice changes
    nothing and writes no audit entry."""
    async with pool.acquire() as conn, conn.transaction():
        if archive:
            changed = await conn.fetchval(
                "INSERT INTO cutover_tenant_archive (tenant, archived_by, reason) VALUES ($1, $2, $3)"
                " ON CONFLICT (tenant) DO NOTHING RETURNING true",
                tenant,
                actor,
                reason,
            )
        else:
            changed = await conn.fetchval(
                "DELETE FROM cutover_tenant_archive WHERE tenant = $1 RETURNING true", tenant
            )
        if not changed:
            return False, None
        audit_id = await conn.fetchval(
            "INSERT INTO cutover_tenant_archive_audit (tenant, actor, action, reason) VALUES ($1, $2, $3, $4)"
            " RETURNING id",
            tenant,
            actor,
            "archive" if archive else "unarchive",
            reason,
        )
        return True, int(audit_id)


async def list_archived(pool: asyncpg.Pool, *, after: str | None, limit: int) -> list[dict[str, Any]]:
    """Archived tenants in tenant order, after `after`; `limit` rows at most."""
    if after is None:
        rows = await pool.fetch("SELECT * FROM cutover_tenant_archive ORDER BY tenant LIMIT $1", limit)
    else:
        rows = await pool.fetch(
            "SELECT * FROM cutover_tenant_archive WHERE tenant > $2 ORDER BY tenant LIMIT $1", limit, after
        )
    return [_entry(row) for row in rows]


async def archive_audit(pool: asyncpg.Pool, tenant: str, *, limit: int) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT * FROM cutover_tenant_archive_audit WHERE tenant = $1 ORDER BY id DESC LIMIT $2",
        tenant,
        limit,
    )
    return [
        {
            "id": row["id"],
            "tenant": row["tenant"],
            "at": _iso(row["at"]),
            "actor": row["actor"],
            "action": row["action"],
            "reason": row["reason"],
        }
        for row in rows
    ]


def _entry(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "tenant": row["tenant"],
        "archived_at": _iso(row["archived_at"]),
        "archived_by": row["archived_by"],
        "reason": row["reason"],
    }


def _iso(value: datetime) -> str:
    return value.isoformat()
