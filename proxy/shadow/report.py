"""Divergence reports, read from PostgreSQL (every proxy's counters add up there).

- per tenant and resource: compared / equal / noise / divergent / failed / new-side errors / skipped;
- per tenant: the fields that diverged most, with the ids of recent samples showing them, and the fields
  seen as noise;
- one stored divergence with both bodies side by side.
"""

from __future__ import annotations

import difflib
from typing import Any

import asyncpg
import orjson

from proxy.shadow.rates import divergence_rate, new_error_rate
from proxy.shadow.tally import COUNT_COLUMNS

_EXAMPLES = 3


async def tenant_report(
    pool: asyncpg.Pool, tenant: str | None, *, top: int = 10, limit: int = 100
) -> list[dict[str, Any]]:
    """One entry per tenant (all tenants with counters, or just `tenant`), busiest first."""
    rows = await pool.fetch(
        "SELECT * FROM cutover_shadow_count WHERE $1::text IS NULL OR tenant = $1 ORDER BY tenant, resource",
        tenant,
    )
    tenants: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = tenants.setdefault(
            row["tenant"],
            {"tenant": row["tenant"], "totals": dict.fromkeys(COUNT_COLUMNS, 0), "resources": []},
        )
        counts = {column: row[column] for column in COUNT_COLUMNS}
        for column, value in counts.items():
            entry["totals"][column] += value
        entry["resources"].append(
            {
                "resource": row["resource"],
                **counts,
                **_rates(counts),
                "since": row["first_at"].isoformat(),
                "updated_at": row["updated_at"].isoformat(),
            }
        )
    ordered = sorted(tenants.values(), key=lambda e: -e["totals"]["compared"])[:limit]
    for entry in ordered:
        entry["totals"].update(_rates(entry["totals"]))
        entry["top_fields"] = await _top_fields(pool, entry["tenant"], top)
        entry["noise_fields"] = await _noise_fields(pool, entry["tenant"], top)
    return ordered


def _rates(counts: dict[str, int]) -> dict[str, float | None]:
    return {
        "divergence_rate": divergence_rate(counts["divergent"], counts["compared"] - counts["failed"]),
        "new_error_rate": new_error_rate(counts["new_errors"], counts["compared"]),
    }


async def _top_fields(pool: asyncpg.Pool, tenant: str, top: int) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT f.resource, f.field, f.divergent, f.noise,"
        " ARRAY(SELECT d.id FROM cutover_divergence d WHERE d.tenant = f.tenant AND d.resource = f.resource"
        "       AND d.fields @> ARRAY[f.field] ORDER BY d.id DESC LIMIT $3) AS examples"
        " FROM cutover_shadow_field f WHERE f.tenant = $1 AND f.divergent > 0"
        " ORDER BY f.divergent DESC, f.resource, f.field LIMIT $2",
        tenant,
        top,
        _EXAMPLES,
    )
    return [
        {
            "resource": r["resource"],
            "field": r["field"],
            "divergent": r["divergent"],
            "noise": r["noise"],
            "example_ids": list(r["examples"]),
        }
        for r in rows
    ]


async def _noise_fields(pool: asyncpg.Pool, tenant: str, top: int) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT resource, field, divergent, noise FROM cutover_shadow_field"
        " WHERE tenant = $1 AND noise > 0 ORDER BY noise DESC, resource, field LIMIT $2",
        tenant,
        top,
    )
    return [dict(r) for r in rows]


async def reset_counters(pool: asyncpg.Pool, tenant: str) -> int:
    """Forget a tenant's counters (after a fix, to measure afresh); stored samples stay."""
    async with pool.acquire() as conn, conn.transaction():
        counts = await conn.execute("DELETE FROM cutover_shadow_count WHERE tenant = $1", tenant)
        await conn.execute("DELETE FROM cutover_shadow_field WHERE tenant = $1", tenant)
    return int(counts.split()[-1])


def side_by_side(serving: str | None, shadow: str | None) -> list[dict[str, Any]]:
    """Both bodies pretty-printed (JSON with sorted keys, so equal members line up) and aligned line by
    line: `op` is equal, replace, delete (serving only) or insert (shadow only)."""
    left, right = _pretty(serving), _pretty(shadow)
    rows: list[dict[str, Any]] = []
    matcher = difflib.SequenceMatcher(a=left, b=right, autojunk=False)
    for op, a0, a1, b0, b1 in matcher.get_opcodes():
        if op == "equal":
            rows += [{"op": op, "serving": left[a0 + i], "shadow": right[b0 + i]} for i in range(a1 - a0)]
            continue
        span = max(a1 - a0, b1 - b0)
        for i in range(span):
            a = left[a0 + i] if a0 + i < a1 else None
            b = right[b0 + i] if b0 + i < b1 else None
            rows.append({"op": op, "serving": a, "shadow": b})
    return rows


def _pretty(body: str | None) -> list[str]:
    if body is None:
        return []
    try:
        text = orjson.dumps(orjson.loads(body), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()
    except orjson.JSONDecodeError:
        text = body
    return text.splitlines()
