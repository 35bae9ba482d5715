"""The per-tenant health history: counts of several processes add up in one row per (tenant, side,
bucket), latency quantiles come from the summed fixed buckets, rows past the retention are pruned, and
tenants beyond the cap are summed as (other) so that a bucket's rows stay bounded whatever the traffic.
Real PostgreSQL; the in-memory parts (`SideSeries`, `fold`) as the data plane and the recorder use them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from config.operator import HealthSettings
from proxy.control.schema import ensure_schema
from proxy.health.figures import quantile_ms, series, window
from proxy.health.recorder import HealthRecorder, fold_backlog
from proxy.health.series import BUCKETS, ERRORS, NO_TENANT, OTHER, SideSeries, fold, fold_shadow
from proxy.health.store import prune, write_shadow

SETTINGS = HealthSettings(bucket_s=10, top_tenants=2)


@pytest.fixture(scope="module")
async def pool(pg_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(pg_url, min_size=1, max_size=4)
    async with pool.acquire() as conn:
        await ensure_schema(conn)
    yield pool
    await pool.close()


def name(prefix: str = "h") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def rows_of(pool: asyncpg.Pool, tenants: list[str]) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await pool.fetch(
        "SELECT * FROM cutover_health_side WHERE tenant = ANY($1::text[]) ORDER BY tenant, side", tenants
    )
    return rows


async def test_two_processes_add_up_in_one_row_per_tenant_side_and_bucket(pool: asyncpg.Pool) -> None:
    tenant = name()
    first, second = SideSeries(capacity=512), SideSeries(capacity=512)
    for _ in range(90):
        first.record(tenant, "old", 0.0008, 200, "respond")  # bucket (0.5, 1] ms
    for _ in range(10):
        first.record(tenant, "old", 0.2, 502, "bad_gateway")  # bucket (150, 250] ms
    for _ in range(40):
        second.record(tenant, "new", 0.004, 200, "respond")
    second.record(tenant, "new", 0.004, 200, "fallback")  # new failed, old served it
    for _ in range(60):
        second.record(tenant, "old", 0.0008, 200, "respond")
    recorders = [HealthRecorder(pool, SETTINGS, s, labels=[tenant]) for s in (first, second)]
    # Both processes write within one transaction's clock reading apart: pin them to the same bucket.
    async with pool.acquire() as conn, conn.transaction():
        for recorder in recorders:
            recorder._pool = conn
            assert await recorder.flush() > 0
    rows = await rows_of(pool, [tenant])
    assert [(r["side"], r["requests"], r["errors"], r["fallbacks"]) for r in rows] == [
        ("new", 41, 1, 1),
        ("old", 160, 10, 0),
    ]
    assert rows[1]["bucket"] == rows[0]["bucket"], "one bucket for both processes"
    assert rows[1]["l01"] == 150
    assert rows[1]["l13"] == 10

    figures = await window(pool, tenant, SETTINGS, 300)
    old = figures["sides"]["old"]
    assert (old["requests"], old["errors"], old["error_rate"]) == (160, 10, 0.0625)
    assert 0.5 < old["p50_ms"] <= 1.0  # the fast bucket
    assert 150 < old["p99_ms"] <= 250  # the slow bucket: only the sum of both processes puts it there
    assert figures["sides"]["new"]["fallbacks"] == 1
    assert old["rate_per_s"] == pytest.approx(160 / figures["window_s"], rel=0.01)


async def test_a_failed_write_keeps_its_counts_for_the_next(pool: asyncpg.Pool, pg_url: str) -> None:
    tenant = name()
    series_ = SideSeries(capacity=512)
    series_.record(tenant, "old", 0.001, 200, "respond")
    down = await asyncpg.create_pool(pg_url, min_size=0, max_size=1)
    await down.close()  # a store that does not answer
    recorder = HealthRecorder(down, SETTINGS, series_, labels=[tenant])
    assert await recorder.flush() == 0
    assert recorder.failed_writes == 1
    series_.record(tenant, "old", 0.001, 200, "respond")
    recorder._pool = pool  # the store is back
    assert await recorder.flush() == 1
    assert [r["requests"] for r in await rows_of(pool, [tenant])] == [2]


def test_the_cap_keeps_labels_and_the_busiest_and_sums_the_rest_as_other() -> None:
    series_ = SideSeries(capacity=512)
    traffic = {"busy-a": 50, "busy-b": 40, "quiet-c": 3, "quiet-d": 2, "labelled-e": 1}
    for tenant, n in traffic.items():
        for _ in range(n):
            series_.record(tenant, "old", 0.001, 200, "respond")
    series_.record(None, "proxy", 0.0001, 400, "rejected")
    folded = fold(series_.take(), labels=["labelled-e"], top_n=2)
    requests = {key: int(sum(row[:BUCKETS])) for key, row in folded.items()}
    assert requests == {
        ("busy-a", "old"): 50,
        ("busy-b", "old"): 40,
        ("labelled-e", "old"): 1,
        (OTHER, "old"): 5,  # quiet-c and quiet-d
        (NO_TENANT, "proxy"): 1,
    }


def test_a_full_window_counts_new_tenants_as_other_at_once() -> None:
    series_ = SideSeries(capacity=4)
    for n in range(10):
        series_.record(f"t{n}", "old", 0.001, 503, "respond")
    taken = series_.take()
    assert len(taken) == 5
    assert series_.overflowed == 6
    assert taken[(OTHER, "old")][ERRORS] == 6
    # The overflow, though the largest, takes none of the busiest places: t0..t3 keep theirs.
    assert set(fold(taken, labels=[], top_n=4)) == {(f"t{n}", "old") for n in range(4)} | {(OTHER, "old")}


async def test_rows_per_bucket_stay_bounded_whatever_the_tenants(pool: asyncpg.Pool) -> None:
    run = name("cap")
    series_ = SideSeries(capacity=10_000)
    for n in range(300):  # 300 tenants, each on both sides
        for side in ("old", "new"):
            series_.record(f"{run}-{n:03d}", side, 0.001, 200, "respond")
    recorder = HealthRecorder(pool, HealthSettings(top_tenants=5), series_, labels=[])
    written = await recorder.flush()
    assert written == (5 + 1) * 2  # five busiest and (other), per side
    stored = await pool.fetchval("SELECT count(*) FROM cutover_health_side WHERE tenant LIKE $1 || '-%'", run)
    assert stored == 5 * 2


async def test_prune_deletes_buckets_past_the_retention_only(pool: asyncpg.Pool) -> None:
    tenant = name()
    series_ = SideSeries(capacity=512)
    series_.record(tenant, "old", 0.001, 200, "respond")
    await HealthRecorder(pool, SETTINGS, series_, labels=[tenant]).flush()
    await write_shadow(pool, {tenant: [4, 3, 1, 1]}, 10)
    # An hour and a half ago: past the default retention of 65 minutes.
    await pool.execute(
        "INSERT INTO cutover_health_side (tenant, side, bucket, requests)"
        " VALUES ($1, 'old', now() - interval '90 minutes', 7)",
        tenant,
    )
    await pool.execute(
        "INSERT INTO cutover_health_shadow (tenant, bucket, compared)"
        " VALUES ($1, now() - interval '90 minutes', 7)",
        tenant,
    )
    assert await pool.fetchval("SELECT count(*) FROM cutover_health_side WHERE tenant = $1", tenant) == 2
    deleted = await prune(pool, HealthSettings().retention_s)
    assert deleted >= 2
    left = await pool.fetch("SELECT requests FROM cutover_health_side WHERE tenant = $1", tenant)
    assert [r["requests"] for r in left] == [1]
    shadow = await pool.fetch("SELECT compared FROM cutover_health_shadow WHERE tenant = $1", tenant)
    assert [r["compared"] for r in shadow] == [4]


async def test_series_points_and_shadow_rates(pool: asyncpg.Pool) -> None:
    tenant = name()
    series_ = SideSeries(capacity=512)
    for status in (200, 200, 500, 200):
        series_.record(tenant, "new", 0.002, status, "respond")
    await HealthRecorder(pool, SETTINGS, series_, labels=[tenant]).flush()
    await write_shadow(pool, {tenant: [10, 8, 2, 3]}, 10)
    points = await series(pool, [tenant], SETTINGS, span_s=600, step_s=60)
    assert len(points["t"]) == len(points["seconds"]) == 11  # ten whole minutes and the current one
    mine = points["tenants"][tenant]
    assert mine["sides"]["new"]["requests"][-1] == 4
    assert mine["sides"]["new"]["error_rate"][-1] == 0.25
    assert mine["sides"]["old"]["requests"][-1] == 0
    assert mine["sides"]["old"]["p99_ms"][-1] is None
    # 2 divergent of 8 answered; 3 new-side errors of 10 compared (failed reads are not divergent).
    assert mine["divergence_rate"][-1] == 0.25
    assert mine["new_error_rate"][-1] == 0.3
    figures = await window(pool, tenant, SETTINGS, 300)
    assert figures["shadow"] == {
        "compared": 10,
        "answered": 8,
        "failed": 2,
        "divergent": 2,
        "new_errors": 3,
        "divergence_rate": 0.25,
        "new_error_rate": 0.3,
    }


def test_shadow_and_backlog_folds_keep_the_same_cap() -> None:
    window_ = {
        ("a", "shadow"): [10, 9, 1, 0],
        ("a", "live"): [5, 5, 0, 0],
        ("b", "shadow"): [3, 3, 0, 0],
        ("c", "shadow"): [1, 1, 1, 1],
        ("", "shadow"): [2, 2, 0, 0],
    }
    assert fold_shadow(window_, ["c"], 1) == {
        "a": [15, 14, 1, 0],
        "c": [1, 1, 1, 1],
        OTHER: [3, 3, 0, 0],
        NO_TENANT: [2, 2, 0, 0],
    }
    gauges = {
        "partitions": [{"partition": 0, "lag_s": 4.0}, {"partition": 1, "lag_s": 9.0}],
        "tenant_pending": {("a", "new"): 5, ("b", "new"): 1, ("c", "old"): 2, ("d", "new"): 0},
    }
    folded = fold_backlog(gauges, 2, [], 1)
    assert set(folded) == {("a", "new"), (OTHER, "new"), (OTHER, "old")}
    assert folded[("a", "new")][0] == 5
    assert folded[(OTHER, "new")][0] == 1


def test_quantiles_from_fixed_buckets() -> None:
    counts = [0] * 22
    assert quantile_ms(counts, 0.5) is None
    counts[1] = 100  # all in (0.5, 1] ms
    assert quantile_ms(counts, 0.5) == 0.75
    counts[21] = 100  # half of them above the last bound: p99 is "at least the last bound"
    assert quantile_ms(counts, 0.99) == 10_000.0
