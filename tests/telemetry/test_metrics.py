"""`GET /metrics`: Prometheus text of the proxy's OpenTelemetry metrics, scraped after real traffic
through a real proxy (demo backends, PostgreSQL, Redis)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis

from buffer_worker.intent import Intent
from buffer_worker.keys import dead_letter_key, partition_of
from buffer_worker.worker import Worker
from proxy.metrics import SHADOW_OUTCOMES
from routing.phases import Phase, Side
from tests.conftest import (
    PARTITIONS,
    REDIS_URL,
    DemoBackend,
    Proxy,
    ProxyBuilder,
    ProxyFactory,
    Tokens,
    wait_for,
)
from tests.telemetry.scraping import fresh_tenant, scrape, total, value

LABELLED = [fresh_tenant("lab") for _ in range(6)]


def h(tenant: str) -> dict[str, str]:
    return {"X-Tenant-ID": tenant}


@pytest.fixture(scope="session")
async def metrics_proxy(shared_builder: ProxyBuilder) -> Proxy:
    return await shared_builder.start({"telemetry": {"tenant_labels": LABELLED}})


def requests_of(samples: Any, tenant: str, **labels: str) -> float:
    return total(samples, "cutover_requests_total", tenant=tenant, **labels)


async def test_reads_are_counted_per_labelled_tenant_and_other(
    metrics_proxy: Proxy, old: DemoBackend
) -> None:
    proxy, tenant, unlabelled = metrics_proxy, LABELLED[0], fresh_tenant()
    await old.seed(tenant, "m1", {"v": 1})
    before = await scrape(proxy.admin)
    for _ in range(3):
        assert (await proxy.client.get("/items/m1", headers=h(tenant))).status_code == 200
    for _ in range(2):
        assert (await proxy.client.get("/items/m1", headers=h(unlabelled))).status_code == 404
    assert (await proxy.client.get("/items/m1")).status_code in (200, 404)  # no tenant header
    after = await scrape(proxy.admin)

    key = {"phase": "legacy", "kind": "read", "decision": "respond", "served_by": "old"}
    assert value(after, "cutover_requests_total", tenant=tenant, status_class="2xx", **key) == 3
    assert (
        requests_of(after, "other", status_class="4xx", **key)
        - requests_of(before, "other", status_class="4xx", **key)
        == 2
    )
    assert requests_of(after, "none", **key) - requests_of(before, "none", **key) == 1
    assert not any(dict(labels).get("tenant") == unlabelled for _name, labels in after)
    # Latency histograms counted every one of the 6 requests, served by old.
    backend = {"backend": "old", "role": "serving"}
    assert (
        total(after, "cutover_backend_request_duration_seconds_count", **backend)
        - total(before, "cutover_backend_request_duration_seconds_count", **backend)
        == 6
    )
    served = {"phase": "legacy", "kind": "read", "served_by": "old"}
    assert (
        total(after, "cutover_request_duration_seconds_count", **served)
        - total(before, "cutover_request_duration_seconds_count", **served)
        == 6
    )
    inf = value(after, "cutover_backend_request_duration_seconds_bucket", le="+Inf", **backend)
    assert inf == value(after, "cutover_backend_request_duration_seconds_count", **backend)
    assert value(after, "cutover_backend_request_duration_seconds_sum", **backend) > 0


async def test_rejected_requests_are_the_proxys_own(metrics_proxy: Proxy) -> None:
    proxy, tenant = metrics_proxy, LABELLED[1]
    response = await proxy.client.post("/items", content=b"x" * (65 * 1024), headers=h(tenant))
    assert response.status_code == 413
    samples = await scrape(proxy.admin)
    assert (
        value(
            samples,
            "cutover_requests_total",
            tenant=tenant,
            phase="unknown",
            kind="write",
            decision="rejected",
            served_by="proxy",
            status_class="4xx",
        )
        == 1
    )


async def test_mirrored_write_shows_in_buffer_and_phase_metrics(
    metrics_proxy: Proxy, redis_prefix: str
) -> None:
    proxy, tenant = metrics_proxy, LABELLED[2]
    before = await scrape(proxy.admin)
    await proxy.set_phase_api(tenant, Phase.DUAL_WRITE)
    response = await proxy.client.put("/items/w1", json={"v": 1}, headers=h(tenant))
    assert response.status_code == 200
    after = await scrape(proxy.admin)

    assert (
        value(
            after,
            "cutover_requests_total",
            tenant=tenant,
            phase="dual_write",
            kind="write",
            decision="respond",
            served_by="old",
            status_class="2xx",
        )
        == 1
    )
    assert (
        value(after, "cutover_intents_appended_total") - value(before, "cutover_intents_appended_total") == 1
    )
    # No worker runs in this test: the intent stays pending toward new.
    assert value(after, "cutover_buffer_tenant_pending", tenant=tenant, target="new") == 1
    partition = str(partition_of(tenant, PARTITIONS))
    assert value(after, "cutover_buffer_length", partition=partition) >= 1
    assert value(after, "cutover_buffer_lag_seconds", partition=partition) >= 0
    assert value(after, "cutover_buffer_up") == 1
    changes = {"to": "dual_write", "trigger": "human"}
    assert (
        value(after, "cutover_phase_changes_total", **changes)
        - value(before, "cutover_phase_changes_total", **changes)
        == 1
    )
    assert value(after, "cutover_tenants", phase="dual_write") >= 1
    assert value(after, "cutover_phase_cache_loaded") == 1
    assert value(after, "cutover_phase_cache_staleness_seconds") == 0
    assert value(after, "cutover_spool_intents") == 0
    assert value(after, "cutover_spool_accepting") == 1


async def test_automatic_phase_changes_are_counted_apart(metrics_proxy: Proxy) -> None:
    proxy, tenant = metrics_proxy, fresh_tenant()
    before = await scrape(proxy.admin)
    await proxy.runtime.store.set_phase(tenant, Phase.DUAL_WRITE, actor="auto:canary", reason="rule")
    after = await scrape(proxy.admin)
    auto = {"to": "dual_write", "trigger": "auto"}
    assert (
        value(after, "cutover_phase_changes_total", **auto)
        - value(before, "cutover_phase_changes_total", **auto)
        == 1
    )


async def test_fallback_is_a_decision_served_by_old(
    metrics_proxy: Proxy, old: DemoBackend, new: DemoBackend
) -> None:
    proxy, tenant = metrics_proxy, LABELLED[3]
    await old.seed(tenant, "f1", {"from": "old"})
    await proxy.set_phase_api(tenant, Phase.LIVE)
    await new.control(fail_reads=True)
    before = await scrape(proxy.admin)
    response = await proxy.client.get("/items/f1", headers=h(tenant))
    assert response.status_code == 200
    after = await scrape(proxy.admin)
    assert (
        value(
            after,
            "cutover_requests_total",
            tenant=tenant,
            phase="live",
            kind="read",
            decision="fallback",
            served_by="old",
            status_class="2xx",
        )
        == 1
    )
    assert (
        value(after, "cutover_fallbacks_total", phase="live")
        - value(before, "cutover_fallbacks_total", phase="live")
        == 1
    )
    # Both backend calls were timed: the failed serving call to new, then the fallback to old.
    for backend, role in (("new", "serving"), ("old", "fallback")):
        labels = {"backend": backend, "role": role}
        assert (
            total(after, "cutover_backend_request_duration_seconds_count", **labels)
            - total(before, "cutover_backend_request_duration_seconds_count", **labels)
            == 1
        )


async def test_shadow_outcomes_and_the_noise_hook(metrics_proxy: Proxy, old: DemoBackend) -> None:
    proxy, tenant = metrics_proxy, LABELLED[4]
    await old.seed(tenant, "s1", {"v": "old only"})  # new lacks it: the shadow read diverges
    await proxy.set_phase_api(tenant, Phase.SHADOW)
    before = await scrape(proxy.admin)
    assert (await proxy.client.get("/items/s1", headers=h(tenant))).status_code == 200

    async def compared() -> bool:
        now = await scrape(proxy.admin)
        return value(now, "cutover_shadow_compared_total") > value(before, "cutover_shadow_compared_total")

    await wait_for(compared, timeout_s=10)
    after = await scrape(proxy.admin)
    assert (
        value(after, "cutover_shadow_divergent_total") - value(before, "cutover_shadow_divergent_total") == 1
    )
    assert value(after, "cutover_shadow_noise_total") == 0
    for outcome in SHADOW_OUTCOMES:
        assert ("cutover_shadow_" + outcome + "_total", frozenset()) in after

    proxy.runtime.telemetry.shadow_counters["noise"] = lambda: 7
    try:
        assert value(await scrape(proxy.admin), "cutover_shadow_noise_total") == 7
    finally:
        del proxy.runtime.telemetry.shadow_counters["noise"]


async def test_worker_counters_and_dead_letters_come_from_redis(
    metrics_proxy: Proxy, redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    proxy, tenant = metrics_proxy, fresh_tenant()
    before = await scrape(proxy.admin)
    worker = Worker(proxy.runtime.settings, applier=None, client=aioredis.Redis.from_url(REDIS_URL))  # type: ignore[arg-type]
    worker.stats.retries, worker.stats.applied, worker.stats.dead_lettered = 3, 5, 1
    await worker._publish_stats()
    await worker._publish_stats()  # nothing new: adds nothing
    partition = partition_of(tenant, PARTITIONS)
    intent = Intent(
        tenant=tenant,
        target=Side.NEW,
        method="PUT",
        path="/items/d",
        query="",
        headers=(),
        body=b"{}",
        status=200,
        response_body=b"{}",
    )
    await redis_client.xadd(dead_letter_key(redis_prefix, partition), intent.to_fields())  # type: ignore[arg-type]
    after = await scrape(proxy.admin)
    for name, delta in (("retries", 3), ("applied", 5), ("dead_lettered", 1)):
        metric = f"cutover_buffer_{name}_total"
        assert value(after, metric) - value(before, metric) == delta, name
    labels = {"partition": str(partition)}
    assert (
        value(after, "cutover_buffer_dead_letters", **labels)
        - value(before, "cutover_buffer_dead_letters", **labels)
        == 1
    )
    await worker._redis.aclose()


async def test_metrics_need_a_token_by_default(metrics_proxy: Proxy, tokens: Tokens) -> None:
    anonymous = await metrics_proxy.anon_admin.get("/metrics")
    assert anonymous.status_code == 401
    assert anonymous.json()["error"] == "unauthorized"
    assert anonymous.headers["www-authenticate"] == "Bearer"
    read = await metrics_proxy.anon_admin.get("/metrics", headers={"Authorization": f"Bearer {tokens.read}"})
    assert read.status_code == 200
    assert "cutover_requests_total" in read.text


async def test_open_metrics_and_metrics_off(make_proxy: ProxyFactory) -> None:
    open_proxy = await make_proxy({"telemetry": {"metrics_auth": "none"}})
    assert (await open_proxy.anon_admin.get("/metrics")).status_code == 200
    off = await make_proxy({"telemetry": {"metrics": False}, "operator": {"health": {"enabled": False}}})
    response = await off.admin.get("/metrics")
    assert response.status_code == 404
    assert response.json()["error"] == "metrics_disabled"
    assert off.runtime.data_plane._telemetry is None  # no per-request telemetry at all
    # The health history counts per request on its own: metrics off, it still does.
    health_only = await make_proxy({"telemetry": {"metrics": False}})
    telemetry = health_only.runtime.data_plane._telemetry
    assert telemetry is not None and telemetry.series is not None and not telemetry.metrics


async def test_top_n_promotes_the_busiest_tenant_at_a_scrape(make_proxy: ProxyFactory) -> None:
    proxy = await make_proxy({"telemetry": {"tenant_top_n": 1}})
    busy, quiet = fresh_tenant("busy"), fresh_tenant("quiet")
    for _ in range(4):
        await proxy.client.get("/items/x", headers=h(busy))
    await proxy.client.get("/items/x", headers=h(quiet))
    first = await scrape(proxy.admin)  # counted as other until now; this scrape promotes `busy`
    assert requests_of(first, "other") == 5
    await asyncio.gather(*(proxy.client.get("/items/x", headers=h(t)) for t in (busy, quiet, quiet)))
    second = await scrape(proxy.admin)
    assert requests_of(second, busy) == 1
    assert requests_of(second, "other") == 7  # quiet stays other: the one top-N slot is taken
    assert not any(dict(labels).get("tenant") == quiet for _name, labels in second)


async def test_the_grafana_dashboards_metrics_are_all_exported(metrics_proxy: Proxy) -> None:
    """docs/grafana-dashboard.json queries exactly the metrics in its test's contract (METRICS); a real
    scrape must carry each of them, with those labels."""
    from tests.docs.test_grafana_dashboard import METRICS

    proxy, tenant = metrics_proxy, fresh_tenant("dash")
    await proxy.set_phase_api(tenant, Phase.DUAL_WRITE)  # a phase change, a tenant, a mirrored write
    assert (await proxy.client.put("/items/d1", json={"v": 1}, headers=h(tenant))).status_code == 200
    assert (await proxy.client.get("/items/d1", headers=h(tenant))).status_code == 200
    samples = await scrape(proxy.admin)
    for name, labels in METRICS.items():
        found = [set(dict(found_labels)) for sample_name, found_labels in samples if sample_name == name]
        assert found, f"{name} is on the dashboard but not in /metrics"
        assert any(labels == keys for keys in found), f"{name}: labels {labels} vs exported {found}"


async def test_sql_requests_are_counted_by_what_their_statements_do(shared_builder: ProxyBuilder) -> None:
    """A POST to a SQL endpoint is a read when its statements read, for the tenant they pin."""
    tenant = fresh_tenant("sql")
    proxy = await shared_builder.start(
        {
            "telemetry": {"tenant_labels": [tenant]},
            "backends": {"old": {"sql_dialect": "postgres"}, "new": {"sql_dialect": "postgres"}},
            "sql": {"endpoints": [{"path": "/query"}], "covered_tables": ["orders"]},
        }
    )
    statements = {
        "read": f"SELECT * FROM orders WHERE tenant_id = '{tenant}'",
        "write": f"UPDATE orders SET total = 1 WHERE tenant_id = '{tenant}' AND id = 1",
        "locking read": f"SELECT * FROM orders WHERE tenant_id = '{tenant}' AND id = 1 FOR UPDATE",
    }
    classes = {}
    for name, sql in statements.items():
        response = await proxy.client.post("/query", json={"sql": sql})  # no tenant header
        assert response.headers["x-cutover-served-by"] == "old"
        classes[name] = f"{response.status_code // 100}xx"
    samples = await scrape(proxy.admin)
    key = {"tenant": tenant, "phase": "legacy", "decision": "respond", "served_by": "old"}
    assert value(samples, "cutover_requests_total", kind="read", status_class=classes["read"], **key) == 1
    # A locking read takes row locks where writes go: it is counted with the writes.
    writes = {"kind": "write", "status_class": classes["write"], **key}
    assert value(samples, "cutover_requests_total", **writes) == 2
    served = {"phase": "legacy", "served_by": "old"}
    assert total(samples, "cutover_request_duration_seconds_count", kind="read", **served) >= 1
