"""Everything the status page shows, gathered in one JSON document (`GET /status/data`).

Each section comes from the same source as the admin API's own endpoint (`/tenants`, `/audit`, `/stats`,
`/buffer`, divergences), so the page and the API cannot disagree. A section whose store is unreachable
carries `{"error": ...}` and the others are still shown: an outage is when the page is needed most.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from typing import Any, cast

from redis.exceptions import RedisError

from common.store_errors import STORE_ERRORS
from config.operator import StatusPageSettings
from proxy.admin.copy import copy_overview
from proxy.control.seen_tenants import count_seen_only
from proxy.control.tenant_archive import not_archived
from proxy.runtime import Runtime
from routing.phases import Phase

_TOP_FIELDS = 3


async def gather(runtime: Runtime, settings: StatusPageSettings) -> dict[str, Any]:
    cache = runtime.cache
    stats = runtime.stats
    shadow = cast(dict[str, Any], stats.as_json()["shadow"])
    by_side: Counter[str] = Counter()
    for (_phase, _kind, served_by), count in stats.requests.items():
        by_side[served_by] += count
    return {
        "generated_at": dt.datetime.now(dt.UTC).isoformat(),
        "refresh_s": settings.refresh_s,
        "proxy": {
            "status": "ready"
            if cache.loaded and cache.connected
            else ("degraded" if cache.loaded else "not_ready"),
            "phase_cache_stale_s": cache.staleness_s(),
            "phase_store_error": cache.last_error,
        },
        "tenants": await guarded(_tenants(runtime, settings)),
        "requests": {
            "by_side": {side: by_side.get(side, 0) for side in ("old", "new")},
            "rows": stats.as_json()["requests"],
        },
        "fallbacks": {"served": sum(stats.fallbacks.values()), "refused": stats.fallback_refused},
        # compared, equal, divergent, failed, ... and divergence_rate (proxy.shadow.rates).
        "shadow": shadow,
        "divergences": await guarded(_divergences(runtime, settings.divergence_window_s)),
        "buffer": await guarded(_buffer(runtime)),
        # The REST copies per tenant and what mirroring did meanwhile (proxy/admin/copy.py).
        "copies": await guarded(copy_overview(runtime, settings.tenants_per_phase)),
    }


async def guarded(coro: Any) -> Any:
    """`coro`'s result, or `{"error": ...}` when its store does not answer."""
    try:
        return await coro
    except STORE_ERRORS as exc:
        return {"error": f"the phase store is unavailable ({type(exc).__name__})"}
    except RedisError as exc:
        return {"error": f"the intent buffer (Redis) is unavailable ({type(exc).__name__})"}


async def _tenants(runtime: Runtime, settings: StatusPageSettings) -> dict[str, Any]:
    """Counts per phase, and the first `tenants_per_phase` of each phase by id: what is read and
    rendered stays bounded however many tenants there are (the database does the counting)."""
    store = runtime.store
    pool = store.pool
    visible = (
        f"WHERE {not_archived('p.tenant')}"  # archived tenants are not shown (proxy.control.tenant_archive)
    )
    counts = {
        row["phase"]: row["n"]
        for row in await pool.fetch(
            f"SELECT phase, count(*) AS n FROM cutover_tenant_phase p {visible} GROUP BY phase"
        )
    }
    rows = await pool.fetch(
        "SELECT tenant, phase, version, updated_at, updated_by FROM ("
        " SELECT *, row_number() OVER (PARTITION BY phase ORDER BY tenant) AS rank"
        f" FROM cutover_tenant_phase p {visible}"
        ") AS ranked WHERE rank <= $1 ORDER BY phase, tenant",
        settings.tenants_per_phase,
    )
    last = {
        row["tenant"]: row
        for row in await pool.fetch(
            "SELECT DISTINCT ON (tenant) tenant, at, actor, from_phase, reason FROM cutover_phase_audit"
            " WHERE tenant = ANY($1::text[]) ORDER BY tenant, id DESC",
            [row["tenant"] for row in rows],
        )
    }
    seen_only = await count_seen_only(pool)
    phases: dict[str, dict[str, Any]] = {
        p.value: {"count": counts.get(p.value, 0), "tenants": [], "more": 0} for p in Phase
    }
    for row in rows:
        change = last.get(row["tenant"])
        phases[row["phase"]]["tenants"].append(
            {
                "tenant": row["tenant"],
                "version": row["version"],
                "changed_at": row["updated_at"].isoformat() if row["updated_at"] else None,
                "changed_by": row["updated_by"],
                "from": change["from_phase"] if change else None,
                "reason": change["reason"] if change else None,
            }
        )
    for entry in phases.values():
        entry["more"] = entry["count"] - len(entry["tenants"])
    # Tenants seen in traffic without a phase row follow the default phase: counted there, not listed.
    phases[store.default_phase.value]["count"] += seen_only
    phases[store.default_phase.value]["seen_in_traffic"] = seen_only
    return {"default_phase": store.default_phase.value, "by_phase": phases}


async def _divergences(runtime: Runtime, window_s: int) -> dict[str, Any]:
    counts = await runtime.pool.fetch(
        "SELECT tenant, count(*) AS n, max(at) AS last_at, max(id) AS last_id FROM cutover_divergence d"
        f" WHERE at > now() - make_interval(secs => $1) AND {not_archived('d.tenant')}"
        " GROUP BY tenant ORDER BY n DESC, tenant LIMIT 100",
        float(window_s),
    )
    fields = await runtime.pool.fetch(
        "SELECT tenant, d->>'path' AS path, count(*) AS n"
        " FROM cutover_divergence, jsonb_array_elements(differences) AS d"
        " WHERE at > now() - make_interval(secs => $1) GROUP BY 1, 2 ORDER BY n DESC, path LIMIT 2000",
        float(window_s),
    )
    top: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in fields:
        if len(top[row["tenant"]]) < _TOP_FIELDS:
            top[row["tenant"]].append({"path": row["path"], "count": row["n"]})
    return {
        "window_s": window_s,
        "tenants": [
            {
                "tenant": row["tenant"],
                "count": row["n"],
                "per_min": round(row["n"] * 60 / window_s, 2),
                "last_at": row["last_at"].isoformat(),
                "last_id": row["last_id"],  # the newest sample (the page links to it)
                "top_fields": top.get(row["tenant"], []),
            }
            for row in counts
        ],
    }


async def _buffer(runtime: Runtime) -> dict[str, Any]:
    report = await runtime.inspector.report()
    dead = {row["tenant"]: row["dead_letters"] for row in report["tenants"] if row["dead_letters"]}
    return {
        "partitions": report["partitions"],
        "dead_letters": {"total": sum(dead.values()), "by_tenant": dead},
        "spool": runtime.sink.status(),
    }
