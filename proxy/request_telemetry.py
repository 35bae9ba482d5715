"""Per-request telemetry of the data plane: the server span, backend client spans, request counts and
latency histograms. Everything here runs on the hot path, so it is written for cost:

- when tracing and metrics are both off, the data plane never calls into this module (no `Exchange`,
  no span, no clock read);
- metrics are plain counters and `FastHistogram`s, read by the scrape (see `telemetry.prometheus`);
- spans are started with their attributes in one call and ended without context-manager machinery.

HTTP attributes follow the current semantic conventions (`http.request.method`, `url.path`,
`http.response.status_code`, `server.address`, `error.type`); cutover's own are under `cutover.*`.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from config.telemetry import TelemetrySettings
from proxy.errors import BackendError
from proxy.types import Scope
from proxy.upstream import Upstream
from telemetry.labels import TenantLabels
from telemetry.prometheus import FastHistogram
from telemetry.tracing import context_from_traceparent, traceparent_of

# Request counter key: (tenant label, phase, kind, decision, served_by, status class).
RequestKey = tuple[str, str, str, str, str, str]
REJECTED = "rejected"  # the proxy answered by itself (not ready, bad request, buffer full, ...)
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})
_STATUS_CLASSES = ("0xx", "1xx", "2xx", "3xx", "4xx", "5xx")


@dataclass(slots=True)
class Exchange:
    """One request as telemetry sees it, filled in by the data plane and the executor as it goes."""

    started: float
    span: Span | None = None
    context_token: object | None = None
    tenant: str | None = None
    phase: str = "unknown"
    kind: str = "unknown"
    decision: str = REJECTED  # a routing.decide.Action value once the executor has resolved one
    served_by: str = "proxy"
    status: int = 0

    @property
    def traceparent(self) -> str | None:
        return None if self.span is None else traceparent_of(self.span)


class RequestTelemetry:
    def __init__(self, settings: TelemetrySettings, tracer_provider: TracerProvider | None) -> None:
        self.tracer_provider = tracer_provider
        self._tracer = None if tracer_provider is None else tracer_provider.get_tracer("cutover.proxy")
        self._sample_rate = settings.trace_sample_rate
        self.metrics = settings.metrics
        self.enabled = self._tracer is not None or self.metrics
        self.labels = TenantLabels(settings.tenant_labels, top_n=settings.tenant_top_n)
        self.requests: Counter[RequestKey] = Counter()
        # (phase, kind, served_by) → whole-request latency as the proxy saw it.
        self.request_latency = FastHistogram(settings.latency_buckets_s)
        # (backend, role) → time to the backend's response head.
        self.backend_latency = FastHistogram(settings.latency_buckets_s)
        # Shadow outcome name → reader, replacing the data plane's own count (see proxy.metrics).
        self.shadow_counters: dict[str, Callable[[], int]] = {}

    # -- server side ----------------------------------------------------------------------------------
    def begin(self, scope: Scope) -> Exchange:
        exchange = Exchange(time.perf_counter())
        if self._tracer is None:
            return exchange
        traceparent: str | None = None
        tracestate: str | None = None
        for name, value in scope["headers"]:
            if name == b"traceparent":
                traceparent = value.decode("latin-1")
            elif name == b"tracestate":
                tracestate = value.decode("latin-1")
        if traceparent is None and self._sample_rate < 1.0 and random.random() >= self._sample_rate:
            # Head sampling of a new trace, decided before the SDK is touched: an unsampled request costs
            # one random number, not a non-recording span, a context switch and a traceparent header.
            # (The provider's sampler is ALWAYS_ON for roots, so the rate is not applied twice.)
            return exchange
        method = scope["method"]
        client = scope.get("client")
        attributes = {
            "http.request.method": method if method in _KNOWN_METHODS else "_OTHER",
            "url.path": scope["path"],
            "url.scheme": scope.get("scheme", "http"),
            "network.protocol.version": scope.get("http_version", "1.1"),
        }
        if client:
            attributes["client.address"] = client[0]
        span = self._tracer.start_span(
            method if method in _KNOWN_METHODS else "HTTP",
            context=context_from_traceparent(traceparent, tracestate),
            kind=SpanKind.SERVER,
            attributes=attributes,
        )
        exchange.span = span
        # Current for the request's task: backend client spans and log lines find it there.
        exchange.context_token = otel_context.attach(trace.set_span_in_context(span))
        return exchange

    def finish(self, exchange: Exchange, error: BaseException | None = None) -> None:
        if self.metrics:
            status_class = _STATUS_CLASSES[min(exchange.status // 100, 5)]
            key = (
                self.labels.label(exchange.tenant),
                exchange.phase,
                exchange.kind,
                exchange.decision,
                exchange.served_by,
                status_class,
            )
            self.requests[key] += 1
            self.request_latency.record(
                (exchange.phase, exchange.kind, exchange.served_by), time.perf_counter() - exchange.started
            )
        span = exchange.span
        if span is None:
            return
        attributes: dict[str, str | int] = {
            "cutover.phase": str(exchange.phase),
            "cutover.request.kind": str(exchange.kind),
            "cutover.decision": str(exchange.decision),
            "cutover.served_by": str(exchange.served_by),
        }
        if exchange.tenant is not None:
            attributes["cutover.tenant"] = exchange.tenant
        if exchange.status:
            attributes["http.response.status_code"] = exchange.status
        span.set_attributes(attributes)
        if error is not None:
            span.set_attribute("error.type", type(error).__qualname__)
            span.set_status(Status(StatusCode.ERROR, type(error).__qualname__))
        elif exchange.status >= 500:
            span.set_attribute("error.type", str(exchange.status))
            span.set_status(Status(StatusCode.ERROR))
        span.end()
        if exchange.context_token is not None:
            otel_context.detach(exchange.context_token)  # type: ignore[arg-type]

    # -- backend calls --------------------------------------------------------------------------------
    async def call_backend(
        self,
        upstream: Upstream,
        method: str,
        url: str,
        path: str,
        headers: list[tuple[str, str]],
        body: bytes,
        exchange: Exchange,
        role: str,
    ) -> aiohttp.ClientResponse:
        """`upstream.request` with a client span (child of the request's) and its latency recorded."""
        span: Span | None = None
        if exchange.span is not None and self._tracer is not None:
            span = self._tracer.start_span(
                method if method in _KNOWN_METHODS else "HTTP",
                context=trace.set_span_in_context(exchange.span),
                kind=SpanKind.CLIENT,
                attributes={
                    "http.request.method": method if method in _KNOWN_METHODS else "_OTHER",
                    "server.address": upstream.host,
                    "server.port": upstream.port,
                    # Never the backend URL's userinfo, nor the query (it may carry secrets).
                    "url.full": upstream.display + path,
                    "cutover.backend": upstream.name,
                    "cutover.role": role,
                },
            )
            # The backend continues this trace; a client's own traceparent names our server span's
            # parent, not this call, so it is replaced (tracestate passes through unchanged).
            headers = [header for header in headers if header[0] != "traceparent"]
            headers.append(("traceparent", traceparent_of(span) or ""))
        started = time.perf_counter()
        try:
            response = await upstream.request(method, url, headers, body)
        except BackendError as exc:
            if self.metrics:
                self.backend_latency.record((upstream.name, role), time.perf_counter() - started)
            if span is not None:
                span.set_attribute("error.type", "timeout" if exc.timeout else "connect_error")
                span.set_status(Status(StatusCode.ERROR, exc.code))
                span.end()
            raise
        if self.metrics:
            self.backend_latency.record((upstream.name, role), time.perf_counter() - started)
        if span is not None:
            span.set_attribute("http.response.status_code", response.status)
            if response.status >= 500:
                span.set_attribute("error.type", str(response.status))
                span.set_status(Status(StatusCode.ERROR))
            span.end()
        return response

    def shutdown(self) -> None:
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()
