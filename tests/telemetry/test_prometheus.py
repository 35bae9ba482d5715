"""`telemetry.prometheus.MetricsExposition` on its own: what the environment cannot change."""

from __future__ import annotations

import pytest

from telemetry.prometheus import MetricsExposition


def test_metrics_stay_on_when_the_environment_disables_the_opentelemetry_sdk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """OTEL_SDK_DISABLED=true turns tracing off when settings are loaded; /metrics follows
    telemetry.metrics, whatever the SDK would read from the environment later."""
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    exposition = MetricsExposition("cutover")
    try:
        exposition.counter("cutover_probe", "a probe", lambda: [(3, {})])
        body, content_type = exposition.render()
    finally:
        exposition.shutdown()
    assert content_type.startswith("text/plain; version=0.0.4")
    assert "cutover_probe_total 3.0" in body.decode()
