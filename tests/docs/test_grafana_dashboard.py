"""docs/grafana-dashboard.json: valid dashboard JSON whose queries use only the metrics the proxy exports,
with their labels, and show every one of them.

METRICS is the contract with the metrics module (Prometheus text at GET /metrics on the admin port);
tests/telemetry/test_metrics.py checks that a real scrape carries every one of them with these labels."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json"
METRICS: dict[str, set[str]] = {
    "cutover_tenants": {"phase"},
    "cutover_requests_total": {"tenant", "phase", "kind", "decision", "served_by", "status_class"},
    "cutover_backend_request_duration_seconds_bucket": {"backend", "role", "le"},
    "cutover_fallbacks_refused_total": set(),
    "cutover_shadow_compared_total": set(),
    "cutover_shadow_equal_total": set(),
    "cutover_shadow_divergent_total": set(),
    "cutover_shadow_noise_total": set(),
    "cutover_shadow_failed_total": set(),
    "cutover_shadow_skipped_total": set(),
    "cutover_shadow_unsampled_total": set(),
    "cutover_buffer_length": {"partition"},
    "cutover_buffer_lag_seconds": {"partition"},
    "cutover_buffer_retries_total": set(),
    "cutover_buffer_dead_letters": {"partition"},
    "cutover_spool_bytes": set(),
    "cutover_phase_changes_total": {"to", "trigger"},
    "cutover_phase_cache_staleness_seconds": set(),
}
_SELECTOR = re.compile(r"(cutover_[a-z_]+)(\{[^}]*\})?")
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def test_dashboard_shape(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] and dashboard["title"]
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
        used = _SELECTOR.findall(expr)
        assert used, f"{title}: no cutover metric in {expr!r}"
        labels_here: set[str] = set()
        for name, selector in used:
            assert name in METRICS, f"{title}: unknown metric {name}"
            labels_here |= METRICS[name]
            for matcher in filter(None, (selector or "").strip("{}").split(",")):
                label = re.split(r"[=!~]", matcher, maxsplit=1)[0].strip()
                assert label in METRICS[name], f"{title}: {name} has no label {label!r}"
        for group in _GROUPING.findall(expr):
            for label in filter(None, (part.strip() for part in group.split(","))):
                assert label in labels_here, f"{title}: grouping by {label!r}, which {expr!r} does not have"
        assert expr.count("(") == expr.count(")"), f"{title}: unbalanced parentheses"


def test_every_metric_is_on_the_dashboard(dashboard: dict[str, Any]) -> None:
    shown = {name for _title, expr in queries(dashboard) for name, _ in _SELECTOR.findall(expr)}
    assert shown == set(METRICS)
