"""Structured logs: JSON lines with request id and trace id, and no secret, token or masked field in them,
whatever the request or the admin API carried."""

from __future__ import annotations

import io
import json
import logging
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from config.settings import Settings
from routing.phases import Phase
from telemetry.logs import JsonFormatter, Scrubber, configure_logging, secret_values
from tests.support.demo_backends import DemoBackend
from tests.support.proxies import ProxyFactory
from tests.telemetry.scraping import fresh_tenant


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    # uvicorn turns propagation of its access logger off for every server built with access_log=False
    # (the test backends); a proxy process alone keeps it on.
    access = logging.getLogger("uvicorn.access")
    propagate = access.propagate
    access.propagate = True
    yield
    access.propagate = propagate
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def capture(settings: Settings) -> io.StringIO:
    stream = io.StringIO()
    handler = configure_logging(settings, component="proxy")
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    return stream


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


async def test_requests_and_admin_calls_leave_no_secret_in_logs(
    make_proxy: ProxyFactory, old: DemoBackend, new: DemoBackend, restore_logging: None
) -> None:
    backend_secret = f"svc-{secrets.token_hex(12)}"
    backend_password = f"pw{secrets.token_hex(10)}"
    proxy = await make_proxy(
        {
            "log_level": "debug",
            "access_log": True,
            "telemetry": {"tracing": True, "trace_sample_rate": 1.0},
            "backends": {
                "new": {
                    "url": new.url.replace("http://", f"http://svc:{backend_password}@"),
                    "headers": {"set": {"X-Service-Key": backend_secret}},
                }
            },
        }
    )
    exporter = InMemorySpanExporter()
    assert proxy.runtime.telemetry.tracer_provider is not None
    proxy.runtime.telemetry.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    stream = capture(proxy.runtime.settings)
    client_token = f"client-{secrets.token_hex(16)}"
    query_token = f"q{secrets.token_hex(16)}"
    wrong_admin_token = f"wrong-{secrets.token_hex(16)}"
    tenant = fresh_tenant()

    # A read that falls back (new fails), so the data plane logs while serving it.
    await old.seed(tenant, "f1", {"v": 1})
    await proxy.set_phase_api(tenant, Phase.RAMPDOWN)
    await new.control(fail_reads=True)
    response = await proxy.client.get(
        f"/items/f1?access_token={query_token}",
        headers={"X-Tenant-ID": tenant, "Authorization": f"Bearer {client_token}", "X-Request-ID": "req-42"},
    )
    assert response.status_code == 200
    # Admin API: good token (write scope), a wrong one, a phase change with the token.
    assert (await proxy.admin.get("/tenants")).status_code == 200
    bad = await proxy.anon_admin.get("/stats", headers={"Authorization": f"Bearer {wrong_admin_token}"})
    assert bad.status_code == 401
    await proxy.set_phase_api(tenant, Phase.LIVE)
    # Something logging a secret by mistake is scrubbed too.
    logging.getLogger("cutover.test").warning(
        "oops %s %s", proxy.tokens.write, backend_password, extra={"authorization": client_token}
    )

    text = stream.getvalue()
    for secret in (
        proxy.tokens.write,
        proxy.tokens.read,
        client_token,
        query_token,
        wrong_admin_token,
        backend_secret,
        backend_password,
    ):
        assert secret not in text
    records = lines(stream)  # every line is one JSON object
    assert records
    assert any(r["logger"] == "cutover.access" and r.get("api") == "admin" for r in records)  # it was on
    assert any(r["logger"] == "cutover.access" and "api" not in r for r in records)  # data plane too
    [fallback] = [r for r in records if r["logger"] == "cutover.executor" and "f1" in r["message"]]
    [server] = [
        s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER and "f1" in str(s.attributes)
    ]
    assert fallback["request_id"] == "req-42"
    assert fallback["trace_id"] == f"{server.context.trace_id:032x}"
    assert fallback["span_id"] == f"{server.context.span_id:016x}"
    assert fallback["component"] == "proxy"
    assert fallback["level"] == "info"
    [oops] = [r for r in records if r["logger"] == "cutover.test"]
    assert oops["authorization"] == "***"
    assert oops["message"] == "oops *** ***"


def test_request_id_is_made_once_per_request_and_lines_without_one_have_none() -> None:
    from telemetry.logs import LOG_CONTEXT, request_id

    scope: dict[str, Any] = {"headers": [(b"x-request-id", b"bad id with spaces")]}
    first = request_id(scope)
    assert first != "bad id with spaces"
    assert request_id(scope) == first
    assert request_id({"headers": []}) != first
    formatter = JsonFormatter(Scrubber([]), component="worker")
    record = logging.LogRecord("cutover.x", logging.INFO, __file__, 1, "plain", (), None)
    document = json.loads(formatter.format(record))
    assert "request_id" not in document
    assert "trace_id" not in document
    token = LOG_CONTEXT.set(scope)
    try:
        assert json.loads(formatter.format(record))["request_id"] == first
    finally:
        LOG_CONTEXT.reset(token)


@pytest.mark.parametrize(
    ("message", "kept"),
    [
        ("GET /x?token=abcdef123456&page=2", "page=2"),
        ("connect to postgresql://app:hunter2hunter2@db:5432/x failed", "db:5432"),
        ("header Authorization: Basic dXNlcjpwYXNzd29yZA==", "header Authorization"),
        ("api_key=ZZZZZZZZZZ;", ";"),
    ],
)
def test_credential_shapes_are_scrubbed(message: str, kept: str) -> None:
    line = Scrubber([]).scrub(message)
    assert "***" in line
    assert kept in line
    for secret in ("abcdef123456", "hunter2hunter2", "dXNlcjpwYXNzd29yZA==", "ZZZZZZZZZZ"):
        assert secret not in line


def test_configured_fields_are_masked_and_settings_secrets_are_found() -> None:
    settings = Settings.model_validate(
        {
            "backends": {
                "old": {"url": "http://u:oldpassword1@old:1"},
                "new": {"url": "http://new:2", "headers": {"set": {"Authorization": "Bearer newsidetoken9"}}},
            },
            "admin": {"tokens": {"ops": {"token": "a" * 20, "scope": "write"}}},
            "telemetry": {"redact_fields": ["customer_email"]},
        }
    )
    found = secret_values(settings)
    assert {"oldpassword1", "Bearer newsidetoken9", "a" * 20} <= set(found)
    formatter = JsonFormatter(Scrubber(found, ["customer_email"]), component="proxy")
    record = logging.LogRecord("cutover.x", logging.INFO, __file__, 1, "for %s", ("newsidetoken9 ok",), None)
    record.customer_email = "someone@example.com"
    document = json.loads(formatter.format(record))
    assert document["customer_email"] == "***"
    assert "newsidetoken9" not in document["message"]


def test_uvicorn_lifecycle_lines_and_colour_copies_stay_out(restore_logging: None) -> None:
    """A proxy process runs two uvicorn servers: their start and stop lines would each come twice, with
    an ANSI-coloured copy of the message as a field. cutover logs its own start line instead."""
    settings = Settings.model_validate({"backends": {"old": {"url": "http://o"}, "new": {"url": "http://n"}}})
    stream = capture(settings)
    uvicorn = logging.getLogger("uvicorn.error")
    for _server in ("data plane", "admin"):
        uvicorn.info(
            "Started server process [%d]", 42, extra={"color_message": "Started [\x1b[36m%d\x1b[0m]"}
        )
        uvicorn.info("Shutting down")
    uvicorn.warning("Invalid HTTP request received.", extra={"color_message": "\x1b[33mInvalid\x1b[0m"})
    found = lines(stream)
    assert [line["message"] for line in found] == ["Invalid HTTP request received."]
    assert "color_message" not in found[0]
