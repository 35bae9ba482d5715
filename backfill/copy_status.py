"""What is known of a tenant's REST copies, per resource: the copy's checkpoint (`backfill.rest_checkpoint`:
records listed, copied, left to mirroring, progress, rate, ETA) joined with what the worker counted while
the copy was open (`buffer_worker.copy_marks`: records mirroring wrote, intents settled by state transfer,
deletes of records new did not hold). One shape for the admin API (`GET /tenants/{tenant}/copy`,
`GET /copy`), the CLI (`cutover backfill status`), the status page and the `live` gate.

A copy is *unfinished* for the gate when it is not done, or was started before mirroring last began for
the tenant (it left `legacy` again after a rollback): writes made while nothing was mirrored are in no
copy.

`copy_verdict` is the one answer to "is the tenant's data copied to new?", for the `live` gate (which
refuses on `blocked`) and for the health view's moves alike:

    ok          every REST resource copied, and no table whose copy cannot be read
    blocked     a REST resource's copy unfinished, and the gate on (`data.gate.require_copy`)
    unfinished  the same with the gate off: said, not refused
    unknown     REST resources copied (or none), but tables: their backfill keeps its checkpoints in
                new's database, which the admin API does not read
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from backfill import rest_checkpoint
from backfill.rest_checkpoint import CopyState
from buffer_worker.copy_marks import WORKER_HOWS, CopyFacts, read_facts
from config.settings import Settings

NOT_STARTED = "not_started"


@dataclass(frozen=True, slots=True)
class CopyReader:
    """Reads copies from the control-plane database and Redis, for `settings`' resources."""

    settings: Settings
    redis: aioredis.Redis

    async def tenant(self, conn: asyncpg.Connection, tenant: str) -> dict[str, Any]:
        states = await rest_checkpoint.of_tenant(conn, tenant)
        began = await rest_checkpoint.mirroring_began(conn, tenant)
        rows = await self._rows(tenant, states, began)
        return {"tenant": tenant, "mirroring_began_at": _iso(began), "resources": rows}

    async def page(self, conn: asyncpg.Connection, *, after: str | None, limit: int) -> list[dict[str, Any]]:
        """Tenants with a copy, in tenant order, after `after`: at most `limit + 1` of them."""
        states = await rest_checkpoint.page(conn, after=after, limit=limit + 1)
        by_tenant: dict[str, list[CopyState]] = {}
        for state in states:
            by_tenant.setdefault(state.tenant, []).append(state)
        found = []
        for tenant, own in by_tenant.items():
            began = await rest_checkpoint.mirroring_began(conn, tenant)
            rows = await self._rows(tenant, own, began)
            found.append({"tenant": tenant, "mirroring_began_at": _iso(began), "resources": rows})
        return found

    async def _rows(
        self, tenant: str, states: list[CopyState], began: datetime | None
    ) -> list[dict[str, Any]]:
        by_name = {state.resource: state for state in states}
        names = [r.name for r in self.settings.data.rest.resources]
        names += sorted(set(by_name) - set(names))  # copies of resources no longer configured
        buffer = self.settings.buffer
        facts = await read_facts(
            self.redis,
            prefix=buffer.key_prefix,
            partitions=buffer.partitions,
            copies=[(tenant, name) for name in names],
        )
        return [_row(name, by_name.get(name), facts.get((tenant, name)), began) for name in names]


def _row(
    name: str, state: CopyState | None, facts: CopyFacts | None, began: datetime | None
) -> dict[str, Any]:
    counts = facts.counts if facts is not None else dict.fromkeys(WORKER_HOWS, 0)
    if state is None:
        row: dict[str, Any] = {"resource": name, "status": NOT_STARTED, "done": False}
    else:
        row = state.as_json()
    stale = state is not None and began is not None and state.started_at <= began
    return {
        **row,
        "stale": stale,  # started before mirroring last began: missed what was written meanwhile
        "open": bool(facts is not None and facts.open),  # the worker marks its records
        "items_mirrored": counts["mirrored"],
        "intents_mirrored": counts["intents"],
        "intents_transferred": counts["transferred"],
        "deletes_absent": counts["delete_absent"],
    }


OK, BLOCKED, UNFINISHED, UNKNOWN = "ok", "blocked", "unfinished", "unknown"


@dataclass(frozen=True, slots=True)
class CopyVerdict:
    state: str  # OK, BLOCKED, UNFINISHED or UNKNOWN (see the module's docstring)
    detail: str
    resources: list[dict[str, Any]]  # the REST resources whose copy is unfinished (`unfinished`)

    @property
    def refuses(self) -> bool:
        """Whether the `live` gate refuses the move (422 `copy_unfinished`)."""
        return self.state == BLOCKED

    def as_json(self) -> dict[str, Any]:
        return {"state": self.state, "detail": self.detail, "resources": self.resources}


async def copy_verdict(reader: CopyReader, conn: asyncpg.Connection, tenant: str) -> CopyVerdict:
    """Whether `tenant`'s data is copied to new, as far as the control plane can know."""
    data = reader.settings.data
    configured = [r.name for r in data.rest.resources]
    problems: list[dict[str, Any]] = []
    if configured:
        problems = unfinished((await reader.tenant(conn, tenant))["resources"], configured)
    if problems:
        detail = describe_unfinished(tenant, problems)
        if data.gate.require_copy:
            return CopyVerdict(BLOCKED, detail, problems)
        return CopyVerdict(UNFINISHED, f"{detail}; data.gate.require_copy is off: not refused", problems)
    if data.tables:
        tables = ", ".join(t.name for t in data.tables)
        return CopyVerdict(
            UNKNOWN,
            f"tables ({tables}) keep their copy's checkpoints in new's database, which the admin API does"
            f" not read: `cutover backfill --tenant {tenant} --dry-run` shows what is left to copy"
            + (" (every REST resource is copied)" if configured else ""),
            [],
        )
    if not configured:
        return CopyVerdict(OK, "nothing to copy: no data.tables or data.rest.resources configured", [])
    return CopyVerdict(OK, f"every REST resource is copied ({', '.join(configured)})", [])


def unfinished(rows: list[dict[str, Any]], configured: list[str]) -> list[dict[str, Any]]:
    """The copies of `configured` resources the `live` gate waits for: not done, or stale."""
    return [
        {
            "resource": r["resource"],
            "status": "stale" if r["done"] and r["stale"] else r["status"],
            "items_listed": r.get("items_listed", 0),
            "total": r.get("total"),
        }
        for r in rows
        if r["resource"] in configured and (not r["done"] or r["stale"])
    ]


def describe_unfinished(tenant: str, problems: list[dict[str, Any]]) -> str:
    parts = []
    for p in problems:
        if p["status"] == NOT_STARTED:
            parts.append(f"{p['resource']}: not copied (run `cutover backfill --tenant {tenant}`)")
        elif p["status"] == "stale":
            parts.append(f"{p['resource']}: copied before mirroring last began (copy again with --restart)")
        else:
            of = f"/{p['total']:,}" if p.get("total") else ""
            parts.append(f"{p['resource']}: {p['status']} at {p['items_listed']:,}{of} records")
    return (
        f"tenant {tenant!r} has REST resources whose copy is unfinished; new would serve without their"
        " records: " + "; ".join(parts) + " (or use force)"
    )


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
