"""Scope by table: which plan a SQL request gets, given the tenant's phase and the tables it touches.

A migration may cover only some tables. Uncovered tables live on `old` only, covered ones move to `new`:

| statement touches          | legacy | dual_write / shadow                 | live / rampdown / complete |
|----------------------------|--------|-------------------------------------|----------------------------|
| no covered table           | old    | old                                 | old                        |
| covered tables only        | the phase's plan (`routing.decide`); DDL: 422 but in legacy, complete  |
| covered and uncovered      | old    | read: old, unshadowed; write: 422   | 422                        |

A write touching both kinds in a mirroring phase could not be made consistent on both sides (`new`
lacks the uncovered tables); once `new` is authoritative no single side holds both kinds of table
current, so reads are refused too. A statement whose tables cannot be known is treated as touching
covered tables only when it is DDL (refused outside legacy and complete), which is how sqlglot's
unparsed commands are classified. Locking reads (`SELECT … FOR UPDATE`) go to the authoritative side
like writes but are not mirrored: there is nothing to replay.
"""

from __future__ import annotations

from routing.classify import RequestKind
from routing.decide import Plan, decide
from routing.phases import Phase, Side
from routing.sql import SqlRequest
from routing.sql_errors import SqlRefusedError

_DDL_PHASES = frozenset({Phase.LEGACY, Phase.COMPLETE})
_OLD_ONLY = {(phase, kind): Plan(phase, kind, Side.OLD) for phase in Phase for kind in RequestKind}
_UNMIRRORED = {phase: Plan(phase, RequestKind.WRITE, phase.authoritative) for phase in Phase}


def route_sql(phase: Phase, request: SqlRequest, covered: frozenset[str]) -> Plan:
    """The plan for `request` from a tenant in `phase`; raises `SqlRefusedError` (422)."""
    kind = request.kind
    inside = request.tables & covered
    if not inside and not request.opaque:
        return _OLD_ONLY[(phase, kind)]
    if request.ddl and phase not in _DDL_PHASES:
        raise SqlRefusedError(
            f"schema and administrative statements are refused while tenants migrate (phase {phase}): "
            "apply them to both sides deliberately",
            code="sql_ddl_refused",
            phase=phase.value,
            tables=sorted(inside) if not request.opaque else None,
        )
    outside = request.tables - covered
    if outside and phase is not Phase.LEGACY:
        if kind is RequestKind.READ and phase.authoritative is Side.OLD:
            return _OLD_ONLY[(phase, kind)]
        reason = (
            "a write to both could not be made consistent on old and new"
            if kind is RequestKind.WRITE and phase.mirrors
            else "no side holds both current"
        )
        raise SqlRefusedError(
            f"the statement touches covered tables ({', '.join(sorted(inside))}) and uncovered tables "
            f"({', '.join(sorted(outside))}) in phase {phase}: {reason}",
            code="sql_mixed_tables",
            phase=phase.value,
            covered=sorted(inside),
            uncovered=sorted(outside),
        )
    if kind is RequestKind.WRITE and not request.mutates and not request.ddl:
        return _UNMIRRORED[phase]
    return decide(phase, kind)


def without_shadow(plan: Plan) -> Plan:
    """`plan` with no shadow side (a read whose statement cannot be sent to the shadow side)."""
    return Plan(plan.phase, plan.kind, plan.serving, fallback=plan.fallback, mirror=plan.mirror)


def needs_new(plan: Plan) -> bool:
    """Whether anything of this plan is sent to `new` (serving, shadow, or mirrored)."""
    return Side.NEW in (plan.serving, plan.shadow, plan.mirror)
