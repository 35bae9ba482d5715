"""The coordinator's half of the authority-switch barrier (invariant 5).

A move that changes which side takes a tenant's writes first (e.g. shadow → live) must not let the new
authority take a write while a mirrored write toward it is still unapplied: the older mirrored write
would land after, and win. So:

1. record a barrier and NOTIFY every proxy to hold the tenant's writes;
2. wait until every live proxy confirmed (no write of the tenant in flight, none in its spool) and the
   buffer holds no intent of the tenant toward the side about to become authoritative;
3. flip the phase and release in one transaction (the phase notification arrives first), or, when the
   bound passes first, release without flipping and report why (the admin API answers 409).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable

import asyncpg

from proxy.control.phase_store import PhaseStore, TenantPhase
from proxy.control.presence import LIVE_WITHIN_S
from proxy.control.schema import BARRIER_CHANNEL
from routing.phases import Phase, Side, check_move

_POLL_S = 0.01


class BarrierAbortedError(Exception):
    def __init__(self, tenant: str, reason: str) -> None:
        self.tenant = tenant
        self.reason = reason
        super().__init__(f"authority switch of tenant {tenant!r} aborted: {reason}; it stays where it was")


def changes_authority(current: Phase, requested: Phase) -> bool:
    return current.authoritative is not requested.authoritative


async def switch_authority(
    store: PhaseStore,
    tenant: str,
    requested: Phase,
    *,
    actor: str,
    reason: str,
    expected_version: int | None,
    force: bool,
    hold_timeout_s: float,
    pending_toward: Callable[[str, Side], Awaitable[int]],
) -> TenantPhase:
    pool = store.pool
    current = await store.get(tenant)
    check_move(tenant, current.phase, requested, force=force)  # refuse early: no hold for a bad move
    new_authority = requested.authoritative
    async with pool.acquire() as conn:
        barrier_id = await conn.fetchval(
            "INSERT INTO cutover_barrier (tenant, from_phase, to_phase, from_version) VALUES ($1, $2, $3, $4)"
            " RETURNING id",
            tenant,
            current.phase.value,
            requested.value,
            current.version,
        )
        await _notify(conn, "hold", barrier_id, tenant)
    deadline = time.monotonic() + hold_timeout_s
    waiting_for = "nothing"
    try:
        while True:
            missing = await _unconfirmed(pool, barrier_id)
            pending = await pending_toward(tenant, new_authority) if not missing else -1
            if not missing and pending == 0:
                break
            if time.monotonic() > deadline:
                waiting_for = (
                    f"{len(missing)} proxy(ies) did not confirm the hold ({', '.join(sorted(missing)[:5])})"
                    if missing
                    else f"{pending} intents toward {new_authority} were still pending"
                )
                raise BarrierAbortedError(tenant, f"{waiting_for} after {hold_timeout_s:g} s")
            await asyncio.sleep(_POLL_S)
        async with pool.acquire() as conn, conn.transaction():
            updated = await store.set_phase_in(
                conn,
                tenant,
                requested,
                actor=actor,
                reason=reason,
                expected_version=current.version if expected_version is None else expected_version,
                force=force,
            )
            await _finish(conn, barrier_id, tenant, "switched")
        return updated
    except BaseException as exc:
        outcome = "aborted" if isinstance(exc, BarrierAbortedError) else f"failed: {type(exc).__name__}"
        async with pool.acquire() as conn:
            await _finish(conn, barrier_id, tenant, outcome)
        raise


async def _unconfirmed(pool: asyncpg.Pool, barrier_id: int) -> set[str]:
    rows = await pool.fetch(
        "SELECT p.proxy_id FROM cutover_proxy p"
        " LEFT JOIN cutover_barrier_ack a ON a.barrier_id = $1 AND a.proxy_id = p.proxy_id"
        " WHERE p.heartbeat_at > now() - make_interval(secs => $2) AND a.proxy_id IS NULL",
        barrier_id,
        LIVE_WITHIN_S,
    )
    return {row["proxy_id"] for row in rows}


async def _finish(conn: asyncpg.Connection, barrier_id: int, tenant: str, outcome: str) -> None:
    await conn.execute(
        "UPDATE cutover_barrier SET finished_at = now(), outcome = $2 WHERE id = $1", barrier_id, outcome
    )
    await _notify(conn, "release", barrier_id, tenant)


async def _notify(conn: asyncpg.Connection, action: str, barrier_id: int, tenant: str) -> None:
    payload = json.dumps({"action": action, "barrier": barrier_id, "tenant": tenant})
    await conn.execute("SELECT pg_notify($1, $2)", BARRIER_CHANNEL, payload)
