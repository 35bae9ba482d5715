"""The status page's time series (`GET /status/series`): the tenants the viewer pinned (`?tenants=a,b`) and
the busiest of the last hour, each with
points of request rate, error rate and p99 per side, divergence rate, backlog toward each side, and its
newest stored divergences (the page links each to `/status/divergence/{tenant}/{id}`).

Fleet-wide: read from the health history every proxy writes (`proxy.health.store`), like the tenant
health view. Bounded: `operator.status_page.series_tenants` tenants, points of `series_step_s` over
`operator.health.history_s`, `_SAMPLES` divergences per tenant.
"""

from __future__ import annotations

from typing import Any

from proxy.health.figures import series
from proxy.health.store import busiest, clock
from proxy.runtime import Runtime

_SAMPLES = 5


async def gather_series(runtime: Runtime, pinned: list[str]) -> dict[str, Any]:
    """`pinned` tenants first (those the viewer asked for), then the busiest up to `series_tenants`."""
    operator = runtime.settings.operator
    health, page = operator.health, operator.status_page
    if not health.enabled:
        return {"error": "the health history is off (operator.health.enabled: false)"}
    pool = runtime.pool
    _now, start = await clock(pool, health.bucket_s, health.history_s)
    tenants = list(dict.fromkeys(pinned))
    for tenant in await busiest(pool, start, page.series_tenants):
        if len(tenants) >= page.series_tenants + len(pinned):
            break
        if tenant not in tenants:
            tenants.append(tenant)
    step = max(health.bucket_s, page.series_step_s)
    points = await series(pool, tenants, health, span_s=health.history_s, step_s=step)
    samples = await pool.fetch(
        "SELECT tenant, id, at, method, path, fields FROM ("
        " SELECT *, row_number() OVER (PARTITION BY tenant ORDER BY id DESC) AS rank FROM cutover_divergence"
        " WHERE tenant = ANY($1::text[]) AND at >= $2"
        ") AS ranked WHERE rank <= $3 ORDER BY tenant, id DESC",
        tenants,
        start,
        _SAMPLES,
    )
    divergences: dict[str, list[dict[str, Any]]] = {tenant: [] for tenant in tenants}
    for row in samples:
        divergences[row["tenant"]].append(
            {
                "id": row["id"],
                "at": row["at"].isoformat(),
                "request": f"{row['method']} {row['path']}",
                "fields": list(row["fields"])[:3],
            }
        )
    phases = {tenant: phase.value for tenant, (phase, _version) in runtime.cache.snapshot().items()}
    default = runtime.settings.default_phase.value
    return {
        **{key: points[key] for key in ("step_s", "since", "now", "t", "seconds")},
        "history_s": health.history_s,
        "tenants": [
            {
                "tenant": tenant,
                # (other) and (none) are not tenants: no phase.
                "phase": phases.get(tenant, None if tenant.startswith("(") else default),
                **points["tenants"][tenant],
                "divergences": divergences[tenant],
            }
            for tenant in tenants
        ],
    }
