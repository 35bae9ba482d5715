"""One path for every phase change, whoever asks (an operator through the admin API, or the automatic
rollback): a move that changes which side takes writes first goes through the authority-switch barrier
(`proxy.barrier`), any other is a plain audited store update; either way this proxy's cache gets the new
phase at once (the others through NOTIFY).

A move into a phase that mirrors writes toward a side the worker cannot apply to (its applier for that
side is PostgreSQL, and `worker.postgres.<side>` is not configured) is refused, `force` or not: its
intents could only be dead-lettered. The check reads this proxy's settings, which are the workers' when
they share the configuration file, as they should.

`check_phase_move` makes the same checks without moving (`PUT /tenants/{t}/phase` with `dry_run`, which
fleet moves send for every tenant before they move any). Every phase change is logged once, here, with
who, from, to and why.

Errors: the store's and the barrier's, unchanged (`VersionConflictError`, `PhaseMoveError`,
`BarrierAbortedError`), and `ApplierMissingError`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from proxy.barrier import changes_authority, switch_authority
from proxy.phase_cache import PhaseCache
from proxy.phase_store import PhaseStore, TenantPhase, VersionConflictError
from routing.phases import Phase, Side, check_move

log = logging.getLogger("cutover.phases")


class ApplierMissingError(Exception):
    def __init__(self, tenant: str, phase: Phase, side: Side, setting: str) -> None:
        self.tenant = tenant
        self.phase = phase
        self.side = side
        self.setting = setting
        super().__init__(
            f"tenant {tenant!r} cannot move to {phase.value}: its writes would be mirrored to {side},"
            f" and the worker has no applier toward {side} ({setting} is not configured)"
        )


async def move_phase(
    store: PhaseStore,
    cache: PhaseCache,
    tenant: str,
    phase: Phase,
    *,
    actor: str,
    reason: str,
    expected_version: int | None,
    force: bool,
    hold_timeout_s: float,
    pending_toward: Callable[[str, Side], Awaitable[int]],
    missing_applier: Callable[[Side], str | None],
    log_level: int = logging.INFO,
) -> TenantPhase:
    """`missing_applier(side)`: the setting the worker lacks to apply intents toward `side`, if any."""
    current = (await store.get(tenant)).phase
    _check(tenant, current, phase, force=force, missing_applier=missing_applier)
    if changes_authority(current, phase):
        updated = await switch_authority(
            store,
            tenant,
            phase,
            actor=actor,
            reason=reason,
            expected_version=expected_version,
            force=force,
            hold_timeout_s=hold_timeout_s,
            pending_toward=pending_toward,
        )
    else:
        updated = await store.set_phase(
            tenant, phase, actor=actor, reason=reason, expected_version=expected_version, force=force
        )
    cache.apply(updated.tenant, updated.phase, updated.version)
    log.log(
        log_level,
        "phase of %r changed by %s: %s -> %s (version %d): %s",
        tenant,
        actor,
        current.value,
        updated.phase.value,
        updated.version,
        reason,
        extra={
            "tenant": tenant,
            "actor": actor,
            "from_phase": current.value,
            "to_phase": updated.phase.value,
            "version": updated.version,
            "forced": force,
            "reason": reason,
        },
    )
    return updated


async def check_phase_move(
    store: PhaseStore,
    tenant: str,
    phase: Phase,
    *,
    expected_version: int | None,
    force: bool,
    missing_applier: Callable[[Side], str | None],
) -> TenantPhase:
    """The checks `move_phase` makes before it changes anything (version, rules, applier), and nothing
    else: the tenant's current row, or the error the move would raise. The barrier is not tried."""
    current = await store.get(tenant)
    if expected_version is not None and expected_version != current.version:
        raise VersionConflictError(tenant, expected_version, current.version)
    _check(tenant, current.phase, phase, force=force, missing_applier=missing_applier)
    return current


def _check(
    tenant: str, current: Phase, phase: Phase, *, force: bool, missing_applier: Callable[[Side], str | None]
) -> None:
    check_move(tenant, current, phase, force=force)  # a move the rules refuse is named as such first
    if phase.mirrors:
        mirror = phase.authoritative.other
        setting = missing_applier(mirror)
        if setting is not None:
            raise ApplierMissingError(tenant, phase, mirror, setting)
