"""Spans recorded after the fact: the data plane's cheap way into the OpenTelemetry SDK's span pipeline.

The SDK's `Tracer.start_span` costs ~25 µs of CPU per span on these machines (sampler chain, a lock and
a validation pass per attribute, bounded lists for events and links, context objects), so a request
with a server and a client span paid ~50 µs, a third of what the proxy itself costs per request. The
data plane knows every attribute of its spans, all of its own types (str, int), by the time each span
ends, so it keeps only ids and a start time while the request runs and builds the SDK's `ReadableSpan`
once, when the span ends, with its attributes in one dict. That span goes to the same span processors
a `Tracer` would feed (the OTLP `BatchSpanProcessor`, a test's in-memory exporter): what is exported is
the same. Span processors get `on_end` only; none of cutover's does anything in `on_start`.

Trace context is parsed and formatted here too (W3C `traceparent`, same rules as the SDK's propagator),
with no `Context` object and no context variable: the data plane passes ids down explicitly.
"""

from __future__ import annotations

import random
import re

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SynchronousMultiSpanProcessor, TracerProvider
from opentelemetry.sdk.trace.sampling import Sampler
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

SAMPLED = 0x01
SAMPLED_FLAGS = TraceFlags(SAMPLED)
_UNSET = Status(StatusCode.UNSET)
_TRACEPARENT = re.compile(
    r"^[ \t]*([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(?:(-.*)|[ \t]*)$"
)
_TRACEPARENT_MAX_LENGTH = 512
_TRACESTATE_MAX_LENGTH = 8192  # as the SDK's propagator


class RecordingTracerProvider(TracerProvider):
    """A `TracerProvider` whose span processors also take spans built by a `SpanRecorder`.

    Span processors are added as usual (`add_span_processor`); `span_processor` is the provider's own
    multi-processor, kept so spans that did not come from one of its tracers can be handed to it."""

    def __init__(self, *, sampler: Sampler, resource: Resource, shutdown_on_exit: bool = False) -> None:
        self.span_processor = SynchronousMultiSpanProcessor()  # type: ignore[no-untyped-call]
        super().__init__(
            sampler=sampler,
            resource=resource,
            shutdown_on_exit=shutdown_on_exit,
            active_span_processor=self.span_processor,
        )


class SpanRecorder:
    """Hands finished spans, built in one call, to a provider's span processors."""

    __slots__ = ("_processor", "_resource", "_scope")

    def __init__(self, provider: RecordingTracerProvider, scope_name: str) -> None:
        self._processor = provider.span_processor
        self._resource = provider.resource
        self._scope = InstrumentationScope(scope_name)

    def record(
        self,
        name: str,
        kind: SpanKind,
        trace_id: int,
        span_id: int,
        parent: SpanContext | None,
        start_ns: int,
        end_ns: int,
        attributes: dict[str, str | int],
        status: Status = _UNSET,
        trace_state: TraceState | None = None,
    ) -> None:
        """One sampled span, ended. `attributes` is kept as given (the caller builds a fresh dict)."""
        context = SpanContext(trace_id, span_id, False, SAMPLED_FLAGS, trace_state)
        self._processor.on_end(
            ReadableSpan(
                name,
                context,
                parent,
                self._resource,
                attributes,
                kind=kind,
                status=status,
                start_time=start_ns,
                end_time=end_ns,
                instrumentation_scope=self._scope,
            )
        )


def new_trace_id() -> int:
    # As the SDK's RandomIdGenerator: 128 random bits, never the invalid all-zero id.
    while True:
        trace_id = random.getrandbits(128)
        if trace_id:
            return trace_id


def new_span_id() -> int:
    while True:
        span_id = random.getrandbits(64)
        if span_id:
            return span_id


def parse_traceparent(value: str) -> tuple[int, int, int] | None:
    """(trace id, parent span id, trace flags) of a W3C `traceparent`; None when it is not a valid one.

    The rules of the SDK's `TraceContextTextMapPropagator`: lowercase hex, non-zero ids, version `ff`
    invalid, nothing after the flags in version 00 (later versions may append fields)."""
    if len(value) > _TRACEPARENT_MAX_LENGTH:
        return None
    match = _TRACEPARENT.match(value)
    if match is None:
        return None
    version, trace_hex, span_hex, flags_hex, rest = match.groups()
    if version == "ff" or (version == "00" and rest):
        return None
    trace_id, span_id = int(trace_hex, 16), int(span_hex, 16)
    if not trace_id or not span_id:
        return None
    return trace_id, span_id, int(flags_hex, 16)


def format_traceparent(trace_id: int, span_id: int, flags: int) -> str:
    return f"00-{trace_id:032x}-{span_id:016x}-{flags:02x}"


def parse_tracestate(value: str | None) -> TraceState | None:
    """The SDK's reading of a `tracestate` header (None when absent or too long)."""
    if value is None or len(value) > _TRACESTATE_MAX_LENGTH:
        return None
    return TraceState.from_header([value])
