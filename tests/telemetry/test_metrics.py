"""`GET /metrics`: Prometheus text of the proxy's OpenTelemetry metrics, scraped after real traffic
through a real proxy (demo backends, PostgreSQL, Redis)."""

from __future__ import annotations

import asyncio
import platform
import time
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families

from buffer_worker.intent import Intent
from buffer_worker.keys import dead_letter_key, partition_of
from buffer_worker.worker import Worker
from proxy.admin.metrics import FLEET, SHADOW_OUTCOMES
from routing.phases import Phase, Side
from telemetry.tracing import cutover_version
from tests.support.demo_backends import DemoBackend
from tests.support.proxies import MemorySink, Proxy, ProxyBuilder, ProxyFactory, Tokens
from tests.support.redis_keys import PARTITIONS, REDIS_URL
from tests.support.servers import free_port
from tests.support.waits import wait_for
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
    # ...and per tenant label, for latency panels per tenant.
    assert value(after, "cutover_request_duration_seconds_count", tenant=tenant, **served) == 3
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
    metrics_proxy: Proxy,
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
    assert value(after, "cutover_buffer_tenant_pending", tenant=tenant, target="new", **FLEET) == 1
    partition = str(partition_of(tenant, PARTITIONS))
    assert value(after, "cutover_buffer_length", partition=partition, **FLEET) >= 1
    assert ("cutover_buffer_lag_seconds", frozenset({"partition": partition, **FLEET}.items())) in after
    assert value(after, "cutover_buffer_up") == 1
    changes = {"to": "dual_write", "trigger": "human", **FLEET}
    assert (
        value(after, "cutover_phase_changes_total", **changes)
        - value(before, "cutover_phase_changes_total", **changes)
        == 1
    )
    assert value(after, "cutover_tenants", phase="dual_write", **FLEET) >= 1
    assert value(after, "cutover_tenant_phase_info", tenant=tenant, phase="dual_write", **FLEET) == 1
    assert value(after, "cutover_tenant_phase_info", tenant=tenant, phase="legacy", **FLEET) == 0
    assert value(after, "cutover_phase_cache_loaded") == 1
    assert value(after, "cutover_phase_cache_staleness_seconds") == 0
    assert value(after, "cutover_spool_intents") == 0
    assert value(after, "cutover_spool_accepting") == 1


async def test_automatic_phase_changes_are_counted_apart(metrics_proxy: Proxy) -> None:
    proxy, tenant = metrics_proxy, fresh_tenant()
    before = await scrape(proxy.admin)
    await proxy.runtime.store.set_phase(tenant, Phase.DUAL_WRITE, actor="auto:canary", reason="rule")
    after = await scrape(proxy.admin)
    auto = {"to": "dual_write", "trigger": "auto", **FLEET}
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


def outcome(samples: Any, name: str) -> float:
    return value(samples, "cutover_shadow_reads_total", outcome=name)


async def test_shadow_outcomes_are_one_metric_and_the_noise_hook(
    metrics_proxy: Proxy, old: DemoBackend
) -> None:
    proxy, tenant = metrics_proxy, LABELLED[4]
    await old.seed(tenant, "s1", {"v": "old only"})  # new lacks it: the shadow read diverges
    await proxy.set_phase_api(tenant, Phase.SHADOW)
    before = await scrape(proxy.admin)
    assert (await proxy.client.get("/items/s1", headers=h(tenant))).status_code == 200

    def compared(samples: Any) -> float:
        return sum(outcome(samples, name) for name in ("equal", "noise", "divergent", "failed"))

    async def done() -> bool:
        return compared(await scrape(proxy.admin)) > compared(before)

    await wait_for(done, timeout_s=10)
    after = await scrape(proxy.admin)
    assert outcome(after, "divergent") - outcome(before, "divergent") == 1
    assert compared(after) - compared(before) == 1  # exclusive outcomes: the read counted once
    assert outcome(after, "noise") == 0
    # Every outcome is exported (0 included), as one metric; the per-outcome names are gone.
    exported = {dict(labels)["outcome"] for name, labels in after if name == "cutover_shadow_reads_total"}
    assert exported == set(SHADOW_OUTCOMES)
    assert not [
        name
        for name, _ in after
        if name.startswith("cutover_shadow_")
        and name.endswith("_total")
        and name != "cutover_shadow_reads_total"
    ]

    proxy.runtime.telemetry.shadow_counters["noise"] = lambda: 7
    try:
        assert outcome(await scrape(proxy.admin), "noise") == 7
    finally:
        del proxy.runtime.telemetry.shadow_counters["noise"]


async def test_worker_counters_and_dead_letters_come_from_redis(
    metrics_proxy: Proxy, redis_client: aioredis.Redis
) -> None:
    proxy, tenant = metrics_proxy, fresh_tenant()
    redis_prefix = proxy.runtime.settings.buffer.key_prefix
    before = await scrape(proxy.admin)
    worker = Worker(proxy.runtime.settings, applier=None, client=aioredis.Redis.from_url(REDIS_URL))  # type: ignore[arg-type]
    worker.stats.retries, worker.stats.applied, worker.stats.dead_lettered = 3, 5, 1
    worker.stats.duplicates, worker.stats.in_doubt = 2, 4
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
    for name, delta in (
        ("retries", 3),
        ("applied", 5),
        ("dead_lettered", 1),
        ("duplicates", 2),
        ("in_doubt", 4),
    ):
        metric = f"cutover_buffer_{name}_total"
        assert value(after, metric, **FLEET) - value(before, metric, **FLEET) == delta, name
    labels = {"partition": str(partition), **FLEET}
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
    assert telemetry is not None
    assert telemetry.series is not None
    assert not telemetry.metrics


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


async def test_build_info_and_process_metrics(metrics_proxy: Proxy) -> None:
    samples = await scrape(metrics_proxy.admin)
    [build] = [dict(labels) for name, labels in samples if name == "cutover_build_info"]
    assert build["version"] == cutover_version()
    assert build["python"] == platform.python_version()
    assert value(samples, "cutover_build_info", **build) == 1
    for name in ("process_cpu_seconds_total", "process_open_fds", "process_max_fds"):
        assert value(samples, name) > 0, name
    assert value(samples, "process_resident_memory_bytes") > 1024 * 1024
    assert 0 < value(samples, "process_start_time_seconds") <= time.time()


async def test_openmetrics_when_the_scraper_asks_for_it(metrics_proxy: Proxy) -> None:
    # What Prometheus sends: OpenMetrics preferred, the text format as a fallback.
    accept = (
        "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,"
        "text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
    )
    response = await metrics_proxy.admin.get("/metrics", headers={"Accept": accept})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
    assert response.text.endswith("# EOF\n")
    families = {family.name: family for family in openmetrics_families(response.text)}  # strict parser
    assert families["cutover_requests"].type == "counter"
    assert families["cutover_request_duration_seconds"].type == "histogram"
    assert families["process_cpu_seconds"].type == "counter"
    plain = await metrics_proxy.admin.get("/metrics")
    assert plain.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "# EOF" not in plain.text


async def test_a_502_is_counted_as_served_by_the_backend_its_header_names(make_proxy: ProxyFactory) -> None:
    tenant = fresh_tenant("bad")
    proxy = await make_proxy(
        {
            "backends": {"old": {"url": f"http://127.0.0.1:{free_port()}"}},
            "telemetry": {"tenant_labels": [tenant]},
        }
    )
    response = await proxy.client.get("/items/x", headers=h(tenant))
    assert response.status_code == 502
    served_by = response.headers["x-cutover-served-by"]
    assert served_by == "old"
    samples = await scrape(proxy.admin)
    [(labels, count)] = [
        (dict(found), n)
        for (name, found), n in samples.items()
        if name == "cutover_requests_total" and dict(found)["tenant"] == tenant
    ]
    assert count == 1
    assert labels["served_by"] == served_by
    assert labels["decision"] == "bad_gateway"
    assert labels["status_class"] == "5xx"


def fleet_series(samples: Any) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {key: n for key, n in samples.items() if ("scope", "fleet") in key[1]}


FLEET_METRICS = {
    "cutover_tenants",
    "cutover_tenant_phase_info",
    "cutover_phase_changes_total",
    "cutover_buffer_length",
    "cutover_buffer_pending",
    "cutover_buffer_lag_seconds",
    "cutover_buffer_dead_letters",
    "cutover_buffer_tenant_pending",
    "cutover_buffer_applied_total",
    "cutover_buffer_retries_total",
    "cutover_buffer_dead_lettered_total",
    "cutover_buffer_duplicates_total",
    "cutover_buffer_in_doubt_total",
}


async def test_fleet_series_are_the_same_on_every_proxy(
    metrics_proxy: Proxy, make_proxy: ProxyFactory
) -> None:
    """Summed over replicas, a fleet-wide gauge would count N times: every proxy reports the very same
    series (labelled scope="fleet", for max()), even where their own top-N tenant labels differ."""
    fleet = metrics_proxy.runtime.settings.buffer.key_prefix  # one fleet: one buffer
    second = await make_proxy(
        {"telemetry": {"tenant_labels": LABELLED, "tenant_top_n": 3}, "buffer": {"key_prefix": fleet}}
    )
    busy = fresh_tenant("busy")  # promoted to its own label by `second` only
    await second.set_phase_api(busy, Phase.DUAL_WRITE)
    for n in range(3):
        assert (await second.client.put(f"/items/b{n}", json={"v": n}, headers=h(busy))).status_code == 200
    await scrape(second.admin)  # promotes `busy` in second's per-process labels
    assert busy in second.runtime.telemetry.labels.labelled

    async def same() -> bool:
        first, other = (
            fleet_series(await scrape(metrics_proxy.admin)),
            fleet_series(await scrape(second.admin)),
        )
        # Lag is an age, read at each scrape's own moment: compare which series exist.
        lag = "cutover_buffer_lag_seconds"
        return {k for k in first if k[0] == lag} == {k for k in other if k[0] == lag} and {
            k: n for k, n in first.items() if k[0] != lag
        } == {k: n for k, n in other.items() if k[0] != lag}

    await wait_for(same, timeout_s=5)
    samples = await scrape(second.admin)
    assert {name for name, _labels in fleet_series(samples)} == FLEET_METRICS
    for (name, labels), _n in samples.items():
        assert (("scope", "fleet") in labels) is (name in FLEET_METRICS), name
    pending = [dict(labels) for name, labels in samples if name == "cutover_buffer_tenant_pending"]
    assert pending, "no pending intents: the test proved nothing"
    assert all(labels["tenant"] in {*LABELLED, "other"} for labels in pending)


async def test_ready_is_what_readyz_says(make_proxy: ProxyFactory) -> None:
    sink = MemorySink()
    proxy = await make_proxy(sink=sink)
    assert (await proxy.admin.get("/readyz")).status_code == 200
    assert value(await scrape(proxy.admin), "cutover_ready") == 1
    sink.accepting = False  # mirroring writes would be refused: not ready
    assert (await proxy.admin.get("/readyz")).status_code == 503
    assert value(await scrape(proxy.admin), "cutover_ready") == 0
    assert ("cutover_ready", frozenset()) in await scrape(proxy.admin)
