"""Tracing set-up (OpenTelemetry SDK, OTLP/HTTP export) and W3C trace-context propagation.

Providers are built from settings and passed down, never installed as the process-global provider: a
test process runs several proxies, and nothing here should depend on import order. Context crosses
process boundaries as a W3C `traceparent` value: to the backends (header), to the shadow process (job
frame) and to the buffer worker (a field of the intent).
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, Sampler, TraceIdRatioBased
from opentelemetry.trace import Span, SpanContext
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from config.telemetry import TelemetrySettings
from telemetry.spans import RecordingTracerProvider

_PROPAGATOR = TraceContextTextMapPropagator()
_EXPORT_BATCH = 512
_QUEUE_SIZE = 8192  # spans held while the collector is slow; beyond it new spans are dropped, not queued


def build_tracer_provider(
    settings: TelemetrySettings,
    *,
    component: str,
    exporter: SpanExporter | None = None,
    roots_sampled_by_caller: bool = False,
) -> RecordingTracerProvider | None:
    """A provider for one process, or None when tracing is off (then no span is ever created).

    `exporter` replaces the OTLP exporter (tests pass an in-memory one). Tracing on without an endpoint
    records spans and propagates their ids, and exports nothing. Spans with a parent follow the parent's
    sampling decision; new traces are sampled at `trace_sample_rate`, by the SDK, or by the caller
    before it starts a root span at all (`roots_sampled_by_caller`: the data plane samples its requests
    itself, and the shadow process records a shadow call exactly when its request was recorded)."""
    if not settings.tracing_enabled:
        return None
    root: Sampler = ALWAYS_ON if roots_sampled_by_caller else TraceIdRatioBased(settings.trace_sample_rate)
    provider = RecordingTracerProvider(
        sampler=ParentBased(root),
        resource=Resource({"service.name": settings.service_name, "cutover.component": component}),
    )
    if exporter is None and settings.otlp_endpoint is not None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(
            endpoint=f"{settings.otlp_endpoint}/v1/traces",
            headers={name: value.get_secret_value() for name, value in settings.otlp_headers.items()},
            timeout=settings.otlp_timeout_s,
        )
    if exporter is not None:
        provider.add_span_processor(
            BatchSpanProcessor(
                exporter,
                max_queue_size=_QUEUE_SIZE,
                schedule_delay_millis=settings.otlp_export_delay_ms,
                max_export_batch_size=_EXPORT_BATCH,
                export_timeout_millis=settings.otlp_timeout_s * 1000,
            )
        )
    return provider


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
