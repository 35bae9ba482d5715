"""One tenant's health, everything an operator walking it through a migration asks, in one document:
`GET /tenants/{tenant}/health` and `cutover tenant show`.

    phase      the phase, since when, who moved it there and why
    moves      each next move with what blocks it (`proxy.control.move_blockers`)
    copy       whether the tenant's data is copied to new: the verdict the `live` gate refuses on
               (`backfill.copy_status.copy_verdict`: state ok/blocked/unfinished/unknown, detail,
               the REST resources left)
    traffic    per side (old, new, proxy): request rate, errors, fallbacks, p50/p99 over `window_s`
    shadow     comparisons, divergence rate and new-side error rate, apart (`proxy.shadow.rates`)
    buffer     intents pending toward each side with the age of the oldest, dead letters, blocked-behind
    verify     the `complete` gate's verdict and the newest verify report of each covered table
    history    `traffic` and `shadow` figures and the backlog as points over `operator.health.history_s`

Traffic, shadow and history come from the health history every proxy writes (`proxy.health.store`), so
they cover the fleet, a few seconds behind. A section whose store does not answer carries
`{"error": ...}` and the others are still given; the phase itself comes first and is required.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from backfill.copy_status import UNKNOWN, CopyVerdict
from backfill.gate import check_complete_gate
from backfill.report import latest_per_table, list_reports
from common.store_errors import BUFFER_ERRORS, STORE_ERRORS
from proxy.admin.copy import copy_verdict_of
from proxy.control.move_blockers import MoveFacts, plan_moves
from proxy.health.figures import series, window
from proxy.runtime import Runtime
from proxy.shadow.rates import DEFINITION
from routing.phases import Side

_STORE_DOWN = "the phase store is unavailable"
_BUFFER_DOWN = "the intent buffer (Redis) is unavailable"


async def tenant_health(runtime: Runtime, tenant: str, *, window_s: int, step_s: int) -> dict[str, Any]:
    settings = runtime.settings
    health = settings.operator.health
    row = await runtime.store.get(tenant)
    last = await runtime.store.audit(tenant, limit=1)
    db_now: dt.datetime = await runtime.pool.fetchval("SELECT now()")
    buffer, dead_letters, pending = await _buffer(runtime, tenant)
    verify, problems, detail = await _verify(runtime, tenant, row.updated_at)
    unknown_why = {}
    copy: CopyVerdict | None = None
    try:
        copy = await copy_verdict_of(runtime, tenant)
        copy_section = copy.as_json()
    except (*STORE_ERRORS, *BUFFER_ERRORS) as exc:  # the checkpoints (PostgreSQL), the worker's marks (Redis)
        unknown_why["copy"] = f"the copy's progress could not be read ({type(exc).__name__})"
        copy_section = {"state": UNKNOWN, "detail": unknown_why["copy"], "resources": []}
    if dead_letters is None:
        unknown_why["dead_letters"] = _BUFFER_DOWN
    if problems is None:
        unknown_why["verify"] = _STORE_DOWN
    facts = MoveFacts(
        dead_letters=dead_letters,
        gate_problems=problems,
        gate_detail=detail,
        missing_applier=settings.worker.missing_for,
        pending_toward=pending,
        hold_timeout_s=settings.barrier.hold_timeout_s,
        copy=copy,
        unknown_why=unknown_why,
    )
    change = last[0] if last else None
    body: dict[str, Any] = {
        "tenant": tenant,
        "generated_at": db_now.isoformat(),
        "phase": {
            "phase": row.phase.value,
            "version": row.version,
            "default": row.version == 0,  # no row: it follows default_phase
            "since": row.updated_at.isoformat() if row.updated_at else None,
            "in_phase_s": round((db_now - row.updated_at).total_seconds(), 1) if row.updated_at else None,
            "changed_by": row.updated_by,
            "from": change.from_phase.value if change else None,
            "reason": change.reason if change else None,
        },
        "moves": plan_moves(row.phase, facts),
        "copy": copy_section,
        "buffer": buffer,
        "verify": verify,
    }
    if not health.enabled:
        off = {"error": "the health history is off (operator.health.enabled: false)"}
        return {**body, "traffic": off, "shadow": off, "history": off}
    try:
        figures = await window(runtime.pool, tenant, health, window_s)
        points = await series(runtime.pool, [tenant], health, span_s=health.history_s, step_s=step_s)
    except STORE_ERRORS as exc:
        down = {"error": f"{_STORE_DOWN} ({type(exc).__name__})"}
        return {**body, "traffic": down, "shadow": down, "history": down}
    traffic: dict[str, Any] = {
        "window_s": figures["window_s"],
        "since": figures["since"],
        "sides": figures["sides"],
    }
    if not any(side["requests"] for side in figures["sides"].values()):
        traffic["note"] = _untracked_note(tenant, settings.telemetry.tenant_labels, health.top_tenants)
    history = points["tenants"][tenant]
    return {
        **body,
        "traffic": traffic,
        "shadow": {"window_s": figures["window_s"], **figures["shadow"], "definition": DEFINITION},
        "history": {key: points[key] for key in ("step_s", "since", "now", "t", "seconds")} | history,
    }


def _untracked_note(tenant: str, labels: list[str], top_n: int) -> str:
    if tenant in labels:
        return "no requests of this tenant reached any proxy in the window"
    return (
        "no requests counted for this tenant in the window: none reached a proxy, or it was not among a"
        f" proxy's {top_n} busiest tenants (operator.health.top_tenants) and was counted as (other);"
        " list it in telemetry.tenant_labels to keep it apart always"
    )


async def _buffer(runtime: Runtime, tenant: str) -> tuple[dict[str, Any], int | None, dict[Side, int]]:
    try:
        backlog = await runtime.inspector.tenant_backlog(tenant)
        dead = await runtime.inspector.dead_letter_count(tenant)
    except BUFFER_ERRORS as exc:
        return {"error": f"{_BUFFER_DOWN} ({type(exc).__name__})"}, None, {}
    pending = {side: backlog["toward"][side.value]["pending"] for side in Side}
    return {**backlog, "dead_letters": dead, "spooled_here": runtime.sink.spooled(tenant)}, dead, pending


async def _verify(
    runtime: Runtime, tenant: str, changed_at: dt.datetime | None
) -> tuple[dict[str, Any], list[dict[str, Any]] | None, str]:
    data = runtime.settings.data
    covered = data.covered
    try:
        async with runtime.pool.acquire() as conn:
            verdict = await check_complete_gate(
                conn, data, tenant, phase_changed_at=changed_at, now=dt.datetime.now(dt.UTC)
            )
            latest = await latest_per_table(conn, tenant, covered) if covered else {}
            newest = await list_reports(conn, tenant, limit=1)
    except STORE_ERRORS as exc:
        return {"error": f"{_STORE_DOWN} ({type(exc).__name__})"}, None, ""
    tables = []
    for table in covered:
        report = latest.get(table)
        if report is not None:
            report = {k: v for k, v in report.items() if not k.endswith("_dt")}
        tables.append({"table": table, "report": report})
    section = {
        "required": data.gate.require_verify and bool(covered),
        "gate": {"passed": verdict.passed, "problems": verdict.problems},
        "tables": tables,
        "last": newest[0] if newest else None,
    }
    return section, verdict.problems, verdict.describe(tenant) if verdict.problems else ""
