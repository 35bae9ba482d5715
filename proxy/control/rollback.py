"""Automatic rollback: a tenant in `shadow` or `live` whose comparisons go bad is moved back one step.

Every shadow process adds its counts per second to `cutover_shadow_window` (`proxy.shadow.tally`), so
the window covers every proxy. One proxy at a time evaluates it: the one holding a PostgreSQL advisory lock
(taken by every proxy whose policy enables rollback, held on a dedicated connection, released by a policy
that disables it or by the proxy's end). Every `check_interval_s` it sums, per tenant, the comparisons made
in the tenant's current phase within the last `window_s` seconds and since its last phase change (a
rollback starts a new window: the figures that caused it do not count against the phase it lands in).

With rollback off, no proxy reads the window, but the shadow processes still write it: every proxy then
deletes its rows older than twice `window_s`, about once a minute, as the evaluating proxy does.

`decide` is the pure rule; the move goes through `proxy.control.phase_moves.PhaseMover`, the same guarded and
audited path as an operator's (actor `auto`, the figures in the reason), so live → shadow passes the
authority-switch barrier and an archived tenant is not moved. A move refused because the tenant changed
meanwhile is left alone; a barrier that aborts is tried again at the next check while the figures still
say so.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass

import asyncpg

from common.store_errors import STORE_ERRORS
from common.tasks import cancel_and_wait
from config.divergence import DivergencePolicy, RollbackPolicy
from proxy.control.phase_moves import MoveRefused, MoveRequest, PhaseMover
from proxy.control.phase_store import AUTO_ACTOR, PhaseStore
from proxy.dataplane.stats import DataPlaneStats
from routing.phases import Phase

log = logging.getLogger("cutover.rollback")
ACTOR = AUTO_ACTOR  # counted as automatic by the phase-change metrics
_LOCK = 0x6375_746F_7665_7201  # any fixed 64-bit number, distinct from the schema lock
_BACK = {Phase.LIVE: Phase.SHADOW, Phase.SHADOW: Phase.DUAL_WRITE}
_PRUNE_WINDOW = "DELETE FROM cutover_shadow_window WHERE at < now() - make_interval(secs => $1)"
_PRUNE_WHILE_OFF_S = 60.0
# Refusals that say the tenant is not where the figures were read, or not to be moved: not a fault.
_LEFT_ALONE = frozenset({"version_conflict", "phase_move_not_allowed", "tenant_archived"})


@dataclass(frozen=True, slots=True)
class WindowFigures:
    tenant: str
    phase: Phase
    version: int
    compared: int
    answered: int
    divergent: int
    new_errors: int


@dataclass(frozen=True, slots=True)
class Rollback:
    tenant: str
    from_phase: Phase
    to_phase: Phase
    version: int
    reason: str


def decide(figures: WindowFigures, policy: RollbackPolicy) -> Rollback | None:
    """The rollback `figures` call for under `policy`, if any."""
    target = _BACK.get(figures.phase)
    if target is None or not policy.enabled or figures.tenant in policy.disabled_tenants:
        return None
    reasons = []
    if figures.answered >= policy.min_samples:
        rate = figures.divergent / figures.answered
        if rate > policy.max_divergence_rate:
            reasons.append(
                f"divergence rate {rate:.1%} ({figures.divergent} of {figures.answered} answered comparisons)"
                f" > {policy.max_divergence_rate:.1%}"
            )
    if figures.compared >= policy.min_samples:
        rate = figures.new_errors / figures.compared
        if rate > policy.max_new_error_rate:
            reasons.append(
                f"new-side error rate {rate:.1%} ({figures.new_errors} of {figures.compared} comparisons)"
                f" > {policy.max_new_error_rate:.1%}"
            )
    if not reasons:
        return None
    where = f"over the last {policy.window_s:g} s in {figures.phase.value}"
    reason = f"automatic rollback: {'; '.join(reasons)} {where}"
    return Rollback(figures.tenant, figures.phase, target, figures.version, reason)


async def window_figures(
    conn: asyncpg.Connection | asyncpg.Pool, *, window_s: float, default_phase: Phase
) -> list[WindowFigures]:
    rows = await conn.fetch(
        "SELECT w.tenant, w.phase, COALESCE(p.version, 0) AS version, sum(w.compared) AS compared,"
        " sum(w.answered) AS answered, sum(w.divergent) AS divergent, sum(w.new_errors) AS new_errors"
        " FROM cutover_shadow_window w LEFT JOIN cutover_tenant_phase p ON p.tenant = w.tenant"
        " WHERE w.tenant <> '' AND w.at > now() - make_interval(secs => $1)"
        " AND w.phase = COALESCE(p.phase, $2) AND w.phase IN ('shadow', 'live')"
        " AND (p.updated_at IS NULL OR w.at >= date_trunc('second', p.updated_at))"
        " GROUP BY w.tenant, w.phase, p.version",
        window_s,
        default_phase.value,
    )
    return [
        WindowFigures(
            r["tenant"],
            Phase(r["phase"]),
            r["version"],
            r["compared"],
            r["answered"],
            r["divergent"],
            r["new_errors"],
        )
        for r in rows
    ]


class RollbackMonitor:
    def __init__(
        self,
        *,
        dsn: str,
        store: PhaseStore,
        mover: PhaseMover,
        policy: Callable[[], DivergencePolicy],
        stats: DataPlaneStats,
    ) -> None:
        self._dsn = dsn
        self._store = store
        self._mover = mover
        self._policy = policy
        self._stats = stats
        self._conn: asyncpg.Connection | None = None
        self._leading = False
        self._task: asyncio.Task[None] | None = None
        self._pruned_at = float("-inf")

    @property
    def leading(self) -> bool:
        return self._leading and self._conn is not None and not self._conn.is_closed()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="rollback-monitor")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        await self._release()

    async def _run(self) -> None:
        while True:
            policy = self._policy().rollback
            try:
                if policy.enabled and await self._lead():
                    await self.check_once(policy)
                elif not policy.enabled:
                    await self._release()
                    await self._prune_while_off(policy)
            except STORE_ERRORS as exc:
                log.warning("rollback check failed (%s); retrying", type(exc).__name__)
                await self._release()
            await asyncio.sleep(policy.check_interval_s)

    async def _lead(self) -> bool:
        """Whether this proxy holds the lock (trying to take it, on one kept connection, if not)."""
        if self._conn is None or self._conn.is_closed():
            self._leading = False
            self._conn = await asyncpg.connect(self._dsn, timeout=5)
        if not self._leading:
            self._leading = bool(await self._conn.fetchval("SELECT pg_try_advisory_lock($1)", _LOCK))
            if self._leading:
                log.info("this proxy now evaluates automatic rollbacks")
        return self._leading

    async def _release(self) -> None:
        self._leading = False
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            with suppress(*STORE_ERRORS):
                await conn.close()  # the session lock goes with the session

    async def check_once(self, policy: RollbackPolicy) -> list[Rollback]:
        """Evaluate every tenant's window once and roll back those over a threshold; what was done."""
        assert self._conn is not None
        figures = await window_figures(
            self._conn, window_s=policy.window_s, default_phase=self._store.default_phase
        )
        done = []
        for figure in figures:
            rollback = decide(figure, policy)
            if rollback is not None and await self._apply(rollback):
                done.append(rollback)
        await self._conn.execute(_PRUNE_WINDOW, 2 * policy.window_s)
        return done

    async def _prune_while_off(self, policy: RollbackPolicy) -> None:
        """Rollback off, nobody evaluates the window, yet every shadow process still adds a row per tenant
        and second of shadow traffic: delete what the window would not read, about once a minute."""
        now = time.monotonic()
        if now - self._pruned_at >= _PRUNE_WHILE_OFF_S:
            self._pruned_at = now
            await self._store.pool.execute(_PRUNE_WINDOW, 2 * policy.window_s)

    async def _apply(self, rollback: Rollback) -> bool:
        request = MoveRequest(
            rollback.tenant,
            rollback.to_phase,
            actor=ACTOR,
            reason=rollback.reason,
            expected_version=rollback.version,
            log_level=logging.WARNING,  # logged there, once, with the figures in the reason
        )
        try:
            await self._mover.move(request)
        except MoveRefused as exc:
            tenant = rollback.tenant
            if exc.code in _LEFT_ALONE:
                log.info("no automatic rollback of %r: %s", tenant, exc.detail)
            elif exc.code == "barrier_aborted":
                log.warning("automatic rollback of %r not done yet: %s", tenant, exc.fields["reason"])
            else:
                log.error("no automatic rollback of %r: %s", tenant, exc.detail)
            return False
        self._stats.auto_rollbacks[rollback.tenant] += 1
        return True
