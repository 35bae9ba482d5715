"""Traces: the server span of each request, backend client spans, `traceparent` toward the backends and
into intents; end to end through the real OTLP/HTTP exporter to a collector stand-in, with the shadow
call (in the shadow process) linked to its request and the buffer worker continuing the write's trace."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from buffer_worker.http_applier import HttpApplier
from buffer_worker.worker import Worker
from config.telemetry import TelemetrySettings
from routing.phases import Phase
from telemetry.tracing import build_tracer_provider
from tests.support.asgi import read_body
from tests.support.demo_backends import DemoBackend
from tests.support.proxies import MemorySink, Proxy, ProxyFactory
from tests.support.servers import RunningServer, backend_config, free_port, start_server
from tests.support.waits import wait_for
from tests.telemetry.scraping import fresh_tenant

INCOMING_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
INCOMING_SPAN = "00f067aa0ba902b7"


def h(tenant: str, **extra: str) -> dict[str, str]:
    return {"X-Tenant-ID": tenant, **extra}


async def traced_proxy(
    make_proxy: ProxyFactory, overrides: dict[str, Any] | None = None, **kw: Any
) -> tuple[Proxy, InMemorySpanExporter]:
    settings = {"telemetry": {"tracing": True, "trace_sample_rate": 1.0}}
    proxy = await make_proxy({**settings, **(overrides or {})}, **kw)
    exporter = InMemorySpanExporter()
    provider = proxy.runtime.telemetry.tracer_provider
    assert provider is not None
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return proxy, exporter


def by_kind(spans: tuple[ReadableSpan, ...], kind: SpanKind) -> list[ReadableSpan]:
    return [span for span in spans if span.kind is kind]


def traceparent_of(span: ReadableSpan) -> str:
    context = span.context
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def sampled_child_of(value: str, trace_id: str, span_id: str) -> bool:
    version, found_trace, found_span, flags = value.split("-")
    return (version, found_trace, found_span) == ("00", trace_id, span_id) and int(flags, 16) & 1 == 1


async def test_server_and_client_spans_continue_the_callers_trace(
    make_proxy: ProxyFactory, old: DemoBackend
) -> None:
    # Spans are named by the divergence policy's resource the path matches.
    routes = {"divergence": {"policy": {"resources": [{"resource": "/items/{id}", "name": "item"}]}}}
    proxy, exporter = await traced_proxy(make_proxy, routes)
    tenant = fresh_tenant()
    await old.seed(tenant, "a1", {"v": 1})
    incoming = f"00-{INCOMING_TRACE}-{INCOMING_SPAN}-01"
    response = await proxy.client.get("/items/a1?secret=x", headers=h(tenant, traceparent=incoming))
    assert response.status_code == 200

    spans = exporter.get_finished_spans()
    [server] = by_kind(spans, SpanKind.SERVER)
    [client] = by_kind(spans, SpanKind.CLIENT)
    assert server.name == client.name == "cutover GET /items/{id}"
    assert dict(server.attributes or {})["http.route"] == "/items/{id}"
    assert f"{server.context.trace_id:032x}" == INCOMING_TRACE
    assert server.parent is not None
    assert f"{server.parent.span_id:016x}" == INCOMING_SPAN
    attributes = dict(server.attributes or {})
    assert attributes["http.request.method"] == "GET"
    assert attributes["url.path"] == "/items/a1"
    assert attributes["http.response.status_code"] == 200
    assert attributes["cutover.tenant"] == tenant
    assert attributes["cutover.phase"] == "legacy"
    assert attributes["cutover.decision"] == "respond"
    assert attributes["cutover.served_by"] == "old"

    assert client.parent is not None
    assert client.parent.span_id == server.context.span_id
    assert client.context.trace_id == server.context.trace_id
    client_attributes = dict(client.attributes or {})
    assert client_attributes["cutover.backend"] == "old"
    assert client_attributes["cutover.role"] == "serving"
    assert client_attributes["server.address"] == "127.0.0.1"
    assert client_attributes["server.port"] == old.server.port
    assert client_attributes["http.response.status_code"] == 200
    assert client_attributes["url.full"] == f"{old.url}/items/a1"  # no query: it may hold secrets

    # The backend got the client span as its parent, not the caller's traceparent.
    [seen] = old.recorder.requests_for(tenant, method="GET", path="/items/a1")
    assert seen.headers["traceparent"] == traceparent_of(client)


async def test_tracestate_passes_through_and_is_kept_on_the_spans(
    make_proxy: ProxyFactory, old: DemoBackend
) -> None:
    proxy, exporter = await traced_proxy(
        make_proxy, {"telemetry": {"tracing": True, "trace_sample_rate": 0.0}}
    )
    tenant = fresh_tenant()
    incoming = f"00-{INCOMING_TRACE}-{INCOMING_SPAN}-01"
    headers = h(tenant, traceparent=incoming, tracestate="vendor=a1,other=b2")
    assert (await proxy.client.get("/items/ts", headers=headers)).status_code == 404
    spans = exporter.get_finished_spans()
    [server] = by_kind(spans, SpanKind.SERVER)  # recorded: the caller sampled it, whatever our rate
    [client] = by_kind(spans, SpanKind.CLIENT)
    assert (
        dict(server.context.trace_state)
        == dict(client.context.trace_state)
        == {
            "vendor": "a1",
            "other": "b2",
        }
    )
    [seen] = old.recorder.requests_for(tenant, path="/items/ts")
    assert seen.headers["tracestate"] == "vendor=a1,other=b2"
    assert seen.headers["traceparent"] == traceparent_of(client)


async def test_backend_failure_marks_both_spans(make_proxy: ProxyFactory) -> None:
    proxy, exporter = await traced_proxy(
        make_proxy, {"backends": {"old": {"url": f"http://127.0.0.1:{free_port()}"}}}
    )
    response = await proxy.client.get("/items/x", headers=h(fresh_tenant()))
    assert response.status_code == 502
    spans = exporter.get_finished_spans()
    [server] = by_kind(spans, SpanKind.SERVER)
    [client] = by_kind(spans, SpanKind.CLIENT)
    assert server.status.status_code is StatusCode.ERROR
    assert dict(server.attributes or {})["cutover.decision"] == "bad_gateway"
    # The answer names the backend that failed; so does the span.
    assert response.headers["x-cutover-served-by"] == "old"
    assert dict(server.attributes or {})["cutover.served_by"] == "old"
    assert client.status.status_code is StatusCode.ERROR
    assert dict(client.attributes or {})["error.type"] == "connect_error"


async def test_the_intent_carries_the_writes_trace(make_proxy: ProxyFactory) -> None:
    sink = MemorySink()
    proxy, exporter = await traced_proxy(make_proxy, sink=sink)
    tenant = fresh_tenant()
    await proxy.set_phase_direct(tenant, Phase.DUAL_WRITE)
    assert (await proxy.client.put("/items/w", json={"v": 1}, headers=h(tenant))).status_code == 200
    [server] = by_kind(exporter.get_finished_spans(), SpanKind.SERVER)
    [intent] = sink.intents
    assert intent.traceparent == traceparent_of(server)


async def test_unsampled_requests_cost_no_span(make_proxy: ProxyFactory, old: DemoBackend) -> None:
    proxy, exporter = await traced_proxy(
        make_proxy, {"telemetry": {"tracing": True, "trace_sample_rate": 0.0}}
    )
    tenant = fresh_tenant()
    # A new trace not sampled: no span at all, nothing added toward the backend.
    assert (await proxy.client.get("/items/u", headers=h(tenant))).status_code == 404
    assert exporter.get_finished_spans() == ()
    assert "traceparent" not in old.recorder.requests_for(tenant)[0].headers
    # A caller's unsampled trace is continued (not recorded), and the backend is told so.
    incoming = f"00-{INCOMING_TRACE}-{INCOMING_SPAN}-00"
    await proxy.client.get("/items/u2", headers=h(tenant, traceparent=incoming))
    assert exporter.get_finished_spans() == ()
    [seen] = old.recorder.requests_for(tenant, path="/items/u2")
    assert seen.headers["traceparent"].startswith(f"00-{INCOMING_TRACE}-")
    assert seen.headers["traceparent"] != incoming
    assert int(seen.headers["traceparent"].rsplit("-", 1)[1], 16) & 1 == 0  # told: not sampled


async def test_tracing_off_creates_no_spans_and_adds_no_header(
    make_proxy: ProxyFactory, old: DemoBackend
) -> None:
    proxy = await make_proxy()  # default: no endpoint, tracing unset → off; metrics on
    telemetry = proxy.runtime.telemetry
    assert telemetry.tracer_provider is None
    assert telemetry.enabled
    tenant = fresh_tenant()
    assert (await proxy.client.get("/items/o", headers=h(tenant))).status_code == 404
    [seen] = old.recorder.requests_for(tenant)
    assert "traceparent" not in seen.headers
    # A caller's own traceparent passes through untouched.
    incoming = f"00-{INCOMING_TRACE}-{INCOMING_SPAN}-01"
    await proxy.client.get("/items/o2", headers=h(tenant, traceparent=incoming))
    assert old.recorder.requests_for(tenant, path="/items/o2")[0].headers["traceparent"] == incoming


# -- end to end, through OTLP/HTTP -----------------------------------------------------------------------
@dataclass
class Collector:
    """An OTLP/HTTP trace receiver: decodes every export into (component, span) pairs."""

    spans: list[tuple[str, Any]] = field(default_factory=list)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        if scope["path"] == "/v1/traces":
            request = ExportTraceServiceRequest.FromString(body)
            for resource_spans in request.resource_spans:
                resource = {kv.key: kv.value.string_value for kv in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        self.spans.append((resource.get("cutover.component", "?"), span))
        payload = ExportTraceServiceResponse().SerializeToString()
        headers = [
            (b"content-type", b"application/x-protobuf"),
            (b"content-length", str(len(payload)).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    def of(self, component: str) -> list[Any]:
        return [span for found, span in self.spans if found == component]


@pytest.fixture
async def collector() -> Any:
    app = Collector()
    server = await start_server(backend_config(app))
    yield app, server
    await server.stop()


def attrs(span: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in span.attributes:
        value = kv.value
        out[kv.key] = value.string_value if value.HasField("string_value") else value.int_value
    return out


async def test_shadow_is_linked_and_worker_continues_the_write(
    make_proxy: ProxyFactory,
    collector: tuple[Collector, RunningServer],
    old: DemoBackend,
    new: DemoBackend,
    redis_prefix: str,
) -> None:
    received, server = collector
    proxy = await make_proxy(
        {
            "telemetry": {"otlp_endpoint": server.url, "otlp_export_delay_ms": 50, "trace_sample_rate": 1.0},
            "buffer": {"key_prefix": f"{redis_prefix}:tr{uuid.uuid4().hex[:6]}"},
        }
    )
    reader, writer = fresh_tenant("sh"), fresh_tenant("wr")
    for backend in (old, new):
        await backend.seed(reader, "s1", {"v": 1})
    await proxy.set_phase_direct(reader, Phase.SHADOW)
    await proxy.set_phase_direct(writer, Phase.DUAL_WRITE)
    assert (await proxy.client.get("/items/s1", headers=h(reader))).status_code == 200
    assert (await proxy.client.put("/items/w1", json={"v": 2}, headers=h(writer))).status_code == 200

    settings = proxy.runtime.settings
    provider = build_tracer_provider(settings.telemetry, component="worker")
    worker = Worker(settings, HttpApplier(settings), tracer_provider=provider)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))

    async def mirrored() -> bool:
        return (await new.items_of(writer)).get("w1") is not None

    try:
        await wait_for(mirrored, timeout_s=15)
    finally:
        stop.set()
        await running
    assert provider is not None
    await asyncio.to_thread(provider.shutdown)

    def server_span(tenant: str) -> Any:
        return next(
            s for s in received.of("proxy") if s.kind == 2 and attrs(s).get("cutover.tenant") == tenant
        )

    async def exported() -> bool:
        proxy_tenants = {attrs(s).get("cutover.tenant") for s in received.of("proxy")}
        return {reader, writer} <= proxy_tenants and any(
            attrs(s).get("cutover.tenant") == reader for s in received.of("shadow")
        )

    await wait_for(exported, timeout_s=15)

    # The shadow call: its own trace, linked to the read's server span.
    read_span = server_span(reader)
    [shadow] = [s for s in received.of("shadow") if attrs(s).get("cutover.tenant") == reader]
    assert shadow.kind == 3  # CLIENT
    assert shadow.name == "cutover GET /items/*"
    assert attrs(shadow)["cutover.role"] == "shadow"
    assert attrs(shadow)["cutover.backend"] == "new"
    assert attrs(shadow)["cutover.shadow.result"] == "equal"
    assert [(link.trace_id, link.span_id) for link in shadow.links] == [
        (read_span.trace_id, read_span.span_id)
    ]
    assert shadow.trace_id != read_span.trace_id

    # The worker's apply: a consumer span in the write's trace, child of its server span.
    write_span = server_span(writer)
    [apply] = [s for s in received.of("worker") if attrs(s).get("cutover.tenant") == writer]
    assert apply.kind == 5  # CONSUMER
    assert apply.trace_id == write_span.trace_id
    assert apply.parent_span_id == write_span.span_id
    assert attrs(apply)["messaging.operation.type"] == "process"
    # ...and the mirror's request carried the apply span on.
    [mirror_call] = new.recorder.requests_for(writer, method="PUT", path="/items/w1")
    assert sampled_child_of(mirror_call.headers["traceparent"], apply.trace_id.hex(), apply.span_id.hex())


def test_build_tracer_provider_is_none_when_off() -> None:
    assert build_tracer_provider(TelemetrySettings(), component="x") is None
    assert (
        build_tracer_provider(TelemetrySettings(tracing=False, otlp_endpoint="http://c:4318"), component="x")
        is None
    )
    on = build_tracer_provider(TelemetrySettings(otlp_endpoint="http://c:4318"), component="x")
    assert on is not None
    on.shutdown()


async def test_shadow_calls_are_recorded_exactly_when_their_request_is(
    make_proxy: ProxyFactory,
    collector: tuple[Collector, RunningServer],
    old: DemoBackend,
    new: DemoBackend,
) -> None:
    received, server = collector
    proxy = await make_proxy(
        {"telemetry": {"otlp_endpoint": server.url, "otlp_export_delay_ms": 50, "trace_sample_rate": 0.0}}
    )
    unsampled, sampled = fresh_tenant("un"), fresh_tenant("sa")
    for tenant in (unsampled, sampled):
        for backend in (old, new):
            await backend.seed(tenant, "r1", {"v": 1})
        await proxy.set_phase_direct(tenant, Phase.SHADOW)
    assert (await proxy.client.get("/items/r1", headers=h(unsampled))).status_code == 200
    incoming = f"00-{INCOMING_TRACE}-{INCOMING_SPAN}-01"
    headers = h(sampled, traceparent=incoming)
    assert (await proxy.client.get("/items/r1", headers=headers)).status_code == 200

    def shadow_spans(tenant: str) -> list[Any]:
        return [s for s in received.of("shadow") if attrs(s).get("cutover.tenant") == tenant]

    async def exported() -> bool:
        return bool(shadow_spans(sampled)) and any(s.kind == 2 for s in received.of("proxy"))

    await wait_for(exported, timeout_s=15)
    [request_span] = [s for s in received.of("proxy") if s.kind == 2]
    assert attrs(request_span)["cutover.tenant"] == sampled  # the unsampled request made no span
    [shadow] = shadow_spans(sampled)
    assert [(link.trace_id, link.span_id) for link in shadow.links] == [
        (request_span.trace_id, request_span.span_id)
    ]
    # The unsampled request's shadow job ran first; several export intervals later it has made no span.
    await asyncio.sleep(0.3)
    assert shadow_spans(unsampled) == []


# -- an unreachable collector ------------------------------------------------------------------------------
@dataclass
class Unreachable:
    url: str
    sock: socket.socket | None  # the blackhole's listening socket

    def contacted(self) -> bool:
        """Whether the exporter connected: a blackhole's connections wait in its backlog."""
        assert self.sock is not None
        self.sock.setblocking(False)
        try:
            conn, _ = self.sock.accept()
        except BlockingIOError:
            return False
        conn.close()
        return True


@contextmanager
def unreachable_collector(kind: str) -> Iterator[Unreachable]:
    """`blackhole`: a socket that listens (the kernel completes connections into its backlog) and never
    answers; `closed`: a port nothing listens on (connections are refused)."""
    if kind == "closed":
        yield Unreachable(f"http://127.0.0.1:{free_port()}", None)
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield Unreachable(f"http://127.0.0.1:{sock.getsockname()[1]}", sock)


@pytest.mark.parametrize("kind", ["blackhole", "closed"])
def test_shutdown_does_not_wait_on_an_unreachable_collector(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    with unreachable_collector(kind) as collector:
        settings = TelemetrySettings(otlp_endpoint=collector.url, trace_sample_rate=1.0)
        provider = build_tracer_provider(settings, component="worker")
        assert provider is not None
        tracer = provider.get_tracer("test")
        for _ in range(10):
            tracer.start_span("queued").end()  # held for the next export (every 5 s): shutdown's to send
        started = time.monotonic()
        provider.shutdown()
        took = time.monotonic() - started
        if kind == "blackhole":
            assert collector.contacted(), "nothing was exported: the test proved nothing"
        else:
            assert "exporting spans" in caplog.text, "nothing was exported: the test proved nothing"
    # Bounded at 1 s; 3 s leaves room for a loaded machine. Without the bound: the exporter's 10 s.
    assert took < 3.0, f"shutdown waited {took:.1f} s on an unreachable collector"
