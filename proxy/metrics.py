"""The proxy's metrics, as OpenTelemetry instruments over what the runtime already counts.

Every metric name here is a stable interface (dashboards and alerts use them); README.md lists them.
Per-request figures come from `RequestTelemetry` (the hot path's plain counters and histograms) and
`DataPlaneStats`; phase, cache and spool figures from memory; buffer and worker figures from Redis and
phase-change counts from PostgreSQL, read once per scrape before the collection (OpenTelemetry's
callbacks are synchronous). A store that does not answer leaves its metrics out of that scrape and sets
its `cutover_*_up` gauge to 0; nothing stale is reported as current.

Hook for shadow outcomes the data plane does not count itself (the divergence engine's `noise`, or a
refined `divergent`): put a reader in `runtime.telemetry.shadow_counters[name]`; it replaces the built-in
count of that name (compared, equal, divergent, failed, noise, skipped, unsampled, errors).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import asyncpg
from redis.exceptions import RedisError

from proxy.copy_metrics import CopyMetrics
from routing.phases import Phase
from telemetry.labels import OTHER
from telemetry.prometheus import MetricsExposition

if TYPE_CHECKING:
    from proxy.runtime import Runtime

log = logging.getLogger("cutover.metrics")
_STORE_TIMEOUT_S = 3.0
SHADOW_OUTCOMES = ("compared", "equal", "divergent", "failed", "noise", "skipped", "unsampled", "errors")
Points = Iterable[tuple[float, dict[str, str]]]


class ProxyMetrics:
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._telemetry = runtime.telemetry
        self._buffer: dict[str, Any] | None = None
        self._phase_changes: list[tuple[Phase, bool, int]] | None = None
        exposition = MetricsExposition(runtime.settings.telemetry.service_name)
        self._exposition = exposition
        self._requests(exposition)
        self._phases(exposition)
        self._shadow(exposition)
        self._buffer_metrics(exposition)
        self._copies = CopyMetrics(runtime, exposition)  # the REST copy: proxy/copy_metrics.py

    async def render(self) -> bytes:
        await asyncio.gather(self._refresh_buffer(), self._refresh_phase_changes(), self._copies.refresh())
        self._telemetry.labels.promote()
        return self._exposition.render()

    def close(self) -> None:
        self._exposition.shutdown()

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
            "Whole-request latency as the proxy saw it, by phase, kind and side that answered",
            telemetry.request_latency,
            ("phase", "kind", "served_by"),
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
            return [(n, {"phase": phase.value}) for phase, n in counts.items()]

        e.gauge(
            "cutover_tenants",
            "Tenants with a phase row, by phase (as this proxy's cache holds them)",
            tenants,
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
            return [
                (n, {"to": phase.value, "trigger": "auto" if auto else "human"})
                for phase, auto, n in self._phase_changes
            ]

        e.counter(
            "cutover_phase_changes",
            "Audited phase changes (all proxies), by target phase and trigger (human, auto)",
            changes,
        )
        e.gauge(
            "cutover_phase_store_up",
            "1 when the phase store answered this scrape",
            lambda: [(int(self._phase_changes is not None), {})],
        )

    # -- shadow reads ---------------------------------------------------------------------------------
    def shadow_counts(self) -> dict[str, int]:
        stats = self._runtime.stats
        counts = {
            "compared": stats.shadow_compared,
            "equal": stats.shadow_equal,
            "divergent": stats.shadow_divergent,
            "failed": stats.shadow_failed,
            "noise": stats.shadow_noise,
            "skipped": stats.shadow_skipped,
            "unsampled": stats.shadow_unsampled,
            "errors": stats.shadow_errors,
        }
        for name, read in list(self._telemetry.shadow_counters.items()):
            counts[name] = read()
        return counts

    def _shadow(self, e: MetricsExposition) -> None:
        descriptions = {
            "compared": "Shadow reads compared with the served answer",
            "equal": "Shadow reads whose answer equalled the served one",
            "divergent": "Shadow reads whose answer differed (including shadow-side failures)",
            "failed": "Shadow reads where the shadow side errored or timed out (counted as divergent too)",
            "noise": "Shadow reads that differed only in fields learned or configured as noise",
            "skipped": "Reads not shadowed for lack of budget (in-flight cap reached, shadow process down)",
            "unsampled": "Reads not shadowed because the tenant's sample rate left them out",
            "errors": "Shadow comparisons the machinery itself failed on",
        }
        for outcome in SHADOW_OUTCOMES:
            e.counter(
                f"cutover_shadow_{outcome}",
                descriptions[outcome],
                lambda outcome=outcome: [(self.shadow_counts().get(outcome, 0), {})],  # type: ignore[misc]
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
                return [(p[field], {"partition": str(p["partition"])}) for p in self._buffer["partitions"]]

            return read

        e.gauge("cutover_buffer_length", "Entries in each partition's stream", partition_gauge("length"))
        e.gauge(
            "cutover_buffer_pending",
            "Entries delivered to a worker and not yet acknowledged, per partition",
            partition_gauge("pending"),
        )
        e.gauge(
            "cutover_buffer_lag",
            "Age of the oldest unapplied intent, per partition (0 when drained)",
            partition_gauge("lag_s"),
            unit="s",
        )
        e.gauge(
            "cutover_buffer_dead_letters",
            "Dead-lettered intents, per partition",
            partition_gauge("dead_letters"),
        )

        def tenant_pending() -> Points:
            if self._buffer is None:
                return []
            labels = self._telemetry.labels.labelled
            folded: dict[tuple[str, str], int] = {}
            for (tenant, side), n in self._buffer["tenant_pending"].items():
                key = (tenant if tenant in labels else OTHER, side)
                folded[key] = folded.get(key, 0) + n
            return [(n, {"tenant": tenant, "target": side}) for (tenant, side), n in folded.items()]

        e.gauge(
            "cutover_buffer_tenant_pending",
            "Intents appended and not yet applied, by tenant (labelled tenants, else other) and target side",
            tenant_pending,
        )

        def worker_total(name: str) -> Any:
            return lambda: [] if self._buffer is None else [(self._buffer["worker"].get(name, 0), {})]

        e.counter("cutover_buffer_applied", "Intents applied by all workers", worker_total("applied"))
        e.counter("cutover_buffer_retries", "Apply attempts retried by all workers", worker_total("retries"))
        e.counter(
            "cutover_buffer_dead_lettered",
            "Intents moved to a dead-letter stream by all workers",
            worker_total("dead_lettered"),
        )
        e.counter(
            "cutover_buffer_duplicates",
            "Copies of applied intents skipped by the workers' ledger (HTTP applier)",
            worker_total("duplicates"),
        )
        e.counter(
            "cutover_buffer_in_doubt",
            "Intents whose fate was unknown, settled from the authoritative side (HTTP applier)",
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
            self._buffer = await asyncio.wait_for(self._runtime.inspector.gauges(), _STORE_TIMEOUT_S)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("metrics: buffer figures unavailable (%s)", type(exc).__name__)
            self._buffer = None

    async def _refresh_phase_changes(self) -> None:
        try:
            counts = await asyncio.wait_for(self._runtime.store.change_counts(), _STORE_TIMEOUT_S)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            log.warning("metrics: phase-change counts unavailable (%s)", type(exc).__name__)
            self._phase_changes = None
            return
        self._phase_changes = counts
