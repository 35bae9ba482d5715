"""The proxy's metrics, as OpenTelemetry instruments over what the runtime already counts.

Every metric name here is a stable interface (dashboards and alerts use them); README.md lists them.
Per-request figures come from `RequestTelemetry` (the hot path's plain counters and histograms) and
`DataPlaneStats`; phase, cache and spool figures from memory; buffer and worker figures from Redis and
phase-change counts from PostgreSQL, read once per scrape before the collection (OpenTelemetry's
callbacks are synchronous). A store that does not answer leaves its metrics out of that scrape and sets
its `cutover_*_up` gauge to 0; nothing stale is reported as current.

Two kinds of series:
- this process's own (requests, latencies, shadow outcomes, spool, readiness): summed over replicas;
- fleet-wide (`scope="fleet"`): the same value from every proxy, because it is read from shared state
  (tenants per phase, phase changes, buffer depth, lag and dead letters, worker totals). Summed over
  replicas they would count N times, so they carry `scope="fleet"` and are aggregated with `max`. Their
  `tenant` labels follow `telemetry.tenant_labels` only (not the per-process top-N promotion), so that
  every proxy reports the very same series.
Every proxy exports both (no election: a fleet series stays as long as any proxy is scraped).

Shadow outcomes are one counter, `cutover_shadow_reads_total{outcome}`, with exclusive outcomes that sum
to the reads considered: equal, noise, divergent, failed (the shadow side errored or timed out), error
(the comparison machinery failed), skipped (no budget), unsampled. Hook for outcomes the data plane does
not count itself (the divergence engine's `noise`, or a refined `divergent`): put a reader in
`runtime.telemetry.shadow_counters[outcome]`; it replaces the built-in count of that outcome.
"""

from __future__ import annotations

import asyncio
import logging
import platform
from collections.abc import Iterable
from importlib.metadata import version
from typing import Any

from common.store_errors import BUFFER_ERRORS, STORE_ERRORS
from proxy.admin.copy_metrics import CopyMetrics
from proxy.admin.readiness import Readiness, readiness
from proxy.runtime import Runtime
from routing.phases import Phase
from telemetry.labels import OTHER
from telemetry.prometheus import MetricsExposition
from telemetry.tracing import cutover_version

log = logging.getLogger("cutover.metrics")
_STORE_TIMEOUT_S = 3.0
SHADOW_OUTCOMES = ("equal", "noise", "divergent", "failed", "error", "skipped", "unsampled")
FLEET = {"scope": "fleet"}
Points = Iterable[tuple[float, dict[str, str]]]


def fleet(points: Points) -> Points:
    """The same points, labelled as fleet-wide (see the module docstring)."""
    return [(value, {**labels, **FLEET}) for value, labels in points]


class ProxyMetrics:
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._telemetry = runtime.telemetry
        self._buffer: dict[str, Any] | None = None
        self._phase_changes: list[tuple[Phase, bool, int]] | None = None
        exposition = MetricsExposition(runtime.settings.telemetry.service_name)
        self._exposition = exposition
        # Fleet-wide series name only configured tenants: the same set on every proxy.
        self._configured = frozenset(runtime.settings.telemetry.tenant_labels)
        self._process(exposition)
        self._requests(exposition)
        self._phases(exposition)
        self._shadow(exposition)
        self._buffer_metrics(exposition)
        self._copies = CopyMetrics(runtime, exposition)  # the REST copy: proxy/admin/copy_metrics.py

    async def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition in the format `accept` asks for (OpenMetrics or Prometheus text), and its type."""
        await asyncio.gather(self._refresh_buffer(), self._refresh_phase_changes(), self._copies.refresh())
        self._telemetry.labels.promote()
        return self._exposition.render(accept)

    def close(self) -> None:
        self._exposition.shutdown()

    # -- the process ----------------------------------------------------------------------------------
    def _process(self, e: MetricsExposition) -> None:
        build = {
            "version": cutover_version(),
            "python": platform.python_version(),
            "opentelemetry": version("opentelemetry-sdk"),
        }
        e.gauge("cutover_build_info", "Always 1; the labels say what runs", lambda: [(1, build)])
        runtime = self._runtime
        e.gauge(
            "cutover_ready",
            "1 when this proxy process serves (as GET /readyz: phases loaded, buffer taking intents)",
            lambda: [(int(readiness(runtime.cache, runtime.sink) is not Readiness.NOT_READY), {})],
        )

    # -- per request ----------------------------------------------------------------------------------
    def _requests(self, e: MetricsExposition) -> None:
        telemetry, stats = self._telemetry, self._runtime.stats
        names = ("tenant", "phase", "kind", "decision", "served_by", "status_class")

        def requests() -> Points:
            return [
                (n, dict(zip(names, map(str, key), strict=True)))
                for key, n in list(telemetry.requests.items())
            ]

        e.counter(
            "cutover_requests",
            "Requests by tenant, phase, kind (read/write), routing decision (respond, fallback, unavailable,"
            " bad_gateway, gateway_timeout, rejected), side that answered (old/new/proxy) and status class",
            requests,
        )
        e.histogram(
            "cutover_request_duration",
            "Whole-request latency as the proxy saw it, by tenant, phase, kind and side that answered",
            telemetry.request_latency,
            ("tenant", "phase", "kind", "served_by"),
            unit="s",
        )
        e.histogram(
            "cutover_backend_request_duration",
            "Time from sending a request to a backend to its response head, by backend and role"
            " (serving, fallback)",
            telemetry.backend_latency,
            ("backend", "role"),
            unit="s",
        )
        e.counter(
            "cutover_fallbacks",
            "Reads served from the fallback side after the serving side failed, by phase",
            lambda: [(n, {"phase": phase}) for phase, n in stats.fallbacks.items()],
        )
        e.counter(
            "cutover_fallbacks_refused",
            "Reads answered 503 because falling back was not safe (writes toward the fallback pending)",
            lambda: [(stats.fallback_refused, {})],
        )

    # -- phases ---------------------------------------------------------------------------------------
    def _phases(self, e: MetricsExposition) -> None:
        cache = self._runtime.cache

        def tenants() -> Points:
            counts = dict.fromkeys(Phase, 0)
            for phase, _version in cache.snapshot().values():
                counts[phase] += 1
            return fleet((n, {"phase": phase.value}) for phase, n in counts.items())

        e.gauge(
            "cutover_tenants",
            "Tenants with a phase row, by phase (fleet-wide: aggregate with max)",
            tenants,
        )

        def tenant_phases() -> Points:
            return fleet(
                (1, {"tenant": tenant, "phase": cache.phase_of(tenant).value}) for tenant in self._configured
            )

        e.gauge(
            "cutover_tenant_phase_info",
            "1 for the phase of each tenant in telemetry.tenant_labels (fleet-wide; a phase change ends"
            " one series and starts another, which dashboards show as an annotation)",
            tenant_phases,
        )

        def staleness() -> Points:
            stale = cache.staleness_s()
            return [] if stale is None else [(stale, {})]

        e.gauge(
            "cutover_phase_cache_staleness",
            "Seconds since the phase cache last matched the store (0 while connected; absent before the"
            " first load)",
            staleness,
            unit="s",
        )
        e.gauge("cutover_phase_cache_loaded", "1 once phases were loaded", lambda: [(int(cache.loaded), {})])

        def changes() -> Points:
            if self._phase_changes is None:
                return []
            return fleet(
                (n, {"to": phase.value, "trigger": "auto" if auto else "human"})
                for phase, auto, n in self._phase_changes
            )

        e.counter(
            "cutover_phase_changes",
            "Audited phase changes of all proxies, by target phase and trigger (human, auto); fleet-wide",
            changes,
        )
        e.gauge(
            "cutover_phase_store_up",
            "1 when the phase store answered this scrape",
            lambda: [(int(self._phase_changes is not None), {})],
        )

    # -- shadow reads ---------------------------------------------------------------------------------
    def shadow_counts(self) -> dict[str, int]:
        """Reads considered for shadowing, by exclusive outcome (a failed read is never divergent:
        `proxy.shadow.rates`)."""
        stats = self._runtime.stats
        counts = {
            "equal": stats.shadow_equal,
            "noise": stats.shadow_noise,
            "divergent": stats.shadow_divergent,
            "failed": stats.shadow_failed,
            "error": stats.shadow_errors,
            "skipped": stats.shadow_skipped,
            "unsampled": stats.shadow_unsampled,
        }
        for name, read in list(self._telemetry.shadow_counters.items()):
            counts[name] = read()
        return counts

    def _shadow(self, e: MetricsExposition) -> None:
        e.counter(
            "cutover_shadow_reads",
            "Reads considered for shadowing, by outcome: equal, noise (differed only in noise fields),"
            " divergent, failed (the shadow side errored or timed out), error (the comparison itself"
            " failed), skipped (no budget: in-flight cap, shadow process down), unsampled",
            lambda: [(n, {"outcome": outcome}) for outcome, n in self.shadow_counts().items()],
        )
        runtime = self._runtime
        e.gauge(
            "cutover_shadow_in_flight",
            "Shadow reads admitted and not finished",
            lambda: [(runtime.shadow.in_flight, {})],
        )
        e.counter(
            "cutover_divergences_stored",
            "Divergence samples stored",
            lambda: [(runtime.stats.divergences_stored, {})],
        )
        e.counter(
            "cutover_divergences_dropped",
            "Divergence samples dropped (recorder queue full or store unavailable)",
            lambda: [(runtime.stats.divergences_dropped, {})],
        )

    # -- buffer ---------------------------------------------------------------------------------------
    def _buffer_metrics(self, e: MetricsExposition) -> None:
        runtime = self._runtime
        stats = runtime.stats
        e.counter(
            "cutover_intents_appended",
            "Acknowledged writes made into intents by this proxy",
            lambda: [(stats.intents_appended, {})],
        )
        e.counter(
            "cutover_intents_failed",
            "Writes acknowledged by the authoritative side whose intent could not be buffered (answered 503)",
            lambda: [(stats.intents_failed, {})],
        )

        def partition_gauge(field: str) -> Any:
            def read() -> Points:
                if self._buffer is None:
                    return []
                partitions = self._buffer["partitions"]
                return fleet((p[field], {"partition": str(p["partition"])}) for p in partitions)

            return read

        e.gauge(
            "cutover_buffer_length",
            "Entries in each partition's stream (fleet-wide)",
            partition_gauge("length"),
        )
        e.gauge(
            "cutover_buffer_pending",
            "Entries delivered to a worker and not yet acknowledged, per partition (fleet-wide)",
            partition_gauge("pending"),
        )
        e.gauge(
            "cutover_buffer_lag",
            "Age of the oldest unapplied intent, per partition (0 when drained; fleet-wide)",
            partition_gauge("lag_s"),
            unit="s",
        )
        e.gauge(
            "cutover_buffer_dead_letters",
            "Dead-lettered intents, per partition (fleet-wide)",
            partition_gauge("dead_letters"),
        )

        def tenant_pending() -> Points:
            if self._buffer is None:
                return []
            folded: dict[tuple[str, str], int] = {}
            for (tenant, side), n in self._buffer["tenant_pending"].items():
                key = (tenant if tenant in self._configured else OTHER, side)
                folded[key] = folded.get(key, 0) + n
            return fleet((n, {"tenant": tenant, "target": side}) for (tenant, side), n in folded.items())

        e.gauge(
            "cutover_buffer_tenant_pending",
            "Intents appended and not yet applied, by tenant (telemetry.tenant_labels, else other) and"
            " target side (fleet-wide)",
            tenant_pending,
        )

        def worker_total(name: str) -> Any:
            return lambda: [] if self._buffer is None else fleet([(self._buffer["worker"].get(name, 0), {})])

        e.counter(
            "cutover_buffer_applied", "Intents applied by all workers (fleet-wide)", worker_total("applied")
        )
        e.counter(
            "cutover_buffer_retries",
            "Apply attempts retried by all workers (fleet-wide)",
            worker_total("retries"),
        )
        e.counter(
            "cutover_buffer_dead_lettered",
            "Intents moved to a dead-letter stream by all workers (fleet-wide)",
            worker_total("dead_lettered"),
        )
        e.counter(
            "cutover_buffer_duplicates",
            "Copies of applied intents skipped by the workers' ledger (HTTP applier; fleet-wide)",
            worker_total("duplicates"),
        )
        e.counter(
            "cutover_buffer_in_doubt",
            "Intents whose fate was unknown, settled from the authoritative side (HTTP applier; fleet-wide)",
            worker_total("in_doubt"),
        )
        e.gauge(
            "cutover_buffer_up",
            "1 when Redis answered this scrape",
            lambda: [(int(self._buffer is not None), {})],
        )

        def spool(field: str) -> Any:
            return lambda: [(float(runtime.sink.status().get(field, 0)), {})]  # type: ignore[arg-type]

        e.gauge(
            "cutover_spool_intents",
            "Intents waiting in this proxy's local spool (Redis unreachable)",
            spool("spooled"),
        )
        e.gauge("cutover_spool_bytes", "Size of this proxy's local spool", spool("spool_bytes"), unit="By")
        e.gauge(
            "cutover_spool_accepting",
            "1 while the spool can take more intents (0: mirroring writes are refused)",
            lambda: [(int(bool(runtime.sink.status().get("accepting", True))), {})],
        )

    # -- async reads before a collection --------------------------------------------------------------
    async def _refresh_buffer(self) -> None:
        try:
            async with asyncio.timeout(_STORE_TIMEOUT_S):
                self._buffer = await self._runtime.inspector.gauges()
        except BUFFER_ERRORS as exc:
            log.warning("metrics: buffer figures unavailable (%s)", type(exc).__name__)
            self._buffer = None

    async def _refresh_phase_changes(self) -> None:
        try:
            async with asyncio.timeout(_STORE_TIMEOUT_S):
                counts = await self._runtime.store.change_counts()
        except STORE_ERRORS as exc:
            log.warning("metrics: phase-change counts unavailable (%s)", type(exc).__name__)
            self._phase_changes = None
            return
        self._phase_changes = counts
