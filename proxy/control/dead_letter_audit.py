"""The audit log of operator actions on dead letters: who re-drove, resolved or discarded which intents of
which tenant, when and why.

A table of its own rather than the phase audit log: a phase change row names a move (from, to, version),
which an action on dead letters does not have; both are read the same way (`cutover audit`,
`cutover dead-letters audit`). A row is written in the transaction that queues the request for the
worker: if the request cannot be queued (Redis unavailable), no row says it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

DEAD_LETTER_AUDIT_SCHEMA = """
CREATE TABLE IF NOT EXISTS cutover_dead_letter_audit (
    id          bigserial PRIMARY KEY,
    tenant      text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,
    action      text NOT NULL,
    intent_ids  text[] NOT NULL,
    reason      text NOT NULL
);
CREATE INDEX IF NOT EXISTS cutover_dead_letter_audit_tenant ON cutover_dead_letter_audit (tenant, id);
"""


@dataclass(frozen=True, slots=True)
class DeadLetterAction:
    id: int
    tenant: str
    at: datetime
    actor: str
    action: str  # redrive | resolve | discard
    intent_ids: list[str]  # the tenant's dead letters the request named when it was made
    reason: str

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tenant": self.tenant,
            "at": self.at.isoformat(),
            "actor": self.actor,
            "action": self.action,
            "intent_ids": self.intent_ids,
            "reason": self.reason,
        }


async def record_action(
    conn: asyncpg.Connection, tenant: str, *, actor: str, action: str, intent_ids: list[str], reason: str
) -> int:
    audit_id: int = await conn.fetchval(
        "INSERT INTO cutover_dead_letter_audit (tenant, actor, action, intent_ids, reason)"
        " VALUES ($1, $2, $3, $4, $5) RETURNING id",
        tenant,
        actor,
        action,
        intent_ids,
        reason,
    )
    return audit_id


async def list_actions(pool: asyncpg.Pool, tenant: str | None, *, limit: int) -> list[DeadLetterAction]:
    rows = await pool.fetch(
        "SELECT * FROM cutover_dead_letter_audit WHERE $1::text IS NULL OR tenant = $1"
        " ORDER BY id DESC LIMIT $2",
        tenant,
        limit,
    )
    return [
        DeadLetterAction(
            row["id"],
            row["tenant"],
            row["at"],
            row["actor"],
            row["action"],
            list(row["intent_ids"]),
            row["reason"],
        )
        for row in rows
    ]
