"""docs/grafana-dashboard.json: valid dashboard JSON whose queries (panels and annotations) use only the
metrics the proxy exports, with their labels, show every one of them, and aggregate fleet-wide series
with max (every proxy reports them: a sum would count each once per replica).

METRICS is the contract with the metrics module (Prometheus text at GET /metrics on the admin port);
tests/telemetry/test_metrics.py checks that a real scrape carries every one of them with these labels,
and tests/docs/test_alerts.py that the shipped alert rules use only them."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json"
_FLEET = {"scope"}
METRICS: dict[str, set[str]] = {
    "cutover_tenants": {"phase", *_FLEET},
    "cutover_tenant_phase_info": {"tenant", "phase", *_FLEET},
    "cutover_requests_total": {"tenant", "phase", "kind", "decision", "served_by", "status_class"},
    "cutover_request_duration_seconds_bucket": {"tenant", "phase", "kind", "served_by", "le"},
    "cutover_backend_request_duration_seconds_bucket": {"backend", "role", "le"},
    "cutover_fallbacks_refused_total": set(),
    "cutover_shadow_reads_total": {"outcome"},
    "cutover_buffer_length": {"partition", *_FLEET},
    "cutover_buffer_lag_seconds": {"partition", *_FLEET},
    "cutover_buffer_retries_total": {*_FLEET},
    "cutover_buffer_dead_letters": {"partition", *_FLEET},
    "cutover_spool_bytes": set(),
    "cutover_phase_changes_total": {"to", "trigger", *_FLEET},
    "cutover_phase_cache_staleness_seconds": set(),
    "cutover_ready": set(),
}
# Every proxy reports these from shared state (labelled scope="fleet").
FLEET_METRICS = {name for name, labels in METRICS.items() if "scope" in labels}
_SELECTOR = re.compile(r"(cutover_[a-z_]+)(\{[^}]*\})?")
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(title, PromQL) of every panel target and every annotation."""
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ] + [(f"annotation {a['name']}", a["expr"]) for a in dashboard["annotations"]["list"] if "expr" in a]


def check_expression(title: str, expr: str) -> None:
    """Every metric known, every label matched or grouped by one the expression's metrics have, and
    fleet-wide series selected as such and never summed."""
    used = _SELECTOR.findall(expr)
    assert used, f"{title}: no cutover metric in {expr!r}"
    labels_here: set[str] = set()
    for name, selector in used:
        assert name in METRICS, f"{title}: unknown metric {name}"
        labels_here |= METRICS[name]
        matchers = {
            re.split(r"[=!~]", matcher, maxsplit=1)[0].strip(): matcher
            for matcher in filter(None, (selector or "").strip("{}").split(","))
        }
        for label in matchers:
            assert label in METRICS[name], f"{title}: {name} has no label {label!r}"
        if name in FLEET_METRICS:
            assert matchers.get("scope", "").replace(" ", "") == 'scope="fleet"', (
                f"{title}: {name} not scoped"
            )
            assert not re.search(r"\b(sum|count|avg)\b", expr), f"{title}: {name} is fleet-wide: max, not sum"
    for group in _GROUPING.findall(expr):
        for label in filter(None, (part.strip() for part in group.split(","))):
            assert label in labels_here, f"{title}: grouping by {label!r}, which {expr!r} does not have"
    assert expr.count("(") == expr.count(")"), f"{title}: unbalanced parentheses"


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def test_dashboard_shape(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"]
    assert dashboard["title"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert variables == {"datasource", "tenant"}
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"], panel["title"]


def test_every_query_uses_known_metrics_and_labels(dashboard: dict[str, Any]) -> None:
    for title, expr in queries(dashboard):
        check_expression(title, expr)


def test_phase_changes_are_annotations(dashboard: dict[str, Any]) -> None:
    [annotation] = [a for a in dashboard["annotations"]["list"] if a["name"] == "Phase changes"]
    assert annotation["enable"]
    assert annotation["datasource"]["uid"] == "${datasource}"
    assert "cutover_tenant_phase_info" in annotation["expr"]
    assert "offset" in annotation["expr"]
    assert set(annotation["tagKeys"].split(",")) == {"tenant", "phase"}


def test_latency_and_errors_by_side_and_tenant(dashboard: dict[str, Any]) -> None:
    by_title = {panel["title"]: panel for panel in dashboard["panels"]}
    latency = [t["expr"] for t in by_title["Client latency p50 / p99 by side and tenant"]["targets"]]
    assert [expr.split(",")[0] for expr in latency] == ["histogram_quantile(0.5", "histogram_quantile(0.99"]
    errors = by_title["Error rate by side and tenant"]["targets"][0]["expr"]
    for expr in (*latency, errors):
        assert "by (le, served_by, tenant)" in expr or "by (served_by, tenant)" in expr
    assert 'status_class="5xx"' in errors


def test_every_metric_is_on_the_dashboard(dashboard: dict[str, Any]) -> None:
    shown = {name for _title, expr in queries(dashboard) for name, _ in _SELECTOR.findall(expr)}
    assert shown == set(METRICS)
