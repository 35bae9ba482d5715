"""The data plane's spans built after the fact (`telemetry.spans`, `proxy.request_telemetry`): the same
trace-context rules as the SDK's propagator, sampling decided before anything is made, and spans that
the SDK's exporters take as their own."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from config.telemetry import TelemetrySettings
from proxy.request_telemetry import RequestTelemetry
from telemetry.logs import TRACE_IDS_KEY
from telemetry.spans import parse_traceparent, parse_tracestate
from telemetry.tracing import build_tracer_provider

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


@pytest.mark.parametrize(
    "value",
    [
        f"00-{TRACE}-{SPAN}-01",
        f"00-{TRACE}-{SPAN}-00",
        f"00-{TRACE}-{SPAN}-03",
        f"  00-{TRACE}-{SPAN}-01\t",
        f"01-{TRACE}-{SPAN}-01-future-field",
        f"00-{TRACE}-{SPAN}-01-extra",  # version 00 has nothing after the flags
        f"ff-{TRACE}-{SPAN}-01",
        f"00-{'0' * 32}-{SPAN}-01",
        f"00-{TRACE}-{'0' * 16}-01",
        f"00-{TRACE.upper()}-{SPAN}-01",
        f"00-{TRACE[:-1]}-{SPAN}-01",
        f"00-{TRACE}-{SPAN}-1",
        f"0-{TRACE}-{SPAN}-01",
        f"01-{TRACE}-{SPAN}-01-" + "x" * 600,
        "",
        "garbage",
    ],
)
def test_traceparent_parsing_follows_the_sdk_propagator(value: str) -> None:
    context = TraceContextTextMapPropagator().extract({"traceparent": value})
    expected = trace.get_current_span(context).get_span_context()
    parsed = parse_traceparent(value)
    if not expected.is_valid:
        assert parsed is None
    else:
        assert parsed == (expected.trace_id, expected.span_id, int(expected.trace_flags))


def telemetry(rate: float) -> tuple[RequestTelemetry, InMemorySpanExporter]:
    settings = TelemetrySettings(tracing=True, trace_sample_rate=rate)
    provider = build_tracer_provider(settings, component="proxy", roots_sampled_by_caller=True)
    assert provider is not None
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return RequestTelemetry(settings, provider), exporter


def scope(*headers: tuple[bytes, bytes], method: str = "GET") -> dict[str, Any]:
    return {
        "type": "http",
        "method": method,
        "path": "/v1/orders/42",
        "scheme": "http",
        "http_version": "1.1",
        "client": ("10.0.0.7", 50000),
        "headers": [(b"host", b"proxy"), *headers],
    }


def test_an_unsampled_new_trace_makes_nothing() -> None:
    tel, exporter = telemetry(0.0)
    request = scope()
    exchange = tel.begin(request)
    assert exchange.trace_id == 0 and exchange.traceparent is None
    assert TRACE_IDS_KEY not in request  # log lines of this request carry no trace
    exchange.status = 200
    tel.finish(exchange)
    assert exporter.get_finished_spans() == ()


def test_new_traces_are_sampled_at_the_configured_rate() -> None:
    tel, exporter = telemetry(0.25)
    draws = 8000
    for _ in range(draws):
        exchange = tel.begin(scope())
        exchange.status = 200
        tel.finish(exchange)
    # Binomial(8000, 0.25): standard deviation ~39; ±300 is over 7 of them.
    assert abs(len(exporter.get_finished_spans()) - draws * 0.25) < 300


def test_a_callers_sampled_trace_is_recorded_whatever_the_rate() -> None:
    tel, exporter = telemetry(0.0)
    request = scope((b"traceparent", f"00-{TRACE}-{SPAN}-01".encode()), (b"tracestate", b"vendor=a1,x=y"))
    exchange = tel.begin(request)
    assert request[TRACE_IDS_KEY] == (int(TRACE, 16), exchange.span_id)
    exchange.tenant, exchange.phase, exchange.kind = "acme", "legacy", "read"
    exchange.decision, exchange.served_by, exchange.status = "respond", "old", 503
    tel.finish(exchange)
    [span] = exporter.get_finished_spans()
    assert span.kind is SpanKind.SERVER and span.name == "GET"
    assert span.context.trace_id == int(TRACE, 16) and span.context.span_id == exchange.span_id
    assert span.parent is not None and span.parent.span_id == int(SPAN, 16) and span.parent.is_remote
    assert span.context.trace_state == parse_tracestate("vendor=a1,x=y")
    assert span.start_time is not None and span.end_time is not None and span.start_time <= span.end_time
    assert dict(span.attributes or {}) == {
        "http.request.method": "GET",
        "url.path": "/v1/orders/42",
        "url.scheme": "http",
        "network.protocol.version": "1.1",
        "client.address": "10.0.0.7",
        "cutover.tenant": "acme",
        "cutover.phase": "legacy",
        "cutover.request.kind": "read",
        "cutover.decision": "respond",
        "cutover.served_by": "old",
        "http.response.status_code": 503,
        "error.type": "503",
    }
    assert span.status.status_code is StatusCode.ERROR


def test_a_callers_unsampled_trace_is_propagated_not_recorded() -> None:
    tel, exporter = telemetry(1.0)
    request = scope((b"traceparent", f"00-{TRACE}-{SPAN}-00".encode()))
    exchange = tel.begin(request)
    assert exchange.traceparent is not None
    version, trace_hex, span_hex, flags = exchange.traceparent.split("-")
    assert (version, trace_hex, flags) == ("00", TRACE, "00") and span_hex != SPAN
    tel.finish(exchange)
    assert exporter.get_finished_spans() == ()


def test_an_exception_marks_the_server_span_and_unknown_methods_are_other() -> None:
    tel, exporter = telemetry(1.0)
    exchange = tel.begin(scope(method="PURGE"))
    tel.finish(exchange, ConnectionAbortedError("cut"))
    [span] = exporter.get_finished_spans()
    attributes = dict(span.attributes or {})
    assert span.name == "HTTP" and attributes["http.request.method"] == "_OTHER"
    assert attributes["error.type"] == "ConnectionAbortedError"
    assert attributes["cutover.decision"] == "rejected" and attributes["cutover.served_by"] == "proxy"
    assert span.status.status_code is StatusCode.ERROR


def test_recorded_spans_encode_as_otlp() -> None:
    tel, exporter = telemetry(1.0)
    exchange = tel.begin(scope((b"traceparent", f"00-{TRACE}-{SPAN}-01".encode())))
    exchange.status = 200
    tel.finish(exchange)
    request = encode_spans(exporter.get_finished_spans())
    [resource_spans] = request.resource_spans
    resource = {kv.key: kv.value.string_value for kv in resource_spans.resource.attributes}
    assert resource["cutover.component"] == "proxy"
    [scope_spans] = resource_spans.scope_spans
    assert scope_spans.scope.name == "cutover.proxy"
    [span] = scope_spans.spans
    assert span.trace_id.hex() == TRACE and span.parent_span_id.hex() == SPAN
    assert span.kind == 2  # SERVER
    attributes = {kv.key: kv.value for kv in span.attributes}
    assert attributes["http.response.status_code"].int_value == 200
    assert attributes["url.path"].string_value == "/v1/orders/42"
