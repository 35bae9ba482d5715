"""Per-tenant, per-side request counts and latency histograms of one data-plane process, held between two
writes to PostgreSQL (`proxy.health.recorder`), and the cap that keeps what is written bounded.

The side of a request is the side its plan sent it to first (`RequestOutcome.serving`): old or new, or `proxy`
for a request cutover answered by itself before any backend (not ready, bad input, a buffer refusing
writes). A request is an error of its side when the client got a 5xx (the side's own, or a 502/504/503
cutover answered because the side failed) or when the side failed and the other one served it (a
fallback, also counted apart).

Hot path: `record` is one dict lookup, a bisect over fixed bounds and two or three additions, called
by `RequestTelemetry.finish` with the duration it measures for the metrics anyway. Keys are real tenant
ids, at most `capacity` of them between two writes (any client can send any id: beyond the capacity new
ids count as `(other)` at once). At each write `fold` keeps `telemetry.tenant_labels` and the busiest
`top_tenants` apart and sums the rest as `(other)`.

Latency buckets are fixed, not configurable: rows of every process and every bucket are summed
element-wise, which only works when all of them count the same intervals.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable

# Upper bounds in seconds (the last bucket is everything above). Finer than the metrics' defaults in the
# range a proxied request lives in, so that p50 and p99 estimated from summed buckets say something.
LATENCY_BOUNDS_S: tuple[float, ...] = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.025,
    0.04,
    0.06,
    0.1,
    0.15,
    0.25,
    0.4,
    0.6,
    1.0,
    1.5,
    2.5,
    5.0,
    10.0,
)
BUCKETS = len(LATENCY_BOUNDS_S) + 1
# Row layout: BUCKETS counts, then the latency sum, errors and fallbacks.
SUM, ERRORS, FALLBACKS = BUCKETS, BUCKETS + 1, BUCKETS + 2
ROW_WIDTH = BUCKETS + 3
# Not valid tenant ids (parentheses are outside routing.tenant's pattern): no tenant can be mistaken for them.
OTHER = "(other)"
NO_TENANT = "(none)"
SIDES = ("old", "new", "proxy")

Key = tuple[str | None, str]
Row = list[float]


class SideSeries:
    __slots__ = ("_rows", "_capacity", "overflowed")

    def __init__(self, *, capacity: int) -> None:
        self._rows: dict[Key, Row] = {}
        self._capacity = capacity
        self.overflowed = 0  # requests counted as (other) because the window was full

    # -- hot path -------------------------------------------------------------------------------------
    def record(self, tenant: str | None, side: str, seconds: float, status: int, decision: str) -> None:
        row = self._rows.get((tenant, side))
        if row is None:
            row = self._row(tenant, side)
        row[bisect_left(LATENCY_BOUNDS_S, seconds)] += 1
        row[SUM] += seconds
        if status >= 500 or decision == "fallback":
            row[ERRORS] += 1
            if decision == "fallback":
                row[FALLBACKS] += 1

    def _row(self, tenant: str | None, side: str) -> Row:
        if len(self._rows) >= self._capacity:
            self.overflowed += 1
            tenant = OTHER
        return self._rows.setdefault((tenant, side), [0] * BUCKETS + [0.0, 0, 0])

    # -- flush ----------------------------------------------------------------------------------------
    def take(self) -> dict[Key, Row]:
        """The counts gathered since the last call; counting starts afresh."""
        taken, self._rows = self._rows, {}
        return taken

    def merge_back(self, taken: dict[Key, Row]) -> None:
        """Return counts a failed write could not store (added to what came in meanwhile)."""
        for (tenant, side), values in taken.items():
            row = self._rows.get((tenant, side))
            if row is None:
                row = self._row(tenant, side)
            for index, value in enumerate(values):
                row[index] += value


def keep_apart(totals: dict[str | None, float], labels: Iterable[str], top_n: int) -> frozenset[str]:
    """The tenants written under their own id: `labels`, then the `top_n` largest of `totals`."""
    kept = set(labels)
    ranked = sorted(
        # (other) already (a full window's overflow) takes no place among the busiest tenants.
        ((n, tenant) for tenant, n in totals.items() if tenant not in (None, OTHER) and tenant not in kept),
        key=lambda item: (-item[0], item[1]),
    )
    kept.update(tenant for _n, tenant in ranked[:top_n])
    return frozenset(kept)


def label_of(tenant: str | None, kept: frozenset[str]) -> str:
    if tenant is None:
        return NO_TENANT
    return tenant if tenant in kept else OTHER


def fold(rows: dict[Key, Row], labels: Iterable[str], top_n: int) -> dict[tuple[str, str], Row]:
    """`rows` with every tenant outside `labels` and the `top_n` busiest summed as `(other)`, and
    requests without a tenant as `(none)`: at most (len(labels) + top_n + 2) × 3 rows."""
    totals: dict[str | None, float] = {}
    for (tenant, _side), row in rows.items():
        totals[tenant] = totals.get(tenant, 0) + sum(row[:BUCKETS])
    kept = keep_apart(totals, labels, top_n)
    folded: dict[tuple[str, str], Row] = {}
    for (tenant, side), row in rows.items():
        key = (label_of(tenant, kept), side)
        target = folded.get(key)
        if target is None:
            folded[key] = list(row)
        else:
            for index, value in enumerate(row):
                target[index] += value
    return folded


def fold_shadow(
    window: dict[tuple[str, str], list[int]], labels: Iterable[str], top_n: int
) -> dict[str, list[int]]:
    """A shadow tally's window ((tenant, phase) → [compared, answered, divergent, new_errors]) per tenant
    under the same cap as requests, the busiest by comparisons; reads without a tenant are `(none)`."""
    totals: dict[str | None, float] = {}
    for (tenant, _phase), values in window.items():
        totals[tenant or None] = totals.get(tenant or None, 0) + values[0]
    kept = keep_apart(totals, labels, top_n)
    folded: dict[str, list[int]] = {}
    for (tenant, _phase), values in window.items():
        target = folded.setdefault(label_of(tenant or None, kept), [0, 0, 0, 0])
        for index, value in enumerate(values):
            target[index] += value
    return folded
