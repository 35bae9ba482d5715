"""Logs that explain: with `access_log` one structured line per data-plane request (tenant, phase,
decision, side, status, duration, backend times, request and trace ids), and, whatever the setting, one
line for each phase change, fallback, refusal and backend failure, with its reason. Read from the JSON
lines the real handler writes."""

from __future__ import annotations

import logging
from typing import Any

from config.settings import Settings
from routing.phases import Phase
from tests.support.demo_backends import DemoBackend
from tests.support.proxies import ProxyFactory
from tests.support.servers import free_port
from tests.telemetry.scraping import fresh_tenant
from tests.telemetry.test_logs import capture, lines, restore_logging  # noqa: F401 - a fixture


def by_logger(records: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [r for r in records if r["logger"] == name]


async def test_one_access_line_per_request_with_its_story(
    make_proxy: ProxyFactory,
    old: DemoBackend,
    new: DemoBackend,
    restore_logging: None,  # noqa: F811
) -> None:
    proxy = await make_proxy(
        {"log_level": "info", "access_log": True, "telemetry": {"tracing": True, "trace_sample_rate": 1.0}}
    )
    stream = capture(proxy.runtime.settings)
    tenant = fresh_tenant()
    for side in (old, new):
        await side.seed(tenant, "a1", {"v": 1})
    await proxy.set_phase_api(tenant, Phase.RAMPDOWN)
    served = await proxy.client.get(
        "/items/a1?token=secret123456", headers={"X-Tenant-ID": tenant, "X-Request-ID": "r-1"}
    )
    assert served.status_code == 200
    await new.control(fail_reads=True)
    fallen = await proxy.client.get("/items/a1", headers={"X-Tenant-ID": tenant, "X-Request-ID": "r-2"})
    assert fallen.status_code == 200
    assert fallen.headers["x-cutover-served-by"] == "old"
    bad = await proxy.client.get("/items/a1", headers={"X-Tenant-ID": "no good", "X-Request-ID": "r-3"})
    assert bad.status_code == 400

    records = lines(stream)
    access = {r["request_id"]: r for r in by_logger(records, "cutover.access") if "api" not in r}
    admin = [r for r in by_logger(records, "cutover.access") if r.get("api") == "admin"]
    assert admin
    assert all(r["request_id"] and r["status"] == 200 for r in admin)
    assert set(access) == {"r-1", "r-2", "r-3"}, "one line per request"
    assert not by_logger(records, "uvicorn.access"), "the data plane's requests are logged once, by cutover"
    first = access["r-1"]
    assert first["level"] == "info"
    assert (first["tenant"], first["phase"], first["kind"]) == (tenant, "rampdown", "read")
    assert (first["decision"], first["served_by"], first["status"]) == ("respond", "new", 200)
    assert first["method"] == "GET"
    assert first["path"] == "/items/a1"
    assert "secret" not in str(first)
    assert first["duration_ms"] >= first["backend_ms"]["serving"] > 0
    assert len(first["trace_id"]) == 32
    second = access["r-2"]
    assert (second["decision"], second["served_by"], second["status"]) == ("fallback", "old", 200)
    assert set(second["backend_ms"]) == {"serving", "fallback"}
    third = access["r-3"]
    assert (third["decision"], third["served_by"], third["status"], third["tenant"]) == (
        "rejected",
        "proxy",
        400,
        None,
    )

    # The fallback and the refusal, once each, with their reasons.
    [fallback] = [r for r in by_logger(records, "cutover.executor") if r.get("fallback")]
    assert fallback["request_id"] == "r-2"
    assert fallback["level"] == "info"
    assert (fallback["tenant"], fallback["failed"], fallback["fallback"]) == (tenant, "new", "old")
    assert fallback["reason"] == "server_error"
    assert fallback["backend_status"] >= 500
    [refusal] = [r for r in by_logger(records, "cutover.proxy") if r.get("error")]
    assert (refusal["request_id"], refusal["status"], refusal["error"], refusal["level"]) == (
        "r-3",
        400,
        "invalid_tenant",
        "info",
    )


async def test_phase_changes_and_backend_failures_are_logged_once(
    make_proxy: ProxyFactory,
    restore_logging: None,  # noqa: F811
) -> None:
    proxy = await make_proxy(
        {"log_level": "info", "backends": {"old": {"url": f"http://127.0.0.1:{free_port()}"}}}
    )
    assert proxy.runtime.settings.access_log is False
    stream = capture(proxy.runtime.settings)
    tenant = fresh_tenant()
    moved = await proxy.admin.put(
        f"/tenants/{tenant}/phase", json={"phase": "dual_write", "reason": "wave 1"}
    )
    assert moved.status_code == 200
    failed = await proxy.client.put(
        "/items/w1", json={"v": 1}, headers={"X-Tenant-ID": tenant, "X-Request-ID": "r-9"}
    )
    assert failed.status_code == 502

    records = lines(stream)
    [change] = [r for r in records if r["logger"] == "cutover.phases" and r.get("to_phase")]
    assert change["level"] == "info"
    assert (change["tenant"], change["from_phase"], change["to_phase"]) == (tenant, "legacy", "dual_write")
    assert (change["actor"], change["reason"], change["version"]) == (proxy.tokens.write_name, "wave 1", 1)
    failures = [r for r in records if r.get("request_id") == "r-9"]
    assert len(failures) == 1, failures
    [failure] = failures
    assert (failure["level"], failure["status"], failure["error"], failure["served_by"]) == (
        "warning",
        502,
        "backend_unreachable",
        "old",
    )
    assert not by_logger(records, "cutover.access"), "access_log is off"


def test_access_log_off_costs_no_exchange() -> None:
    """With tracing, metrics, the health history and the access log off, the data plane never builds
    the per-request telemetry record; the access log alone turns it on."""
    from proxy.dataplane.request_telemetry import RequestTelemetry

    settings = Settings.model_validate(
        {
            "backends": {"old": {"url": "http://o"}, "new": {"url": "http://n"}},
            "telemetry": {"metrics": False},
        }
    )
    assert not RequestTelemetry(settings.telemetry, None).enabled
    assert RequestTelemetry(settings.telemetry, None, access_log=True).enabled


def test_refusal_levels_follow_the_status(caplog: Any) -> None:
    from proxy.dataplane.app import _log_refusal
    from proxy.dataplane.errors import BadRequest, ServiceUnavailable

    with caplog.at_level(logging.INFO, logger="cutover.proxy"):
        try:
            raise ServiceUnavailable("applied on old but not queued", code="buffer_unavailable") from OSError(
                "disk full"
            )
        except ServiceUnavailable as exc:
            _log_refusal({"method": "PUT", "path": "/items/1"}, exc, "acme")
        _log_refusal({"method": "GET", "path": "/x"}, BadRequest("no", code="bad_request"), None)
    warning, info = caplog.records
    assert warning.levelno == logging.WARNING
    assert warning.__dict__["cause"] == "OSError: disk full"
    assert warning.__dict__["error"] == "buffer_unavailable"
    assert warning.__dict__["tenant"] == "acme"
    assert info.levelno == logging.INFO
    assert info.__dict__["status"] == 400
