"""One path for every phase change, whoever asks (an operator through the admin API, or the automatic
rollback): a move that changes which side takes writes first goes through the authority-switch barrier
(`proxy.barrier`), any other is a plain audited store update; either way this proxy's cache gets the new
phase at once (the others through NOTIFY).

Errors are the store's and the barrier's, unchanged: `VersionConflictError`, `PhaseMoveError`,
`BarrierAbortedError`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from proxy.barrier import changes_authority, switch_authority
from proxy.phase_cache import PhaseCache
from proxy.phase_store import PhaseStore, TenantPhase
from routing.phases import Phase, Side


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
) -> TenantPhase:
    current = (await store.get(tenant)).phase
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
    return updated
