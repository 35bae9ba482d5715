"""Durable tenant phases: versioned rows, an audit row per change in the same transaction, NOTIFY on commit.

Errors:
    PhaseStoreError
    ├── VersionConflictError   expected_version does not match the stored version (→ 409)
    └── (routing.PhaseMoveError is raised as is for a move the phase rules refuse → 422)
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from common.store_errors import STORE_ERRORS
from proxy.control.schema import PHASE_CHANNEL, ensure_schema
from routing.phases import Phase, check_move

log = logging.getLogger("cutover.phases")
# Actors of automatic phase changes (rules, not people) are named `auto` (the divergence engine's rollback)
# or `auto:<rule>`; metrics count them apart.
AUTO_ACTOR = "auto"


class PhaseStoreError(Exception):
    """Base class of the phase store's own errors."""


class VersionConflictError(PhaseStoreError):
    def __init__(self, tenant: str, expected: int, actual: int) -> None:
        self.tenant = tenant
        self.expected = expected
        self.actual = actual
        super().__init__(f"tenant {tenant!r} is at version {actual}, not the expected {expected}")


@dataclass(frozen=True, slots=True)
class TenantPhase:
    tenant: str
    phase: Phase
    version: int  # 0: no row yet, the tenant follows default_phase
    updated_at: datetime | None
    updated_by: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "phase": self.phase.value,
            "version": self.version,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
            "updated_by": self.updated_by,
        }


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    tenant: str
    at: datetime
    actor: str
    from_phase: Phase
    to_phase: Phase
    version: int
    forced: bool
    reason: str

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tenant": self.tenant,
            "at": self.at.isoformat(),
            "actor": self.actor,
            "from": self.from_phase.value,
            "to": self.to_phase.value,
            "version": self.version,
            "forced": self.forced,
            "reason": self.reason,
        }


def _tenant_phase(row: asyncpg.Record) -> TenantPhase:
    return TenantPhase(
        row["tenant"], Phase(row["phase"]), row["version"], row["updated_at"], row["updated_by"]
    )


class PhaseStore:
    def __init__(self, pool: asyncpg.Pool, *, default_phase: Phase) -> None:
        self._pool = pool
        self.default_phase = default_phase

    @classmethod
    async def connect(cls, dsn: str, *, default_phase: Phase, max_size: int = 4) -> PhaseStore:
        """A pool that connects lazily (min_size=0), so a process can start while PostgreSQL is down;
        the schema is ensured here when reachable, and by the phase cache whenever it (re)connects."""
        pool = await asyncpg.create_pool(dsn, min_size=0, max_size=max_size, timeout=5)
        try:
            async with pool.acquire() as conn:
                await ensure_schema(conn)
        except STORE_ERRORS as exc:
            log.warning("phase store unreachable at start (%s)", type(exc).__name__)
        return cls(pool, default_phase=default_phase)

    @property
    def pool(self) -> asyncpg.Pool:
        return self._pool

    async def close(self) -> None:
        await self._pool.close()

    async def list_all(self) -> list[TenantPhase]:
        rows = await self._pool.fetch("SELECT * FROM cutover_tenant_phase ORDER BY tenant")
        return [_tenant_phase(row) for row in rows]

    async def get(self, tenant: str) -> TenantPhase:
        row = await self._pool.fetchrow("SELECT * FROM cutover_tenant_phase WHERE tenant = $1", tenant)
        if row is None:
            return TenantPhase(tenant, self.default_phase, 0, None, None)
        return _tenant_phase(row)

    async def set_phase(
        self,
        tenant: str,
        phase: Phase,
        *,
        actor: str,
        reason: str,
        expected_version: int | None = None,
        force: bool = False,
    ) -> TenantPhase:
        """Move `tenant` to `phase` if the rules and `expected_version` allow; audit and notify atomically."""
        async with self._pool.acquire() as conn, conn.transaction():
            return await self.set_phase_in(
                conn,
                tenant,
                phase,
                actor=actor,
                reason=reason,
                expected_version=expected_version,
                force=force,
            )

    async def set_phase_in(
        self,
        conn: asyncpg.Connection,
        tenant: str,
        phase: Phase,
        *,
        actor: str,
        reason: str,
        expected_version: int | None = None,
        force: bool = False,
    ) -> TenantPhase:
        """`set_phase` inside the caller's transaction on `conn`."""
        # Materialise the row first so that concurrent first changes serialise on its row lock
        # (the insert is undone with the transaction if the move is refused).
        await conn.execute(
            "INSERT INTO cutover_tenant_phase (tenant, phase, version, updated_by) VALUES ($1, $2, 0, '')"
            " ON CONFLICT (tenant) DO NOTHING",
            tenant,
            self.default_phase.value,
        )
        row = await conn.fetchrow(
            "SELECT phase, version FROM cutover_tenant_phase WHERE tenant = $1 FOR UPDATE", tenant
        )
        assert row is not None  # inserted above, and rows are never deleted
        current, version = Phase(row["phase"]), int(row["version"])
        if expected_version is not None and expected_version != version:
            raise VersionConflictError(tenant, expected_version, version)
        check_move(tenant, current, phase, force=force)
        updated = await conn.fetchrow(
            "UPDATE cutover_tenant_phase SET phase = $2, version = version + 1, updated_at = now(),"
            " updated_by = $3 WHERE tenant = $1 RETURNING *",
            tenant,
            phase.value,
            actor,
        )
        assert updated is not None
        await conn.execute(
            "INSERT INTO cutover_phase_audit"
            " (tenant, actor, from_phase, to_phase, version, forced, reason)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7)",
            tenant,
            actor,
            current.value,
            phase.value,
            updated["version"],
            force,
            reason,
        )
        payload = json.dumps({"tenant": tenant, "phase": phase.value, "version": updated["version"]})
        await conn.execute("SELECT pg_notify($1, $2)", PHASE_CHANNEL, payload)
        return _tenant_phase(updated)

    async def change_counts(self) -> list[tuple[Phase, bool, int]]:
        """How many phase changes moved tenants into each phase: (to phase, automatic?, count).
        Automatic: the actor is `AUTO_ACTOR` or starts with `AUTO_ACTOR:` (a person's token name is not)."""
        rows = await self._pool.fetch(
            "SELECT to_phase, (actor = $1 OR starts_with(actor, $1 || ':')) AS auto, count(*) AS n"
            " FROM cutover_phase_audit GROUP BY 1, 2",
            AUTO_ACTOR,
        )
        return [(Phase(row["to_phase"]), bool(row["auto"]), int(row["n"])) for row in rows]

    async def audit(
        self, tenant: str | None = None, *, limit: int = 100, before_id: int | None = None
    ) -> list[AuditEntry]:
        """Newest first; `before_id`: only entries older than that one (the next page)."""
        # One statement per combination, so each plan can walk an index (PK, or (tenant, id)) backwards.
        conditions, args = [], []
        for condition, value in (("tenant = ${}", tenant), ("id < ${}", before_id)):
            if value is not None:
                args.append(value)
                conditions.append(condition.format(len(args)))
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        rows = await self._pool.fetch(
            f"SELECT * FROM cutover_phase_audit{where} ORDER BY id DESC LIMIT ${len(args) + 1}", *args, limit
        )
        return [
            AuditEntry(
                row["id"],
                row["tenant"],
                row["at"],
                row["actor"],
                Phase(row["from_phase"]),
                Phase(row["to_phase"]),
                row["version"],
                row["forced"],
                row["reason"],
            )
            for row in rows
        ]
