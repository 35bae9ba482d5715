"""The tenant's phase, read from the phase store's table in the control-plane database (written only by
the admin API; the backfill reads it and never changes it)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from backfill.errors import PhaseRefusedError
from routing.phases import Phase

# The old side is authoritative and every write since dual_write is mirrored to new: the rows the copy
# misses reach new through the buffer. From live on, new takes writes first, and copying old rows over
# it could undo them.
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
