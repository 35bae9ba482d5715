"""The per-tenant time series in PostgreSQL: three small tables of fixed-width buckets, written as
increments by every process that counts, read by the health view and the status page.

    cutover_health_side     (tenant, side, bucket)  requests, errors, fallbacks, latency sum and one count
                                                    per fixed latency bucket (l00..): every data-plane process
    cutover_health_shadow   (tenant, bucket)        compared, answered, divergent, new_errors: every shadow
                                                    process, with its divergence counters
    cutover_health_backlog  (tenant, side, bucket)  pending intents toward the side and the age of the oldest
                                                    unapplied intent of the tenant's partition: one process
                                                    per proxy, sampling Redis once per bucket

A bucket is `bucket_s` wide and stamped by the database's clock at write time (`now()` floored), so
proxies on hosts with skewed clocks add into the same bucket. Request and shadow rows are increments
(`x = x + EXCLUDED.x`): any number of processes sum up in one row. Backlog rows are samples of one
global state, so samplers keep the largest (`GREATEST`), whichever writes first.

Bounded: writers fold tenants beyond their cap into `(other)` (`proxy.health.series`), so a bucket has at
most a few hundred rows whatever the traffic, and `prune` deletes buckets older than the retention.
Latency counts are columns rather than an array so that SQL can sum them per point of a series.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import asyncpg

from proxy.control.tenant_archive import not_archived
from proxy.health.series import BUCKETS, ERRORS, FALLBACKS, SUM, Row

LATENCY_COLUMNS = tuple(f"l{index:02d}" for index in range(BUCKETS))
_LATENCY_DDL = ",\n".join(f"    {column} bigint NOT NULL DEFAULT 0" for column in LATENCY_COLUMNS)
_BUCKET = "to_timestamp(floor(extract(epoch FROM now()) / $1) * $1)"

HEALTH_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS cutover_health_side (
    tenant         text NOT NULL,
    side           text NOT NULL,
    bucket         timestamptz NOT NULL,
    requests       bigint NOT NULL DEFAULT 0,
    errors         bigint NOT NULL DEFAULT 0,
    fallbacks      bigint NOT NULL DEFAULT 0,
    latency_sum_s  double precision NOT NULL DEFAULT 0,
{_LATENCY_DDL},
    PRIMARY KEY (tenant, side, bucket)
);
CREATE INDEX IF NOT EXISTS cutover_health_side_bucket ON cutover_health_side (bucket);
CREATE TABLE IF NOT EXISTS cutover_health_shadow (
    tenant      text NOT NULL,
    bucket      timestamptz NOT NULL,
    compared    bigint NOT NULL DEFAULT 0,
    answered    bigint NOT NULL DEFAULT 0,
    divergent   bigint NOT NULL DEFAULT 0,
    new_errors  bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, bucket)
);
CREATE INDEX IF NOT EXISTS cutover_health_shadow_bucket ON cutover_health_shadow (bucket);
CREATE TABLE IF NOT EXISTS cutover_health_backlog (
    tenant      text NOT NULL,
    side        text NOT NULL,
    bucket      timestamptz NOT NULL,
    pending     bigint NOT NULL DEFAULT 0,
    oldest_s    double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, side, bucket)
);
CREATE INDEX IF NOT EXISTS cutover_health_backlog_bucket ON cutover_health_backlog (bucket);
"""

_ADD_LATENCY = ", ".join(f"{c} = s.{c} + EXCLUDED.{c}" for c in LATENCY_COLUMNS)
_INSERT_SIDE = (
    "INSERT INTO cutover_health_side AS s"
    f" (tenant, side, bucket, requests, errors, fallbacks, latency_sum_s, {', '.join(LATENCY_COLUMNS)})"
    f" VALUES ($2, $3, {_BUCKET}, $4, $5, $6, $7, "
    + ", ".join(f"${index + 8}" for index in range(BUCKETS))
    + ") ON CONFLICT (tenant, side, bucket) DO UPDATE SET requests = s.requests + EXCLUDED.requests,"
    " errors = s.errors + EXCLUDED.errors, fallbacks = s.fallbacks + EXCLUDED.fallbacks,"
    f" latency_sum_s = s.latency_sum_s + EXCLUDED.latency_sum_s, {_ADD_LATENCY}"
)
_INSERT_SHADOW = (
    "INSERT INTO cutover_health_shadow AS h (tenant, bucket, compared, answered, divergent, new_errors)"
    f" VALUES ($2, {_BUCKET}, $3, $4, $5, $6) ON CONFLICT (tenant, bucket) DO UPDATE SET"
    " compared = h.compared + EXCLUDED.compared, answered = h.answered + EXCLUDED.answered,"
    " divergent = h.divergent + EXCLUDED.divergent, new_errors = h.new_errors + EXCLUDED.new_errors"
)
_INSERT_BACKLOG = (
    "INSERT INTO cutover_health_backlog AS b (tenant, side, bucket, pending, oldest_s)"
    f" VALUES ($2, $3, {_BUCKET}, $4, $5) ON CONFLICT (tenant, side, bucket) DO UPDATE SET"
    " pending = GREATEST(b.pending, EXCLUDED.pending), oldest_s = GREATEST(b.oldest_s, EXCLUDED.oldest_s)"
)
HEALTH_TABLES = ("cutover_health_side", "cutover_health_shadow", "cutover_health_backlog")


async def write_requests(
    conn: asyncpg.Connection | asyncpg.Pool, rows: Mapping[tuple[str, str], Row], bucket_s: int
) -> None:
    if rows:
        await conn.executemany(
            _INSERT_SIDE,
            [
                (
                    bucket_s,
                    tenant,
                    side,
                    int(sum(row[:BUCKETS])),
                    int(row[ERRORS]),
                    int(row[FALLBACKS]),
                    float(row[SUM]),
                    *(int(n) for n in row[:BUCKETS]),
                )
                for (tenant, side), row in rows.items()
            ],
        )


async def write_shadow(
    conn: asyncpg.Connection | asyncpg.Pool, rows: Mapping[str, Sequence[int]], bucket_s: int
) -> None:
    """`rows`: tenant → (compared, answered, divergent, new_errors)."""
    if rows:
        await conn.executemany(
            _INSERT_SHADOW, [(bucket_s, tenant, *map(int, values)) for tenant, values in rows.items()]
        )


async def write_backlog(
    conn: asyncpg.Connection | asyncpg.Pool, rows: Mapping[tuple[str, str], tuple[int, float]], bucket_s: int
) -> None:
    """`rows`: (tenant, side) → (pending intents, age of the oldest in seconds)."""
    if rows:
        await conn.executemany(
            _INSERT_BACKLOG,
            [(bucket_s, tenant, side, pending, oldest) for (tenant, side), (pending, oldest) in rows.items()],
        )


async def prune(pool: asyncpg.Pool | asyncpg.Connection, retention_s: float) -> int:
    """Delete buckets older than `retention_s`; return how many rows went."""
    deleted = 0
    for table in HEALTH_TABLES:
        status = await pool.execute(
            f"DELETE FROM {table} WHERE bucket < now() - make_interval(secs => $1)", float(retention_s)
        )
        deleted += int(status.rsplit(" ", 1)[-1])
    return deleted


# -- reads ----------------------------------------------------------------------------------------------
async def clock(pool: asyncpg.Pool, bucket_s: int, span_s: float) -> tuple[Any, Any]:
    """The database's now and the start of a span of `span_s` seconds ending with the current (partial)
    bucket: series and windows are cut on the clock their buckets were stamped with."""
    row = await pool.fetchrow(
        f"SELECT now() AS now, {_BUCKET} - make_interval(secs => $2) AS start", bucket_s, float(span_s)
    )
    assert row is not None
    return row["now"], row["start"]


async def side_points(
    pool: asyncpg.Pool, tenants: Iterable[str], start: Any, step_s: int
) -> list[asyncpg.Record]:
    """Per (tenant, side, point k): sums of every column, a point being `step_s` of buckets from `start`."""
    sums = ", ".join(f"sum({c})::bigint AS {c}" for c in LATENCY_COLUMNS)
    rows: list[asyncpg.Record] = await pool.fetch(
        "SELECT tenant, side, floor(extract(epoch FROM bucket - $2::timestamptz) / $3)::int AS k,"
        " sum(requests)::bigint AS requests, sum(errors)::bigint AS errors,"
        f" sum(fallbacks)::bigint AS fallbacks, sum(latency_sum_s) AS latency_sum_s, {sums}"
        " FROM cutover_health_side WHERE tenant = ANY($1::text[]) AND bucket >= $2 GROUP BY 1, 2, 3",
        list(tenants),
        start,
        float(step_s),
    )
    return rows


async def shadow_points(
    pool: asyncpg.Pool, tenants: Iterable[str], start: Any, step_s: int
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await pool.fetch(
        "SELECT tenant, floor(extract(epoch FROM bucket - $2::timestamptz) / $3)::int AS k,"
        " sum(compared)::bigint AS compared, sum(answered)::bigint AS answered,"
        " sum(divergent)::bigint AS divergent, sum(new_errors)::bigint AS new_errors"
        " FROM cutover_health_shadow WHERE tenant = ANY($1::text[]) AND bucket >= $2 GROUP BY 1, 2",
        list(tenants),
        start,
        float(step_s),
    )
    return rows


async def backlog_points(
    pool: asyncpg.Pool, tenants: Iterable[str], start: Any, step_s: int
) -> list[asyncpg.Record]:
    """The largest sample per point: a backlog is a level, not a count to add up."""
    rows: list[asyncpg.Record] = await pool.fetch(
        "SELECT tenant, side, floor(extract(epoch FROM bucket - $2::timestamptz) / $3)::int AS k,"
        " max(pending)::bigint AS pending, max(oldest_s) AS oldest_s"
        " FROM cutover_health_backlog WHERE tenant = ANY($1::text[]) AND bucket >= $2 GROUP BY 1, 2, 3",
        list(tenants),
        start,
        float(step_s),
    )
    return rows


async def busiest(pool: asyncpg.Pool, start: Any, limit: int) -> list[str]:
    """The tenants with the most requests (then comparisons, then backlog) since `start`; archived
    tenants are left out (`proxy.control.tenant_archive`)."""
    rows = await pool.fetch(
        "SELECT tenant, sum(n) AS n FROM ("
        " SELECT tenant, requests AS n FROM cutover_health_side WHERE bucket >= $1"
        " UNION ALL SELECT tenant, compared FROM cutover_health_shadow WHERE bucket >= $1"
        " UNION ALL SELECT tenant, pending FROM cutover_health_backlog WHERE bucket >= $1"
        f") AS t WHERE {not_archived('t.tenant')} GROUP BY tenant ORDER BY n DESC, tenant LIMIT $2",
        start,
        limit,
    )
    return [row["tenant"] for row in rows]
