"""One mover for every phase change, whoever asks (an operator through the admin API, a fleet move through
it, or the automatic rollback): `PhaseMover`, built once with what its guards read, takes a
`MoveRequest` and either moves the tenant or refuses with `MoveRefused`, whose status and code are the
admin API's answer. Every guard lives here, in this order:

1. `tenant_archived` (409): an archived tenant's phase is frozen until it is unarchived;
2. `verify_required` (422): into complete, a passing, current verify of every covered table;
3. `copy_unfinished` (422): past the phases that mirror to new, every REST resource copied;
4. `dead_letters` (422): forward past dual_write, no dead-lettered intent;
5. `phase_move_not_allowed` (422): the phase rules (`routing.phases.check_move`);
6. `applier_not_configured` (422): into a phase that mirrors writes toward a side the worker cannot apply
   to (its applier for that side is PostgreSQL, and `worker.postgres.<side>` is not configured): its
   intents could only be dead-lettered. This proxy's settings are read, which are the workers' when they
   share the configuration file, as they should;
7. `version_conflict` (409): not at `expected_version`;
8. `barrier_aborted` (409): a move that changes which side takes writes first goes through the
   authority-switch barrier (`proxy.control.barrier`); any other is a plain audited store update.

`force` skips 2-4 and allows the moves the rules allow only with it; it never skips 1 or 6. A dry run
(`MoveRequest.dry_run`) makes every check but the barrier and changes nothing. After a move this proxy's
cache has the new phase at once (the others get it through NOTIFY), and the change is logged once, here,
with who, from, to and why.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from backfill.copy_status import CopyReader, copy_verdict
from backfill.gate import check_complete_gate
from buffer_worker.inspect import BufferInspector
from config.settings import Settings
from proxy.control.barrier import BarrierAbortedError, changes_authority, switch_authority
from proxy.control.phase_store import PhaseStore, TenantPhase, VersionConflictError
from proxy.control.tenant_archive import archived
from proxy.dataplane.phase_cache import PhaseCache
from routing.phases import Phase, PhaseMoveError, check_move

log = logging.getLogger("cutover.phases")


class MoveRefused(Exception):
    """A phase change refused by one of the mover's guards: the admin API answers `status` with
    `{"error": code, "detail": detail, **fields}`."""

    def __init__(self, status: int, code: str, detail: str, **fields: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.fields = fields


@dataclass(frozen=True, slots=True)
class MoveRequest:
    tenant: str
    phase: Phase
    actor: str
    reason: str
    expected_version: int | None = None
    force: bool = False
    dry_run: bool = False
    log_level: int = logging.INFO  # of the line that records the change


class PhaseMover:
    def __init__(
        self, *, store: PhaseStore, cache: PhaseCache, settings: Settings, inspector: BufferInspector
    ) -> None:
        self._store = store
        self._cache = cache
        self._settings = settings
        self._inspector = inspector

    async def move(self, request: MoveRequest) -> TenantPhase:
        """The tenant's row after the move (before it, unchanged, for a dry run); `MoveRefused` when a
        guard refuses it."""
        await self._gates(request)
        tenant, phase = request.tenant, request.phase
        # Read again: the gates took time, and the rules and the barrier judge the phase as it is now.
        current = await self._store.get(tenant)
        try:
            self._check_rules(request, current.phase)
            if request.dry_run:
                if request.expected_version not in (None, current.version):
                    raise VersionConflictError(tenant, request.expected_version, current.version)
                return current
            if changes_authority(current.phase, phase):
                updated = await switch_authority(
                    self._store,
                    tenant,
                    phase,
                    actor=request.actor,
                    reason=request.reason,
                    expected_version=request.expected_version,
                    force=request.force,
                    hold_timeout_s=self._settings.barrier.hold_timeout_s,
                    pending_toward=self._inspector.pending,
                )
            else:
                updated = await self._store.set_phase(
                    tenant,
                    phase,
                    actor=request.actor,
                    reason=request.reason,
                    expected_version=request.expected_version,
                    force=request.force,
                )
        except PhaseMoveError as exc:
            raise MoveRefused(
                422,
                "phase_move_not_allowed",
                str(exc),
                current=exc.current.value,
                allowed=[p.value for p in exc.allowed],
            ) from exc
        except VersionConflictError as exc:
            raise MoveRefused(409, "version_conflict", str(exc), current_version=exc.actual) from exc
        except BarrierAbortedError as exc:
            raise MoveRefused(409, "barrier_aborted", str(exc), reason=exc.reason) from exc
        self._cache.apply(updated.tenant, updated.phase, updated.version)
        self._log(request, current.phase, updated)
        return updated

    async def _gates(self, request: MoveRequest) -> None:
        """The guards that read more than the phase row: the archive, the data gates, dead letters."""
        tenant, phase = request.tenant, request.phase
        pool = self._store.pool
        if (archive := await archived(pool, tenant)) is not None:
            raise MoveRefused(
                409,
                "tenant_archived",
                f"tenant {tenant!r} is archived ({archive['reason']}); unarchive it before moving it",
                archived_by=archive["archived_by"],
            )
        if request.force:
            return
        row = await self._store.get(tenant)
        current = row.phase
        if phase is Phase.COMPLETE:
            async with pool.acquire() as conn:
                verdict = await check_complete_gate(
                    conn, self._settings.data, tenant, phase_changed_at=row.updated_at, now=datetime.now(UTC)
                )
            if not verdict.passed:
                raise MoveRefused(422, "verify_required", verdict.describe(tenant), reports=verdict.problems)
        if phase.rank >= Phase.LIVE.rank > current.rank:
            await self._require_copied(tenant)
        if phase.rank > max(current.rank, Phase.DUAL_WRITE.rank):
            dead = await self._inspector.dead_letter_count(tenant)
            if dead:
                raise MoveRefused(
                    422,
                    "dead_letters",
                    f"tenant {tenant!r} has {dead} dead-lettered intents; inspect or re-drive them"
                    " before moving past dual_write (or use force)",
                    dead_letters=dead,
                )

    async def _require_copied(self, tenant: str) -> None:
        """Every configured REST resource copied (and not stale), unless the gate is off
        (`data.gate.require_copy`): the copy verdict the health view shows too
        (`backfill.copy_status.copy_verdict`)."""
        if not self._settings.data.rest.resources:
            return  # nothing the gate waits for: no read of the store
        async with self._store.pool.acquire() as conn:
            verdict = await copy_verdict(CopyReader(self._settings, self._inspector.client), conn, tenant)
        if verdict.refuses:
            raise MoveRefused(422, "copy_unfinished", verdict.detail, resources=verdict.resources)

    def _check_rules(self, request: MoveRequest, current: Phase) -> None:
        """The phase rules first (a move they refuse is named as such), then the mirror's applier."""
        tenant, phase = request.tenant, request.phase
        check_move(tenant, current, phase, force=request.force)
        if phase.mirrors:
            side = phase.authoritative.other
            setting = self._settings.worker.missing_for(side)
            if setting is not None:
                raise MoveRefused(
                    422,
                    "applier_not_configured",
                    f"tenant {tenant!r} cannot move to {phase.value}: its writes would be mirrored to"
                    f" {side}, and the worker has no applier toward {side} ({setting} is not configured)",
                    setting=setting,
                    side=side.value,
                )

    def _log(self, request: MoveRequest, current: Phase, updated: TenantPhase) -> None:
        log.log(
            request.log_level,
            "phase of %r changed by %s: %s -> %s (version %d): %s",
            request.tenant,
            request.actor,
            current.value,
            updated.phase.value,
            updated.version,
            request.reason,
            extra={
                "tenant": request.tenant,
                "actor": request.actor,
                "from_phase": current.value,
                "to_phase": updated.phase.value,
                "version": updated.version,
                "forced": request.force,
                "reason": request.reason,
            },
        )
