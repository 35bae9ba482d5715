"""The tenant's phase, read from the phase store's table in the control-plane database (written only by
the admin API; the backfill reads it and never changes it)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from backfill.errors import PhaseRefusedError
from routing.phases import Phase, Side

# The old side is authoritative and every write since dual_write is mirrored to new: the rows the copy
# misses reach new through the buffer. From live on, new takes writes first, and copying old rows over
# it could undo them (single rows are repaired from new then: see `repair_source`).
BACKFILL_PHASES = (Phase.DUAL_WRITE, Phase.SHADOW)


@dataclass(frozen=True, slots=True)
class PhaseState:
    phase: Phase
    version: int  # 0: no row, the tenant follows default_phase
    changed_at: datetime | None


async def read_phase(conn: asyncpg.Connection, tenant: str, default: Phase) -> PhaseState:
    try:
        row = await conn.fetchrow(
            "SELECT phase, version, updated_at FROM cutover_tenant_phase WHERE tenant = $1", tenant
        )
    except asyncpg.UndefinedTableError:  # no proxy has ever started against this database
        row = None
    if row is None:
        return PhaseState(default, 0, None)
    return PhaseState(Phase(row["phase"]), row["version"], row["updated_at"])


def check_backfill_allowed(tenant: str, state: PhaseState) -> None:
    if state.phase in BACKFILL_PHASES:
        return
    if state.phase.rank < Phase.DUAL_WRITE.rank:
        detail = (
            f"tenant {tenant!r} is in {state.phase.value}: writes are not mirrored to new yet, so rows "
            "written during the copy would be missed; move it to dual_write first"
        )
    else:
        detail = (
            f"tenant {tenant!r} is in {state.phase.value}: new has taken writes first since live, so "
            "copying old rows over it could undo them; backfill runs in dual_write or shadow "
            "(use `cutover verify --repair` to fix single rows)"
        )
    raise PhaseRefusedError(tenant, state.phase.value, detail)


def repair_source(tenant: str, state: PhaseState) -> Side:
    """The side `verify --repair` copies from: the authoritative one (old up to shadow, new in live and
    rampdown), toward the side its writes are mirrored to.

    Refused in complete, although new is authoritative there: nothing is mirrored to old any more, so old
    would fall behind again at new's next write, and nothing reads it. Bringing old back is a rollback to
    rampdown (forced), where new's writes reach old again and a repair from new makes it whole.
    """
    if state.phase is Phase.COMPLETE:
        raise PhaseRefusedError(
            tenant,
            state.phase.value,
            f"tenant {tenant!r} is in complete: old no longer receives writes, so a repair would leave it"
            " behind again at new's next write; to bring old back, roll back to rampdown (--force), where"
            " writes are mirrored to old again, then run `cutover verify --repair` (it copies from new)",
        )
    return state.phase.authoritative
