"""docs/alerts.yaml: Prometheus alerting rules that use only what the proxy exports, and that fire on the
conditions they name when evaluated, by Prometheus's own `promtool test rules`, against real scrapes.

Two proxies of one fleet (one Redis key prefix) are scraped while healthy and again after the
conditions were produced through them: divergent shadow reads, a read refused a fallback, a dead-letter
made by a real worker, intents no worker applies, and a proxy whose buffer refuses intents (not ready).
The scrapes become promtool input series, as Prometheus would have stored them (an `instance` label per
proxy): a gauge keeps its scraped value, a counter goes on rising by what it rose between the two
scrapes every minute (the condition keeps happening), and the lag of a partition no worker serves rises
by one second a second (which is what an age does). Healthy scrapes must fire nothing; the conditions
must fire every rule, each with the labels it names.

promtool comes with Debian's `prometheus` package (`apt-get install prometheus`); without it the
promtool tests skip, and the check of every rule's metrics and labels against the scrape still runs."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from buffer_worker.http_applier import HttpApplier
from buffer_worker.keys import partition_of
from buffer_worker.worker import Worker
from routing.phases import Phase
from tests.docs.test_grafana_dashboard import _SELECTOR, METRICS, check_expression
from tests.support.demo_backends import DemoBackend
from tests.support.proxies import MemorySink, ProxyFactory
from tests.support.redis_keys import PARTITIONS
from tests.support.waits import wait_for
from tests.telemetry.scraping import Samples, fresh_tenant, scrape, total, value

pytestmark = pytest.mark.slow

ALERTS = Path(__file__).resolve().parents[2] / "docs" / "alerts.yaml"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (apt-get install prometheus)"
)
MINUTES = 30  # samples per input series, one a minute
EVAL = "20m"  # after every rule's `for` and every rate window


def rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load(ALERTS.read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def rule_metrics() -> set[str]:
    return {name for rule in rules() for name, _selector in _SELECTOR.findall(rule["expr"])}


def test_every_rule_uses_exported_metrics_and_aggregates_fleet_series_with_max() -> None:
    names = [rule["alert"] for rule in rules()]
    assert names == [
        "CutoverShadowDivergenceHigh",
        "CutoverBufferLagHigh",
        "CutoverDeadLetters",
        "CutoverFallbacksRefused",
        "CutoverProxyNotReady",
    ]
    for rule in rules():
        check_expression(rule["alert"], rule["expr"])
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"]
        assert rule["annotations"]["description"]


@needs_promtool
def test_promtool_accepts_the_rule_file() -> None:
    assert PROMTOOL is not None
    result = subprocess.run([PROMTOOL, "check", "rules", str(ALERTS)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# -- input series from scrapes ---------------------------------------------------------------------------
def series_name(name: str, labels: frozenset[tuple[str, str]], instance: str) -> str:
    every = {**dict(labels), "instance": instance, "job": "cutover"}
    return name + "{" + ",".join(f'{key}="{val}"' for key, val in sorted(every.items())) + "}"


def number(v: float) -> str:
    return repr(float(v))


def input_series(
    before: dict[str, Samples], after: dict[str, Samples] | None, metrics: set[str]
) -> list[dict[str, str]]:
    """promtool input series: `before` alone held steady (healthy), or `before` then `after` carried on
    (see the module docstring)."""
    out = []
    for instance, first in before.items():
        last = first if after is None else after[instance]
        for name, labels in sorted(set(first) | set(last)):
            if name not in metrics:
                continue
            start, end = first.get((name, labels), 0.0), last.get((name, labels), 0.0)
            if name.endswith("_total"):
                values = f"{number(start)}+{number(end - start)}x{MINUTES}"
            elif name == "cutover_buffer_lag_seconds" and end > 0 and after is not None:
                values = f"{number(end)}+60x{MINUTES}"
            else:
                values = f"{number(end)}+0x{MINUTES}"
            out.append({"series": series_name(name, labels, instance), "values": values})
    return out


def expected(alert: str, labels: dict[str, str]) -> dict[str, Any]:
    [rule] = [rule for rule in rules() if rule["alert"] == alert]
    annotations = {
        key: re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], text)
        for key, text in rule["annotations"].items()
    }
    return {"exp_labels": {**rule["labels"], **labels}, "exp_annotations": annotations}


def promtool_test(
    tmp_path: Path, series: list[dict[str, str]], alerts: dict[str, list[dict[str, Any]]]
) -> None:
    assert PROMTOOL is not None
    spec = {
        "rule_files": [str(ALERTS)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [
                    {"eval_time": EVAL, "alertname": name, "exp_alerts": exp} for name, exp in alerts.items()
                ],
            }
        ],
    }
    path = tmp_path / "alerts-test.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    result = subprocess.run([PROMTOOL, "test", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# -- the conditions, produced through real proxies -------------------------------------------------------
def h(tenant: str) -> dict[str, str]:
    return {"X-Tenant-ID": tenant}


async def test_rules_fire_on_real_conditions_and_not_on_a_healthy_fleet(
    make_proxy: ProxyFactory, old: DemoBackend, new: DemoBackend, redis_prefix: str, tmp_path: Path
) -> None:
    prefix = f"{redis_prefix}:al{uuid.uuid4().hex[:6]}"  # this fleet's buffer only
    diverging, falling, lagging = fresh_tenant("dv"), fresh_tenant("fb"), fresh_tenant("lg")
    settings = {
        "buffer": {"key_prefix": prefix},
        "telemetry": {"tenant_labels": [diverging, falling, lagging]},
        "worker": {"max_attempts": 1, "retry_initial_s": 0.01},
    }
    first = await make_proxy(settings)
    sink = MemorySink()
    second = await make_proxy(settings, sink=sink)
    metrics = rule_metrics()
    healthy = {"a": await scrape(first.admin), "b": await scrape(second.admin)}

    # Divergent shadow reads: old holds the item, new does not.
    await old.seed(diverging, "s1", {"v": "old only"})
    await first.set_phase_api(diverging, Phase.SHADOW)
    for _ in range(3):
        assert (await first.client.get("/items/s1", headers=h(diverging))).status_code == 200

    async def compared() -> bool:
        return total(await scrape(first.admin), "cutover_shadow_reads_total", outcome="divergent") >= 3

    await wait_for(compared, timeout_s=15)

    # A refused fallback: live, a write toward old still buffered, new failing reads.
    await first.set_phase_api(falling, Phase.LIVE)
    assert (await first.client.put("/items/f1", json={"v": 1}, headers=h(falling))).status_code == 200
    await new.control(fail_reads=True)
    refused = await first.client.get("/items/f1", headers=h(falling))
    assert refused.status_code == 503
    assert refused.json()["error"] == "fallback_unsafe"
    await new.control(fail_reads=False)

    # A dead letter, made by a real worker: old refuses the mirrored write, once is enough.
    await old.control(fail_writes=True)
    worker_settings = first.runtime.settings
    worker = Worker(worker_settings, HttpApplier(worker_settings))
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    dead_partition = str(partition_of(falling, PARTITIONS))

    async def dead_lettered() -> bool:
        samples = await scrape(first.admin)
        return value(samples, "cutover_buffer_dead_letters", partition=dead_partition, scope="fleet") >= 1

    try:
        await wait_for(dead_lettered, timeout_s=15)
    finally:
        stop.set()
        await running
    await old.control(fail_writes=False)

    # Intents no worker applies (the worker is gone): the partition's lag grows.
    await first.set_phase_api(lagging, Phase.DUAL_WRITE)
    assert (await first.client.put("/items/l1", json={"v": 1}, headers=h(lagging))).status_code == 200

    # A proxy whose buffer refuses intents: not ready.
    sink.accepting = False
    await asyncio.sleep(1.1)  # the lag is counted in milliseconds of stream-id age: let it show
    conditions = {"a": await scrape(first.admin), "b": await scrape(second.admin)}

    # Every metric the rules use is in a real scrape, with the labels the contract gives it.
    exported: dict[str, set[str]] = {}
    for samples in conditions.values():
        for name, labels in samples:
            exported.setdefault(name, set()).update(key for key, _ in labels)
    for name in metrics:
        assert name in exported, f"{name} is not exported"
        assert METRICS[name] <= exported[name], f"{name}: {METRICS[name]} vs {exported[name]}"

    if PROMTOOL is None:
        pytest.skip("promtool not installed (apt-get install prometheus): the rules were not evaluated")
    lag_partitions = sorted(
        dict(labels)["partition"]
        for name, labels in conditions["a"]
        if name == "cutover_buffer_lag_seconds" and conditions["a"][(name, labels)] > 0
    )
    assert str(partition_of(lagging, PARTITIONS)) in lag_partitions
    dead_partitions = sorted(
        dict(labels)["partition"]
        for name, labels in conditions["a"]
        if name == "cutover_buffer_dead_letters" and conditions["a"][(name, labels)] > 0
    )
    assert dead_partitions == [dead_partition]
    promtool_test(
        tmp_path,
        input_series(healthy, conditions, metrics),
        {
            "CutoverShadowDivergenceHigh": [expected("CutoverShadowDivergenceHigh", {})],
            "CutoverBufferLagHigh": [
                expected("CutoverBufferLagHigh", {"partition": p}) for p in lag_partitions
            ],
            "CutoverDeadLetters": [expected("CutoverDeadLetters", {"partition": p}) for p in dead_partitions],
            "CutoverFallbacksRefused": [expected("CutoverFallbacksRefused", {})],
            "CutoverProxyNotReady": [expected("CutoverProxyNotReady", {"instance": "b", "job": "cutover"})],
        },
    )
    # The same rules over the healthy scrapes, held steady: nothing fires.
    promtool_test(tmp_path, input_series(healthy, None, metrics), {rule["alert"]: [] for rule in rules()})
