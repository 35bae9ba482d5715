"""The data plane's spans built after the fact (`telemetry.spans`, `proxy.dataplane.request_telemetry`): the
same trace-context rules as the SDK's propagator, sampling decided before anything is made, and spans that
the SDK's exporters take as their own."""

from __future__ import annotations

import random
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from config.divergence import DivergencePolicy
from config.telemetry import TelemetrySettings
from proxy.dataplane.request_outcome import RequestOutcome
from proxy.dataplane.request_telemetry import RequestTelemetry
from proxy.shadow.rules import Ruleset
from telemetry.logs import TRACE_IDS_KEY
from telemetry.spans import parse_traceparent, parse_tracestate
from telemetry.tracing import build_tracer_provider

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
OK = RequestOutcome(status=200)
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
    assert exchange.trace_id == 0
    assert exchange.traceparent is None
    assert TRACE_IDS_KEY not in request  # log lines of this request carry no trace
    tel.finish(exchange, OK)
    assert exporter.get_finished_spans() == ()


def test_new_traces_are_sampled_at_the_configured_rate() -> None:
    tel, exporter = telemetry(0.25)
    draws = 8000
    for _ in range(draws):
        exchange = tel.begin(scope())
        tel.finish(exchange, OK)
    # Binomial(8000, 0.25): standard deviation ~39; ±300 is over 7 of them.
    assert abs(len(exporter.get_finished_spans()) - draws * 0.25) < 300


def test_a_callers_sampled_trace_is_recorded_whatever_the_rate() -> None:
    tel, exporter = telemetry(0.0)
    request = scope((b"traceparent", f"00-{TRACE}-{SPAN}-01".encode()), (b"tracestate", b"vendor=a1,x=y"))
    exchange = tel.begin(request)
    assert request[TRACE_IDS_KEY] == (int(TRACE, 16), exchange.span_id)
    outcome = RequestOutcome("acme", "legacy", "read", "respond", "old", "old", 503)
    tel.finish(exchange, outcome)
    [span] = exporter.get_finished_spans()
    # No resource configured: named by the path's first segment and depth, as divergence reports do.
    assert span.kind is SpanKind.SERVER
    assert span.name == "cutover GET /v1/*/*"
    assert span.context.trace_id == int(TRACE, 16)
    assert span.context.span_id == exchange.span_id
    assert span.parent is not None
    assert span.parent.span_id == int(SPAN, 16)
    assert span.parent.is_remote
    assert span.context.trace_state == parse_tracestate("vendor=a1,x=y")
    assert span.start_time is not None
    assert span.end_time is not None
    assert span.start_time <= span.end_time
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
    assert (version, trace_hex, flags) == ("00", TRACE, "00")
    assert span_hex != SPAN
    tel.finish(exchange, OK)
    assert exporter.get_finished_spans() == ()


def test_an_exception_marks_the_server_span_and_unknown_methods_are_other() -> None:
    tel, exporter = telemetry(1.0)
    exchange = tel.begin(scope(method="PURGE"))
    tel.finish(exchange, RequestOutcome(), ConnectionAbortedError("cut"))
    [span] = exporter.get_finished_spans()
    attributes = dict(span.attributes or {})
    assert span.name == "cutover HTTP /v1/*/*"
    assert attributes["http.request.method"] == "_OTHER"
    assert attributes["error.type"] == "ConnectionAbortedError"
    assert attributes["cutover.decision"] == "rejected"
    assert attributes["cutover.served_by"] == "proxy"
    assert span.status.status_code is StatusCode.ERROR


def test_recorded_spans_encode_as_otlp() -> None:
    tel, exporter = telemetry(1.0)
    exchange = tel.begin(scope((b"traceparent", f"00-{TRACE}-{SPAN}-01".encode())))
    tel.finish(exchange, OK)
    request = encode_spans(exporter.get_finished_spans())
    [resource_spans] = request.resource_spans
    resource = {kv.key: kv.value.string_value for kv in resource_spans.resource.attributes}
    assert resource["cutover.component"] == "proxy"
    [scope_spans] = resource_spans.scope_spans
    assert scope_spans.scope.name == "cutover.proxy"
    [span] = scope_spans.spans
    assert span.trace_id.hex() == TRACE
    assert span.parent_span_id.hex() == SPAN
    assert span.kind == 2  # SERVER
    attributes = {kv.key: kv.value for kv in span.attributes}
    assert attributes["http.response.status_code"].int_value == 200
    assert attributes["url.path"].string_value == "/v1/orders/42"


# -- span names --------------------------------------------------------------------------------------------
class _Response:
    status = 200


class _Backend:
    """What `call_backend` uses of a backend client; answers at once."""

    name, host, port, display = "old", "10.0.0.9", 9000, "http://10.0.0.9:9000"

    async def request(self, method: str, url: str, headers: Any, body: bytes) -> _Response:
        return _Response()


def routed(resources: list[str]) -> tuple[RequestTelemetry, InMemorySpanExporter]:
    settings = TelemetrySettings(tracing=True, trace_sample_rate=1.0)
    provider = build_tracer_provider(settings, component="proxy", roots_sampled_by_caller=True)
    assert provider is not None
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    policy = DivergencePolicy.model_validate({"resources": [{"resource": r} for r in resources]})
    return RequestTelemetry(settings, provider, route=Ruleset(policy).route), exporter


async def traced_call(
    tel: RequestTelemetry, exporter: InMemorySpanExporter, path: str
) -> dict[SpanKind, Any]:
    exporter.clear()
    exchange = tel.begin({**scope(), "path": path, "raw_path": path.encode()})
    url = "http://10.0.0.9:9000" + path
    await tel.call_backend(_Backend(), "GET", url, path, [], b"", exchange, "serving", [])  # type: ignore[arg-type]
    tel.finish(exchange, OK)
    return {span.kind: span for span in exporter.get_finished_spans()}


async def test_spans_are_named_by_the_divergence_resource_the_path_matches() -> None:
    tel, exporter = routed(["/v1/orders/{id}", "/v1/**"])
    spans = await traced_call(tel, exporter, "/v1/orders/42")
    server, client = spans[SpanKind.SERVER], spans[SpanKind.CLIENT]
    assert server.name == client.name == "cutover GET /v1/orders/{id}"
    assert (server.attributes or {})["http.route"] == "/v1/orders/{id}"
    assert (client.attributes or {})["url.template"] == "/v1/orders/{id}"
    assert (client.attributes or {})["url.full"] == "http://10.0.0.9:9000/v1/orders/42"


async def test_a_path_no_resource_matches_is_named_by_its_first_segment_without_a_route() -> None:
    tel, exporter = routed(["/v1/orders/{id}"])
    names = set()
    for item in ("a1", "b2", "c3"):
        spans = await traced_call(tel, exporter, f"/items/{item}")
        assert "http.route" not in (spans[SpanKind.SERVER].attributes or {})
        assert "url.template" not in (spans[SpanKind.CLIENT].attributes or {})
        names |= {span.name for span in spans.values()}
    assert names == {"cutover GET /items/*"}  # ids never reach a span name


# -- samplers (OTEL_TRACES_SAMPLER) ------------------------------------------------------------------------
def sampled_with(sampler: str, rate: float = 1.0) -> tuple[RequestTelemetry, InMemorySpanExporter]:
    settings = TelemetrySettings(tracing=True, trace_sampler=sampler, trace_sample_rate=rate)  # type: ignore[arg-type]
    provider = build_tracer_provider(settings, component="proxy", roots_sampled_by_caller=True)
    assert provider is not None
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return RequestTelemetry(settings, provider), exporter


def recorded(tel: RequestTelemetry, exporter: InMemorySpanExporter, traceparent: str | None) -> bool:
    exporter.clear()
    headers = () if traceparent is None else ((b"traceparent", traceparent.encode()),)
    exchange = tel.begin(scope(*headers))
    tel.finish(exchange, OK)
    return bool(exporter.get_finished_spans())


@pytest.mark.parametrize(
    ("sampler", "new_trace", "sampled_parent", "unsampled_parent"),
    [
        ("parentbased_always_on", True, True, False),
        ("parentbased_always_off", False, True, False),
        ("always_on", True, True, True),
        ("always_off", False, False, False),
    ],
)
def test_samplers_by_their_opentelemetry_names(
    sampler: str, new_trace: bool, sampled_parent: bool, unsampled_parent: bool
) -> None:
    tel, exporter = sampled_with(sampler)
    assert recorded(tel, exporter, None) is new_trace
    assert recorded(tel, exporter, f"00-{TRACE}-{SPAN}-01") is sampled_parent
    assert recorded(tel, exporter, f"00-{TRACE}-{SPAN}-00") is unsampled_parent


def test_traceidratio_decides_by_the_trace_id_as_the_sdk_does() -> None:
    """Not by the caller's flag: the data plane and the worker's SDK sampler agree on every trace."""
    tel, exporter = sampled_with("traceidratio", 0.5)
    sdk = TraceIdRatioBased(0.5)
    decisions = set()
    for _ in range(200):
        trace_id = random.getrandbits(128) or 1
        expected = sdk.should_sample(None, trace_id, "x").decision.is_sampled()
        flag = random.choice(("00", "01"))
        assert recorded(tel, exporter, f"00-{trace_id:032x}-{SPAN}-{flag}") is expected
        decisions.add(expected)
    assert decisions == {True, False}, "the test proved nothing"
