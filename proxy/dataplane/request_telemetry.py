"""Per-request telemetry of the data plane: the server span, backend client spans, request counts and
latency histograms. Everything here runs on the hot path, so it is written for cost:

- when tracing, metrics, the health history and the access log are all off, the data plane never calls
  into this module (no `Exchange`, no span, no clock read);
- what happened to the request comes in once, when it ends, as one immutable `RequestOutcome`
  (`proxy.dataplane.request_outcome`); what records it (metrics, the health history, the server span, the
access
  log) is chosen when this object is built, and the access log (`access_log: true`) is one structured
  line per request made from that record;
- metrics are plain counters and `FastHistogram`s, read by the scrape (see `telemetry.prometheus`);
- a new trace is sampled first, by one random draw, before anything else: an unsampled request makes
  no ids, no span, no context and no `traceparent`;
- a sampled request carries plain ids (trace, span, parent) while it runs; each span is built once,
  when it ends, with its attributes in one dict (`telemetry.spans`), not through the SDK's tracer;
- nothing is attached to OpenTelemetry's context: the ids travel in the `Exchange` (the request's trace
  context, set when it begins), and log lines find them in the request's scope
  (`telemetry.logs.TRACE_IDS_KEY`).

A request that arrives with a valid `traceparent` continues that trace, sampled or not as its caller
decided; an unsampled one is still propagated (with flags 00) and recorded nowhere.

HTTP attributes follow the current semantic conventions (`http.request.method`, `url.path`,
`http.response.status_code`, `server.address`, `error.type`); cutover's own are under `cutover.*`. Span
names are `cutover <METHOD> <route>`: the route is the resource pattern of the divergence policy that
the path matches (also set as `http.route` on the server span and `url.template` on client spans), else
the path's first segment and depth (`/items/*`, as divergence reports name it). A name never holds an
id from the path, so span names stay few whatever clients send.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from backends.client import BackendClient
from backends.errors import BackendFailure
from config.telemetry import TelemetrySettings
from proxy.dataplane.request_outcome import RequestOutcome
from proxy.dataplane.types import Scope
from proxy.health.series import SideSeries
from proxy.shadow.rules import auto_resource
from telemetry.labels import TenantLabels
from telemetry.logs import REQUEST_SCOPE, TRACE_IDS_KEY
from telemetry.prometheus import FastHistogram
from telemetry.spans import (
    SAMPLED,
    SAMPLED_FLAGS,
    RecordingTracerProvider,
    SpanRecorder,
    format_traceparent,
    new_span_id,
    new_trace_id,
    parse_traceparent,
    parse_tracestate,
)

# Request counter key: (tenant label, phase, kind, decision, served_by, status class).
RequestKey = tuple[str, str, str, str, str, str]
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})
_STATUS_CLASSES = ("0xx", "1xx", "2xx", "3xx", "4xx", "5xx")
_ERROR = Status(StatusCode.ERROR)
_UNSET = Status(StatusCode.UNSET)
_TRACE_ID_LOW = (1 << 64) - 1  # the bits the SDK's TraceIdRatioBased sampler decides by
# A request path → (the configured resource pattern it matches, or None; the route spans are named by).
RouteOf = Callable[[str], tuple[str | None, str]]
_ROUTE_KEY = "cutover.route"  # a recorded request's route, kept in its scope for its second span
access_log = logging.getLogger("cutover.access")


def _no_route(path: str) -> tuple[str | None, str]:
    return None, auto_resource([p for p in path.split("/") if p])


@dataclass(slots=True)
class Exchange:
    """One request's trace context and start, set by `RequestTelemetry.begin` and only read afterwards
    (not frozen: a frozen dataclass costs several times as much to make, on every request)."""

    started: float
    # Trace context: trace_id 0 means none (tracing off, or a new trace that was not sampled).
    trace_id: int = 0
    span_id: int = 0  # the server span's
    flags: int = 0  # SAMPLED when this request's spans are recorded
    parent_span_id: int = 0  # the caller's span, from its traceparent (0: this request starts the trace)
    parent_flags: int = 0
    tracestate: str | None = None
    start_ns: int = 0  # wall clock, for recorded spans only
    scope: Scope | None = None  # kept for recorded requests: their span's attributes are read at the end

    @property
    def traceparent(self) -> str | None:
        """This request's server span as a W3C parent (toward the shadow process and into intents)."""
        return format_traceparent(self.trace_id, self.span_id, self.flags) if self.trace_id else None


class RequestTelemetry:
    def __init__(
        self,
        settings: TelemetrySettings,
        tracer_provider: RecordingTracerProvider | None,
        *,
        route: RouteOf = _no_route,
        series: SideSeries | None = None,
        access_log: bool = False,
    ) -> None:
        self.tracer_provider = tracer_provider
        self._spans = None if tracer_provider is None else SpanRecorder(tracer_provider, "cutover.proxy")
        self._sample_rate = settings.root_sample_rate
        self._follows_parent = settings.follows_parent
        # As the SDK's TraceIdRatioBased: a trace is kept when its low 64 bits are below this bound.
        self._bound = round(self._sample_rate * (_TRACE_ID_LOW + 1))
        self._route = route
        self.metrics = settings.metrics
        # Per-tenant, per-side counts for the health history (proxy.health.recorder writes them out).
        self.series = series
        self.access_log = access_log
        self.enabled = self._spans is not None or self.metrics or series is not None or access_log
        self.labels = TenantLabels(settings.tenant_labels, top_n=settings.tenant_top_n)
        self.requests: Counter[RequestKey] = Counter()
        # (tenant label, phase, kind, served_by) → whole-request latency as the proxy saw it.
        self.request_latency = FastHistogram(settings.latency_buckets_s)
        # (backend, role) → time to the backend's response head.
        self.backend_latency = FastHistogram(settings.latency_buckets_s)
        # Shadow outcome name → reader, replacing the data plane's own count (see proxy.admin.metrics).
        self.shadow_counters: dict[str, Callable[[], int]] = {}

    # -- server side ----------------------------------------------------------------------------------
    def begin(self, scope: Scope) -> Exchange:
        exchange = Exchange(time.perf_counter())
        if self._spans is None:
            return exchange
        traceparent: bytes | None = None
        tracestate: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"traceparent":
                traceparent = value
            elif name == b"tracestate":
                tracestate = value
        parent = None if traceparent is None else parse_traceparent(traceparent.decode("latin-1"))
        if parent is None:
            if self._follows_parent:
                # A new trace. Head sampling comes first: an unsampled request costs one random number.
                if self._sample_rate < 1.0 and random.random() >= self._sample_rate:
                    return exchange
                exchange.trace_id = new_trace_id()
            else:
                # `traceidratio`: decided by the id, as the worker's SDK sampler decides the same trace.
                trace_id = new_trace_id()
                if trace_id & _TRACE_ID_LOW >= self._bound:
                    return exchange
                exchange.trace_id = trace_id
            exchange.flags = SAMPLED
        else:
            exchange.trace_id, exchange.parent_span_id, exchange.parent_flags = parent
            if self._follows_parent:
                # Recorded when the caller sampled it (as the SDK's ParentBased sampler).
                exchange.flags = exchange.parent_flags & SAMPLED
            else:
                exchange.flags = SAMPLED if exchange.trace_id & _TRACE_ID_LOW < self._bound else 0
            if tracestate is not None:
                exchange.tracestate = tracestate.decode("latin-1")
        exchange.span_id = new_span_id()
        if exchange.flags:
            exchange.start_ns = time.time_ns()
            exchange.scope = scope
        # Log lines of this request carry its trace (the scope is the request's log context).
        scope[TRACE_IDS_KEY] = (exchange.trace_id, exchange.span_id)
        return exchange

    def finish(self, exchange: Exchange, outcome: RequestOutcome, error: BaseException | None = None) -> None:
        """Record how the request ended, once: what is recorded was chosen when this object was built."""
        elapsed = time.perf_counter() - exchange.started
        if self.metrics:
            tenant = self.labels.label(outcome.tenant)
            phase, kind, served_by = outcome.phase, outcome.kind, outcome.served_by
            status_class = _STATUS_CLASSES[min(outcome.status // 100, 5)]
            self.requests[(tenant, phase, kind, outcome.decision, served_by, status_class)] += 1
            self.request_latency.record((tenant, phase, kind, served_by), elapsed)
        if self.series is not None:
            self.series.record(outcome.tenant, outcome.serving, elapsed, outcome.status, outcome.decision)
        if exchange.flags and self._spans is not None:
            self._record_server_span(exchange, outcome, self._spans, error)
        if self.access_log:
            self._log_access(outcome, error, elapsed)

    def _log_access(self, outcome: RequestOutcome, error: BaseException | None, elapsed: float) -> None:
        """One line per request, from its outcome. The request id and trace id are added by the formatter
        (the scope is this task's log context); the query is left out, since clients put credentials
        there."""
        scope = REQUEST_SCOPE.get()
        method = scope.get("method", "") if scope is not None else ""
        path = scope.get("path", "") if scope is not None else ""
        duration_ms = round(elapsed * 1000, 3)
        backend_ms = {role: round(s * 1000, 3) for role, s in outcome.backend_s}
        status = outcome.status if error is None else 0
        access_log.info(
            "%s %s %d %s by %s in %.1f ms",
            method,
            path,
            status,
            outcome.decision,
            outcome.served_by,
            duration_ms,
            extra={
                "tenant": outcome.tenant,
                "phase": str(outcome.phase),
                "kind": str(outcome.kind),
                "decision": str(outcome.decision),
                "served_by": outcome.served_by,
                "status": status,
                "duration_ms": duration_ms,
                "backend_ms": backend_ms,
                "method": method,
                "path": path,
                **({"error": type(error).__name__} if error is not None else {}),
            },
        )

    def _record_server_span(
        self, exchange: Exchange, outcome: RequestOutcome, spans: SpanRecorder, error: BaseException | None
    ) -> None:
        scope = exchange.scope
        assert scope is not None  # kept by `begin` for every recorded request
        method = scope["method"]
        known = method in _KNOWN_METHODS
        route, name = self._route_of(exchange)
        attributes: dict[str, str | int] = {
            "http.request.method": method if known else "_OTHER",
            "url.path": scope["path"],
            "url.scheme": scope.get("scheme", "http"),
            "network.protocol.version": scope.get("http_version", "1.1"),
            "cutover.phase": str(outcome.phase),
            "cutover.request.kind": str(outcome.kind),
            "cutover.decision": str(outcome.decision),
            "cutover.served_by": str(outcome.served_by),
        }
        if route is not None:
            attributes["http.route"] = route
        client = scope.get("client")
        if client:
            attributes["client.address"] = client[0]
        if outcome.tenant is not None:
            attributes["cutover.tenant"] = outcome.tenant
        if outcome.status:
            attributes["http.response.status_code"] = outcome.status
        status = _UNSET
        if error is not None:
            attributes["error.type"] = type(error).__qualname__
            status = Status(StatusCode.ERROR, type(error).__qualname__)
        elif outcome.status >= 500:
            attributes["error.type"] = str(outcome.status)
            status = _ERROR
        parent = None
        if exchange.parent_span_id:
            parent = SpanContext(
                exchange.trace_id, exchange.parent_span_id, True, TraceFlags(exchange.parent_flags)
            )
        spans.record(
            f"cutover {method if known else 'HTTP'} {name}",
            SpanKind.SERVER,
            exchange.trace_id,
            exchange.span_id,
            parent,
            exchange.start_ns,
            time.time_ns(),
            attributes,
            status,
            parse_tracestate(exchange.tracestate),
        )

    # -- backend calls --------------------------------------------------------------------------------
    async def call_backend(
        self,
        upstream: BackendClient,
        method: str,
        url: str,
        path: str,
        headers: list[tuple[str, str]],
        body: bytes,
        exchange: Exchange,
        role: str,
        timings: list[tuple[str, float]] | None,
    ) -> aiohttp.ClientResponse:
        """`upstream.request` with a client span (child of the request's) and its latency recorded (in
        `timings` too, by role, when the access log wants it)."""
        span_id = 0
        start_ns = 0
        if exchange.trace_id:
            # The backend continues this trace, as a child of this call. A caller's own traceparent
            # names our server span's parent, not this call, so it is replaced (tracestate passes
            # through unchanged). `headers` is this call's own list (built per request).
            span_id = new_span_id()
            headers = [header for header in headers if header[0] != "traceparent"]
            headers.append(("traceparent", format_traceparent(exchange.trace_id, span_id, exchange.flags)))
            if exchange.flags:
                start_ns = time.time_ns()
        started = time.perf_counter()
        try:
            response = await upstream.request(method, url, headers, body)
        except BackendFailure as exc:
            if self.metrics:
                self.backend_latency.record((upstream.name, role), time.perf_counter() - started)
            if timings is not None:
                timings.append((role, time.perf_counter() - started))
            if start_ns:
                failure = "timeout" if exc.timeout else "connect_error"
                self._record_client_span(
                    exchange, span_id, start_ns, upstream, method, path, role, None, failure, exc.code
                )
            raise
        if self.metrics:
            self.backend_latency.record((upstream.name, role), time.perf_counter() - started)
        if timings is not None:
            timings.append((role, time.perf_counter() - started))
        if start_ns:
            status = response.status
            self._record_client_span(
                exchange,
                span_id,
                start_ns,
                upstream,
                method,
                path,
                role,
                status,
                str(status) if status >= 500 else None,
            )
        return response

    def _record_client_span(
        self,
        exchange: Exchange,
        span_id: int,
        start_ns: int,
        upstream: BackendClient,
        method: str,
        path: str,
        role: str,
        status_code: int | None,
        error: str | None,
        detail: str | None = None,
    ) -> None:
        assert self._spans is not None
        known = method in _KNOWN_METHODS
        route, name = self._route_of(exchange)
        attributes: dict[str, str | int] = {
            "http.request.method": method if known else "_OTHER",
            "server.address": upstream.host,
            "server.port": upstream.port,
            # Never the backend URL's userinfo, nor the query (it may carry secrets).
            "url.full": upstream.display + path,
            "cutover.backend": upstream.name,
            "cutover.role": role,
        }
        if route is not None:
            attributes["url.template"] = route
        if status_code is not None:
            attributes["http.response.status_code"] = status_code
        status = _UNSET
        if error is not None:
            attributes["error.type"] = error
            status = _ERROR if detail is None else Status(StatusCode.ERROR, detail)
        self._spans.record(
            f"cutover {method if known else 'HTTP'} {name}",
            SpanKind.CLIENT,
            exchange.trace_id,
            span_id,
            SpanContext(exchange.trace_id, exchange.span_id, False, SAMPLED_FLAGS),
            start_ns,
            time.time_ns(),
            attributes,
            status,
            parse_tracestate(exchange.tracestate),
        )

    def _route_of(self, exchange: Exchange) -> tuple[str | None, str]:
        """(the configured route, if any; the route spans are named by) of a recorded request: found once
        and kept in its scope, for its client spans and its server span."""
        scope = exchange.scope
        assert scope is not None  # kept by `begin` for every recorded request
        found: tuple[str | None, str] | None = scope.get(_ROUTE_KEY)
        if found is None:
            raw_path = scope.get("raw_path")
            found = scope[_ROUTE_KEY] = self._route(raw_path.decode("latin-1") if raw_path else scope["path"])
        return found

    def shutdown(self) -> None:
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()
