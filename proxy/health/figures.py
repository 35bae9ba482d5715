"""Figures from the health history (`proxy.health.store`): one window's per-side traffic and shadow rates,
and series of points for the status page and the health view. Pure arithmetic over what the store sums.

Time is the database's (the buckets were stamped with it). A window or a series ends with the current
bucket, which is still filling: its rate is taken over the seconds it has run, not its full width.
Latency quantiles are estimated from the summed fixed buckets as Prometheus does (linear within the
bucket the rank falls in); a rank in the last, open bucket reads as its lower bound, the largest bound.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import asyncpg

from config.operator import HealthSettings
from proxy.health.series import LATENCY_BOUNDS_S, SIDES
from proxy.health.store import LATENCY_COLUMNS, backlog_points, clock, shadow_points, side_points
from proxy.shadow.rates import divergence_rate, new_error_rate

BACKLOG_SIDES = ("old", "new")


def quantile_ms(counts: Sequence[int], q: float) -> float | None:
    """The `q` quantile (0-1) of latencies counted in the fixed buckets, in milliseconds."""
    total = sum(counts)
    if not total:
        return None
    rank = q * total
    cumulative = 0
    for index, n in enumerate(counts):
        if n and cumulative + n >= rank:
            if index == len(LATENCY_BOUNDS_S):
                return LATENCY_BOUNDS_S[-1] * 1000
            lower = LATENCY_BOUNDS_S[index - 1] if index else 0.0
            upper = LATENCY_BOUNDS_S[index]
            return round((lower + (upper - lower) * (rank - cumulative) / n) * 1000, 3)
        cumulative += n
    return LATENCY_BOUNDS_S[-1] * 1000


def side_figures(row: Mapping[str, Any] | None, seconds: float) -> dict[str, Any]:
    requests = int(row["requests"]) if row else 0
    errors = int(row["errors"]) if row else 0
    counts = [int(row[c]) for c in LATENCY_COLUMNS] if row else []
    return {
        "requests": requests,
        "rate_per_s": round(requests / seconds, 3) if seconds > 0 else None,
        "errors": errors,
        "error_rate": round(errors / requests, 4) if requests else None,
        "fallbacks": int(row["fallbacks"]) if row else 0,
        "p50_ms": quantile_ms(counts, 0.5),
        "p99_ms": quantile_ms(counts, 0.99),
    }


def shadow_figures(row: Mapping[str, Any] | None) -> dict[str, Any]:
    compared = int(row["compared"]) if row else 0
    answered = int(row["answered"]) if row else 0
    divergent = int(row["divergent"]) if row else 0
    new_errors = int(row["new_errors"]) if row else 0
    return {
        "compared": compared,
        "answered": answered,
        "failed": compared - answered,
        "divergent": divergent,
        "new_errors": new_errors,
        "divergence_rate": divergence_rate(divergent, answered),
        "new_error_rate": new_error_rate(new_errors, compared),
    }


async def window(pool: asyncpg.Pool, tenant: str, settings: HealthSettings, window_s: int) -> dict[str, Any]:
    """Per-side traffic and the shadow figures of `tenant` over the last `window_s` seconds (all proxies)."""
    now, start = await clock(pool, settings.bucket_s, window_s)
    whole = window_s + 2 * settings.bucket_s  # one point for the whole window
    sides = {row["side"]: row for row in await side_points(pool, [tenant], start, whole)}
    shadow = await shadow_points(pool, [tenant], start, whole)
    seconds = (now - start).total_seconds()
    return {
        "window_s": round(seconds, 1),
        "since": start.isoformat(),
        "sides": {side: side_figures(sides.get(side), seconds) for side in SIDES},
        "shadow": shadow_figures(shadow[0] if shadow else None),
    }


async def series(
    pool: asyncpg.Pool, tenants: Iterable[str], settings: HealthSettings, *, span_s: int, step_s: int
) -> dict[str, Any]:
    """Points of `step_s` over the last `span_s` seconds for each tenant: request rate, error rate and p99
    per side, divergence and new-side error rates, backlog (pending, oldest) toward each side."""
    names = list(tenants)
    now, start = await clock(pool, settings.bucket_s, span_s)
    elapsed = (now - start).total_seconds()
    count = max(1, math.ceil(elapsed / step_s))
    seconds = [float(step_s)] * count
    seconds[-1] = round(elapsed - step_s * (count - 1), 3)  # the last point is still filling
    out: dict[str, dict[str, Any]] = {
        tenant: {
            # No row in a point: no request counted there (0), and no error rate or latency to give.
            "sides": {
                side: {
                    "requests": [0] * count,
                    "rate_per_s": [0.0] * count,
                    "error_rate": [None] * count,
                    "p99_ms": [None] * count,
                }
                for side in SIDES
            },
            "divergence_rate": [None] * count,
            "new_error_rate": [None] * count,
            "compared": [0] * count,
            "backlog": {side: {"pending": [0] * count, "oldest_s": [0.0] * count} for side in BACKLOG_SIDES},
        }
        for tenant in names
    }
    for row in await side_points(pool, names, start, step_s):
        k = row["k"]
        if 0 <= k < count and row["side"] in SIDES:
            figures = side_figures(row, seconds[k])
            point = out[row["tenant"]]["sides"][row["side"]]
            for key in ("rate_per_s", "error_rate", "p99_ms", "requests"):
                point[key][k] = figures[key]
    for row in await shadow_points(pool, names, start, step_s):
        k = row["k"]
        if 0 <= k < count:
            figures = shadow_figures(row)
            entry = out[row["tenant"]]
            entry["divergence_rate"][k] = figures["divergence_rate"]
            entry["new_error_rate"][k] = figures["new_error_rate"]
            entry["compared"][k] = figures["compared"]
    for row in await backlog_points(pool, names, start, step_s):
        k = row["k"]
        if 0 <= k < count and row["side"] in BACKLOG_SIDES:
            backlog = out[row["tenant"]]["backlog"][row["side"]]
            backlog["pending"][k] = int(row["pending"])
            backlog["oldest_s"][k] = round(float(row["oldest_s"]), 3)
    first = start.timestamp()
    return {
        "step_s": step_s,
        "since": start.isoformat(),
        "now": now.isoformat(),
        "t": [round(first + k * step_s, 3) for k in range(count)],
        "seconds": seconds,
        "tenants": out,
    }
