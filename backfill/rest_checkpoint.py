"""Checkpoints of the REST copy, one row per tenant and resource in the control-plane database (where the
admin API reads them: `GET /tenants/{tenant}/copy`, the `live` gate, the status page and the metrics).

A row says where the next page starts (`position`, `backfill.rest_pages`) and what the copy did so far.
It is advanced after a page's writes were all acknowledged by new, so a run killed at any point resumes
at the first page not wholly written: some records of that page may be written again (an upsert, or a
create answered "exists" and replaced, under the copy's claim), none is missed.

One run per tenant and resource at a time: a session advisory lock in the same database, which also
tells the admin API whether a copy is running (`pg_locks`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

_SCHEMA_LOCK = 0x6375_7405
_RUN_LOCK_NAMESPACE = 0x6375_7406

SCHEMA = """
CREATE TABLE IF NOT EXISTS cutover_rest_copy (
    tenant            text NOT NULL,
    resource          text NOT NULL,
    position          jsonb,             -- where the next page starts; NULL: at the first page
    done              boolean NOT NULL DEFAULT false,
    pages             bigint NOT NULL DEFAULT 0,
    items_listed      bigint NOT NULL DEFAULT 0,
    items_copied      bigint NOT NULL DEFAULT 0,    -- written to new by the copy
    items_skipped     bigint NOT NULL DEFAULT 0,    -- mirroring wrote them first: left to it
    items_without_id  bigint NOT NULL DEFAULT 0,
    pass_no           integer NOT NULL DEFAULT 0,   -- 0: the copy; 1 and up: sweeps
    pass_copied       bigint NOT NULL DEFAULT 0,    -- written by the current pass
    items_swept       bigint NOT NULL DEFAULT 0,    -- written by sweeps: missed by the first pass
    intents_seen      bigint NOT NULL DEFAULT 0,    -- mirrored intents counted when the pass began
    total             bigint,            -- the collection's size as old last announced it
    copy_seconds      double precision NOT NULL DEFAULT 0,   -- time spent copying, over all runs
    started_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    finished_at       timestamptz,
    PRIMARY KEY (tenant, resource)
)
"""


@dataclass(frozen=True, slots=True)
class CopyState:
    tenant: str
    resource: str
    position: dict[str, Any] | None
    done: bool
    pages: int
    items_listed: int
    items_copied: int
    items_skipped: int
    items_without_id: int
    pass_no: int
    pass_copied: int
    items_swept: int
    intents_seen: int
    total: int | None
    copy_seconds: float
    started_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    running: bool = False  # a run holds its lock now

    @property
    def rate_per_s(self) -> float | None:
        return self.items_listed / self.copy_seconds if self.copy_seconds > 0 else None

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the rate so far, when the collection's size is known."""
        rate = self.rate_per_s
        if self.done:
            return 0.0
        if self.total is None or not rate:
            return None
        return max(self.total - self.items_listed, 0) / rate

    @property
    def progress(self) -> float | None:
        """Share of the collection listed (its size moves while clients write: 1 once done)."""
        if self.done:
            return 1.0
        return round(min(self.items_listed / self.total, 1.0), 4) if self.total else None

    @property
    def status(self) -> str:
        return "done" if self.done else ("copying" if self.running else "stopped")

    def as_json(self) -> dict[str, Any]:
        rate, eta = self.rate_per_s, self.eta_s
        return {
            "resource": self.resource,
            "status": self.status,
            "done": self.done,
            "pages": self.pages,
            "items_listed": self.items_listed,
            "items_copied": self.items_copied,
            "items_skipped": self.items_skipped,
            "items_without_id": self.items_without_id,
            "sweeps": self.pass_no,
            "items_swept": self.items_swept,
            "total": self.total,
            "progress": self.progress,
            "rate_per_s": None if rate is None else round(rate, 1),
            "eta_s": None if eta is None else round(eta, 1),
            "position": self.position,
            "started_at": self.started_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
        }


async def ensure_schema(conn: asyncpg.Connection) -> None:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
        await conn.execute(SCHEMA)


def _lock_name(tenant: str, resource: str) -> str:
    return f"{tenant}/{resource}"


async def try_lock_run(conn: asyncpg.Connection, tenant: str, resource: str) -> bool:
    """One copy per (tenant, resource) at a time; the lock ends with `conn`'s session (or process)."""
    return bool(
        await conn.fetchval(
            "SELECT pg_try_advisory_lock($1, hashtext($2))",
            _RUN_LOCK_NAMESPACE,
            _lock_name(tenant, resource),
        )
    )


_SELECT = f"""
SELECT c.*, EXISTS (
    SELECT 1 FROM pg_locks l
    WHERE l.locktype = 'advisory' AND l.granted AND l.classid::bigint = {_RUN_LOCK_NAMESPACE}
      AND l.objid::bigint = (hashtext(c.tenant || '/' || c.resource)::bigint & 4294967295) AND l.objsubid = 2
) AS running
FROM cutover_rest_copy c
"""


def _state(row: asyncpg.Record) -> CopyState:
    position = row["position"]
    return CopyState(
        tenant=row["tenant"],
        resource=row["resource"],
        position=None if position is None else orjson.loads(position),
        done=row["done"],
        pages=row["pages"],
        items_listed=row["items_listed"],
        items_copied=row["items_copied"],
        items_skipped=row["items_skipped"],
        items_without_id=row["items_without_id"],
        pass_no=row["pass_no"],
        pass_copied=row["pass_copied"],
        items_swept=row["items_swept"],
        intents_seen=row["intents_seen"],
        total=row["total"],
        copy_seconds=row["copy_seconds"],
        started_at=row["started_at"],
        updated_at=row["updated_at"],
        finished_at=row["finished_at"],
        running=row["running"],
    )


async def load(conn: asyncpg.Connection, tenant: str, resource: str) -> CopyState | None:
    try:
        row = await conn.fetchrow(f"{_SELECT} WHERE c.tenant = $1 AND c.resource = $2", tenant, resource)
    except asyncpg.UndefinedTableError:
        return None
    return None if row is None else _state(row)


async def of_tenant(conn: asyncpg.Connection, tenant: str) -> list[CopyState]:
    try:
        rows = await conn.fetch(f"{_SELECT} WHERE c.tenant = $1 ORDER BY c.resource", tenant)
    except asyncpg.UndefinedTableError:
        return []
    return [_state(row) for row in rows]


async def page(conn: asyncpg.Connection, *, after: str | None, limit: int) -> list[CopyState]:
    """Copies of the tenants after `after`, in tenant order, for at most `limit` tenants."""
    try:
        rows = await conn.fetch(
            f"{_SELECT} WHERE c.tenant IN (SELECT DISTINCT tenant FROM cutover_rest_copy"
            " WHERE $1::text IS NULL OR tenant > $1 ORDER BY tenant LIMIT $2)"
            " ORDER BY c.tenant, c.resource",
            after,
            limit,
        )
    except asyncpg.UndefinedTableError:
        return []
    return [_state(row) for row in rows]


async def counts(conn: asyncpg.Connection) -> list[tuple[str, str, int, int]]:
    """(tenant, resource, items copied, items skipped) of every copy, for the metrics."""
    try:
        rows = await conn.fetch("SELECT tenant, resource, items_copied, items_skipped FROM cutover_rest_copy")
    except asyncpg.UndefinedTableError:
        return []
    return [(r["tenant"], r["resource"], r["items_copied"], r["items_skipped"]) for r in rows]


async def start(conn: asyncpg.Connection, tenant: str, resource: str, *, intents: int) -> CopyState:
    """A fresh checkpoint at the first page (replacing any earlier one); `intents`: the mirrored intents
    counted so far."""
    await conn.execute(
        "INSERT INTO cutover_rest_copy (tenant, resource, intents_seen) VALUES ($1, $2, $3)"
        " ON CONFLICT (tenant, resource)"
        " DO UPDATE SET position = NULL, done = false, pages = 0, items_listed = 0, items_copied = 0,"
        " items_skipped = 0, items_without_id = 0, pass_no = 0, pass_copied = 0, items_swept = 0,"
        " intents_seen = $3, total = NULL, copy_seconds = 0, started_at = now(),"
        " updated_at = now(), finished_at = NULL",
        tenant,
        resource,
        intents,
    )
    state = await load(conn, tenant, resource)
    assert state is not None
    return state


@dataclass(frozen=True, slots=True)
class PageDone:
    """One page wholly written (or skipped): what to add to the checkpoint."""

    next_position: dict[str, Any] | None  # None: that was the pass's last page
    listed: int
    copied: int
    skipped: int
    without_id: int
    total: int | None
    seconds: float
    sweep: bool = False  # a page of a sweep: its records were listed (and counted) by the first pass
    again: bool = False  # a page read back after a boundary check (`rest_pages`): counted as listed once
    end: str | None = None  # the pass's last page: "pass" (a sweep follows) or "done"
    intents: int = 0  # at the end of a pass: the mirrored intents counted (the next pass compares)


async def advance(conn: asyncpg.Connection, tenant: str, resource: str, done: PageDone) -> None:
    await conn.execute(
        "UPDATE cutover_rest_copy SET position = $3::jsonb, done = $4, pages = pages + 1,"
        " items_listed = items_listed + $5, items_copied = items_copied + $6,"
        " items_skipped = items_skipped + $7, items_without_id = items_without_id + $8,"
        " total = coalesce($9, total), copy_seconds = copy_seconds + $10,"
        " pass_no = pass_no + $11::int,"
        " pass_copied = CASE WHEN $11::int = 1 THEN 0 ELSE pass_copied + $6 END,"
        " items_swept = items_swept + $12,"
        " intents_seen = CASE WHEN $11::int = 1 THEN $13 ELSE intents_seen END, updated_at = now(),"
        " finished_at = CASE WHEN $4 THEN now() END WHERE tenant = $1 AND resource = $2",
        tenant,
        resource,
        None if done.end is not None else orjson.dumps(done.next_position).decode(),
        done.end == "done",
        0 if done.sweep or done.again else done.listed,
        done.copied,
        0 if done.sweep or done.again else done.skipped,
        0 if done.sweep or done.again else done.without_id,
        done.total,
        done.seconds,
        1 if done.end == "pass" else 0,
        done.copied if done.sweep else 0,
        done.intents,
    )


async def mirroring_began(conn: asyncpg.Connection, tenant: str) -> datetime | None:
    """When the tenant last left `legacy` (mirroring began): a copy started before then missed writes
    made while it was not mirrored. None when it never did (a tenant following a mirroring default)."""
    try:
        value: datetime | None = await conn.fetchval(
            "SELECT max(at) FROM cutover_phase_audit WHERE tenant = $1 AND from_phase = 'legacy'", tenant
        )
    except asyncpg.UndefinedTableError:
        return None
    return value
