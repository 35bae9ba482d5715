"""OpenTelemetry metrics, rendered as Prometheus text on demand (the admin API's `GET /metrics`).

The hot path does not call OpenTelemetry instruments. A counter `add` or histogram `record` of the
OpenTelemetry SDK costs 6-9 µs here (attribute validation and hashing on every call), which is 5-7 % of
a proxied request per call. Instead the hot path bumps plain dicts (`collections.Counter`, and
`FastHistogram` below: ~0.3 µs), and the SDK reads them when a scrape collects:

- counters and gauges are observable instruments whose callbacks read the plain counts;
- histograms have no observable instrument in OpenTelemetry, so `FastHistogram`s are turned into the
  SDK's own histogram data points and handed to the Prometheus translation with the rest.

The Prometheus text itself is the `opentelemetry-exporter-prometheus` reader's, over a registry of our
own (never the process-global one: several runtimes may share a test process). The same registry holds
prometheus_client's process collector (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
`process_open_fds`, `process_start_time_seconds`, ...), and is rendered as OpenMetrics when the scraper
asks for it (`Accept: application/openmetrics-text`), else as the Prometheus text format 0.0.4.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics._internal.exemplar import AlwaysOffExemplarFilter
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.exposition import choose_encoder

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
_SCOPE = InstrumentationScope("cutover")


class FastHistogram:
    """Cumulative fixed-bucket histograms, one per label key (a tuple of label values).

    Each series is a list: one count per bucket (`le` bound, then +Inf), then the sum."""

    __slots__ = ("bounds", "_series", "_start_ns")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self._series: dict[Hashable, list[float]] = {}
        self._start_ns = time.time_ns()

    def record(self, key: Hashable, value: float) -> None:
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = [0] * (len(self.bounds) + 1) + [0.0]
        # bisect_left: the first bound >= value, i.e. the Prometheus `le` bucket the value falls in.
        series[bisect_left(self.bounds, value)] += 1
        series[-1] += value

    def series(self) -> dict[Hashable, tuple[list[int], float]]:
        return {key: ([int(n) for n in s[:-1]], s[-1]) for key, s in self._series.items()}

    def data_points(self, label_names: Sequence[str]) -> list[HistogramDataPoint]:
        now = time.time_ns()
        points = []
        for key, (counts, total) in self.series().items():
            values = key if isinstance(key, tuple) else (key,)
            points.append(
                HistogramDataPoint(
                    attributes=dict(zip(label_names, map(str, values), strict=True)),
                    start_time_unix_nano=self._start_ns,
                    time_unix_nano=now,
                    count=sum(counts),
                    sum=total,
                    bucket_counts=counts,
                    explicit_bounds=self.bounds,
                    # Not tracked (one comparison less per request); not part of the Prometheus text.
                    min=math.nan,
                    max=math.nan,
                )
            )
        return points


@dataclass(frozen=True)
class _HistogramExport:
    name: str
    description: str
    unit: str
    histogram: FastHistogram
    label_names: tuple[str, ...]

    def metric(self) -> Metric:
        return Metric(
            name=self.name,
            description=self.description,
            unit=self.unit,
            data=Histogram(
                data_points=self.histogram.data_points(self.label_names),
                aggregation_temporality=AggregationTemporality.CUMULATIVE,
            ),
        )


class _Reader(PrometheusMetricReader):
    """The Prometheus reader, plus the pre-aggregated histograms in every collection."""

    def __init__(self, registry: CollectorRegistry, histograms: list[_HistogramExport]) -> None:
        super().__init__(disable_target_info=True, scope_info_enabled=False, registry=registry)
        self._histograms = histograms

    def _receive_metrics(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> None:
        extra = ScopeMetrics(scope=_SCOPE, metrics=[h.metric() for h in self._histograms], schema_url="")
        resource_metrics = list(metrics_data.resource_metrics) if metrics_data is not None else []
        resource = resource_metrics[0].resource if resource_metrics else Resource({})
        resource_metrics.append(ResourceMetrics(resource=resource, scope_metrics=[extra], schema_url=""))
        super()._receive_metrics(MetricsData(resource_metrics=resource_metrics), timeout_millis, **kwargs)


Callback = Callable[[], Iterable[tuple[float, dict[str, str]]]]


class MetricsExposition:
    """One MeterProvider whose only reader renders Prometheus text when asked (no background thread)."""

    def __init__(self, service_name: str) -> None:
        self._registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self._registry)
        self._histograms: list[_HistogramExport] = []
        self._reader = _Reader(self._registry, self._histograms)
        self._provider = MeterProvider(
            metric_readers=[self._reader],
            resource=Resource({"service.name": service_name}),
            exemplar_filter=AlwaysOffExemplarFilter(),
            shutdown_on_exit=False,
        )
        # The SDK turns itself into a no-op when OTEL_SDK_DISABLED=true is in the environment, read here,
        # after start. `/metrics` is cutover's own interface, switched by `telemetry.metrics`; the
        # variable turns tracing off (config/otel_env.py), not this.
        self._provider._disabled = False
        self.meter: Meter = self._provider.get_meter("cutover")

    def counter(self, name: str, description: str, read: Callback, *, unit: str = "") -> None:
        """A monotonic count; `read` returns (value, labels) pairs. Exported as `<name>_total`."""
        self.meter.create_observable_counter(name, [_observe(read)], unit=unit, description=description)

    def gauge(self, name: str, description: str, read: Callback, *, unit: str = "") -> None:
        self.meter.create_observable_gauge(name, [_observe(read)], unit=unit, description=description)

    def histogram(
        self, name: str, description: str, histogram: FastHistogram, label_names: Sequence[str], *, unit: str
    ) -> None:
        self._histograms.append(_HistogramExport(name, description, unit, histogram, tuple(label_names)))

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition in the format `accept` asks for, and its content type."""
        encode, content_type = choose_encoder(accept or "")
        return encode(self._registry), content_type

    def shutdown(self) -> None:
        self._provider.shutdown()


def _observe(read: Callback) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def callback(_options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(value, labels) for value, labels in read()]

    return callback
