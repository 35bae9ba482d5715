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
unparsed commands are classified.

Locking reads (`SELECT … FOR UPDATE`, `FOR SHARE`, `FOR NO KEY UPDATE`, `LOCK IN SHARE MODE`, and a
SELECT of `nextval()`) are writes without a mirror: the side that takes writes serves them (its rows are
the ones a following write changes), they wait at an authority switch like writes, are never shadowed
(a shadow would lock rows on the other side) and never mirrored (there is nothing to replay). Touching
covered and uncovered tables, they are served by old while old takes writes, as reads are.

A mirrored write must mean the same on both sides (`routing.sql_volatile`): in mirroring phases a write
that changes rows with a value the proxy cannot fix once, or inserts rows whose key the database would
generate, is refused with 422.
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
    locking = kind is RequestKind.WRITE and not request.mutates and not request.ddl
    if outside and phase is not Phase.LEGACY:
        if (kind is RequestKind.READ or locking) and phase.authoritative is Side.OLD:
            return _OLD_ONLY[(phase, kind)]
        reason = (
            "a write to both could not be made consistent on old and new"
            if kind is RequestKind.WRITE and phase.mirrors and not locking
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
    if locking:
        return _UNMIRRORED[phase]
    plan = decide(phase, kind)
    if plan.mirror is not None:
        check_mirrorable(phase, request)
    return plan


def check_mirrorable(phase: Phase, request: SqlRequest) -> None:
    """Refuse (422) a write whose mirrored run could not mean the same as the authoritative one."""
    if request.unpinnable is not None:
        call = request.unpinnable
        raise SqlRefusedError(
            f"{call.name}() cannot be mirrored in phase {phase}: {call.reason}; compute the value in the "
            "client and send it as a literal or parameter",
            code="sql_unpinnable",
            phase=phase.value,
            function=call.name,
        )
    if request.generated_key is not None:
        table, column = request.generated_key
        raise SqlRefusedError(
            f"the insert into {table} does not give its key column {column}: the database would generate "
            f"it on each side, and the sides would hold different keys (phase {phase}); generate keys in "
            "the client, or list the table's key columns in sql.primary_keys if its key is not id",
            code="sql_generated_key",
            phase=phase.value,
            table=table,
            column=column,
        )


def without_shadow(plan: Plan) -> Plan:
    """`plan` with no shadow side (a read whose statement cannot be sent to the shadow side)."""
    return Plan(plan.phase, plan.kind, plan.serving, fallback=plan.fallback, mirror=plan.mirror)


def needs_new(plan: Plan) -> bool:
    """Whether anything of this plan is sent to `new` (serving, shadow, or mirrored)."""
    return Side.NEW in (plan.serving, plan.shadow, plan.mirror)
