"""Tracing set-up (OpenTelemetry SDK; OTLP/HTTP or console export) and W3C trace-context propagation.

Providers are built from settings and passed down, never installed as the process-global provider: a
test process runs several proxies, and nothing here should depend on import order. Context crosses
process boundaries as a W3C `traceparent` value: to the backends (header), to the shadow process (job
frame) and to the buffer worker (a field of the intent).

Shutdown is bounded: a process that stops exports what it can within `SHUTDOWN_TIMEOUT_S` and drops the
rest. The SDK's batch processor waits up to 30 s for its worker thread, and an export to a collector
that accepts connections and never answers blocks for the exporter's whole timeout (10 s by default);
to a closed port it retries with backoff for as long. A proxy or worker being stopped (a rolling
deploy, a restart after a crash) must not wait on its telemetry.
"""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, version

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import Span, SpanContext
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from config.telemetry import TelemetrySettings
from telemetry.spans import RecordingTracerProvider

_PROPAGATOR = TraceContextTextMapPropagator()
_EXPORT_BATCH = 512
_QUEUE_SIZE = 8192  # spans held while the collector is slow; beyond it new spans are dropped, not queued
SHUTDOWN_TIMEOUT_S = 1.0
# Console export is for trying tracing out: spans show up within half a second.
_CONSOLE_DELAY_MS = 500


def cutover_version() -> str:
    try:
        return version("cutover")
    except PackageNotFoundError:  # pragma: no cover - a source tree that was never installed
        return "unknown"


class BoundedBatchSpanProcessor(BatchSpanProcessor):
    """The SDK's batch processor, whose shutdown waits at most `SHUTDOWN_TIMEOUT_S` for the last export.

    After the wait the exporter is shut down, which ends its retries; an export still blocked on the
    network stays in the processor's daemon thread, which does not keep the process alive."""

    def shutdown(self) -> None:
        # The public `shutdown()` takes no timeout; the batch processor underneath does.
        self._batch_processor.shutdown(timeout_millis=int(SHUTDOWN_TIMEOUT_S * 1000))


def _console_line(span: ReadableSpan) -> str:
    line: str = span.to_json(indent=None)
    return line + "\n"


def build_tracer_provider(
    settings: TelemetrySettings,
    *,
    component: str,
    exporter: SpanExporter | None = None,
    roots_sampled_by_caller: bool = False,
) -> RecordingTracerProvider | None:
    """A provider for one process, or None when tracing is off (then no span is ever created).

    `exporter` replaces the configured one (tests pass an in-memory one). Tracing on with the exporter
    `none` records spans and propagates their ids, and exports nothing. Spans are sampled by
    `telemetry.trace_sampler`: by the SDK, or, for new traces, by the caller before it starts a root
    span at all (`roots_sampled_by_caller`: the data plane samples its requests itself, and the shadow
    process records a shadow call exactly when its request was recorded)."""
    if not settings.tracing_enabled:
        return None
    provider = RecordingTracerProvider(
        sampler=_sampler(settings, roots_sampled_by_caller), resource=resource_of(settings, component)
    )
    delay_ms = settings.otlp_export_delay_ms
    if exporter is None and settings.span_exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(
            endpoint=settings.otlp_traces_url,
            headers={name: value.get_secret_value() for name, value in settings.otlp_headers.items()},
            timeout=settings.otlp_timeout_s,
        )
    elif exporter is None and settings.span_exporter == "console":
        # `out` given here, not the SDK's default bound at its import: stdout as it is when we start.
        exporter = ConsoleSpanExporter(out=sys.stdout, formatter=_console_line)
        delay_ms = min(delay_ms, _CONSOLE_DELAY_MS)
    if exporter is not None:
        provider.add_span_processor(
            BoundedBatchSpanProcessor(
                exporter,
                max_queue_size=_QUEUE_SIZE,
                schedule_delay_millis=delay_ms,
                max_export_batch_size=_EXPORT_BATCH,
                export_timeout_millis=settings.otlp_timeout_s * 1000,
            )
        )
    return provider


class _HashedOnceResource(Resource):
    """A `Resource` whose hash is computed once. The OTLP encoder groups the spans of a batch by
    resource, hashing it for every span, and the SDK's hash dumps all attributes as JSON each time: ~4 µs
    per exported span with a handful of attributes. A resource never changes once built."""

    def __init__(self, attributes: dict[str, str]) -> None:
        super().__init__(attributes)
        self._hash = super().__hash__()

    def __hash__(self) -> int:
        return self._hash


def resource_of(settings: TelemetrySettings, component: str) -> Resource:
    """The resource of every span of one process: `resource_attributes`, then what cutover sets."""
    return _HashedOnceResource(
        {
            **settings.resource_attributes,
            "service.name": settings.service_name,
            "service.version": cutover_version(),
            "cutover.component": component,
        }
    )


def _sampler(settings: TelemetrySettings, roots_sampled_by_caller: bool) -> Sampler:
    if roots_sampled_by_caller:
        # The caller applied `trace_sampler` to the trace before this process saw it.
        return ParentBased(ALWAYS_ON)
    rate = settings.root_sample_rate
    root: Sampler = ALWAYS_ON if rate >= 1.0 else ALWAYS_OFF if rate <= 0.0 else TraceIdRatioBased(rate)
    return ParentBased(root) if settings.follows_parent else root


def traceparent_of(span: Span) -> str | None:
    """The W3C `traceparent` naming `span` as the parent (None for an invalid span context)."""
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def context_from_traceparent(traceparent: str | None, tracestate: str | None = None) -> Context | None:
    """A parent context from a `traceparent` value; None when absent or malformed (a new trace starts)."""
    if not traceparent:
        return None
    carrier = {"traceparent": traceparent}
    if tracestate:
        carrier["tracestate"] = tracestate
    context = _PROPAGATOR.extract(carrier)
    span_context = trace.get_current_span(context).get_span_context()
    return context if span_context.is_valid else None


def span_context_from_traceparent(traceparent: str | None) -> SpanContext | None:
    """The remote span context of a `traceparent`, for a span link."""
    context = context_from_traceparent(traceparent)
    if context is None:
        return None
    return trace.get_current_span(context).get_span_context()
