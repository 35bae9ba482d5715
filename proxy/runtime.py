"""Everything one proxy process runs, built from `Settings` once, started and stopped in order."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from contextlib import AsyncExitStack
from dataclasses import dataclass

import asyncpg
import redis.asyncio as aioredis

from backends.client import BackendClient
from buffer_worker.inspect import BufferInspector
from buffer_worker.producer import RedisIntentProducer
from buffer_worker.sink import IntentSink
from buffer_worker.spool import SpoolingSink
from buffer_worker.spool_check import spool_file
from config.settings import Settings
from proxy.control.phase_moves import PhaseMover
from proxy.control.phase_store import PhaseStore
from proxy.control.presence import ProxyPresence
from proxy.control.rollback import RollbackMonitor
from proxy.control.seen_tenants import SeenTenants
from proxy.dataplane.app import DataPlane
from proxy.dataplane.executor import Executor
from proxy.dataplane.phase_cache import PhaseCache
from proxy.dataplane.request_router import RequestRouter
from proxy.dataplane.request_telemetry import RequestTelemetry
from proxy.dataplane.sql_endpoint import SqlRouter
from proxy.dataplane.stats import DataPlaneStats
from proxy.dataplane.write_gate import WriteGate
from proxy.health.recorder import HealthRecorder, window_capacity
from proxy.health.series import SideSeries
from proxy.shadow.runner import ShadowRunner
from routing.phases import Side
from telemetry.tracing import build_tracer_provider

log = logging.getLogger("cutover.runtime")


@dataclass
class Runtime:
    settings: Settings
    stats: DataPlaneStats
    cache: PhaseCache
    store: PhaseStore
    upstreams: dict[Side, BackendClient]
    sink: IntentSink
    shadow: ShadowRunner
    data_plane: DataPlane
    pool: asyncpg.Pool
    inspector: BufferInspector
    presence: ProxyPresence
    gate: WriteGate
    seen: SeenTenants
    telemetry: RequestTelemetry
    mover: PhaseMover
    rollback: RollbackMonitor | None = None
    health: HealthRecorder | None = None

    @classmethod
    async def create(
        cls, settings: Settings, *, sink: IntentSink | None = None, process_index: int = 0
    ) -> Runtime:
        """Connect and start every component, in order; if one fails, stop those already started.
        A phase store that cannot be reached is not fatal: the process starts not-ready and the cache
        keeps trying to connect."""
        stats = DataPlaneStats()
        shadow = ShadowRunner(settings, stats)
        health_settings = settings.operator.health
        labels = settings.telemetry.tenant_labels
        series = (
            SideSeries(capacity=window_capacity(health_settings, labels)) if health_settings.enabled else None
        )
        telemetry = RequestTelemetry(
            settings.telemetry,
            build_tracer_provider(settings.telemetry, component="proxy", roots_sampled_by_caller=True),
            route=shadow.route,  # spans are named by the divergence policy's resources (reloadable)
            series=series,
            access_log=settings.access_log,
        )
        dsn = settings.postgres_url.get_secret_value()
        redis_url = settings.redis_url.get_secret_value()
        buffer = settings.buffer
        if sink is None:
            producer = RedisIntentProducer.from_url(
                redis_url, prefix=buffer.key_prefix, partitions=buffer.partitions
            )
            sink = SpoolingSink(
                producer,
                spool_file(buffer.spool_path, process_index),
                max_bytes=buffer.spool_max_bytes,
                check_interval_s=buffer.spool_check_interval_s,
            )
        cache = PhaseCache(
            dsn,
            default_phase=settings.default_phase,
            reload_interval_s=settings.phases.reload_interval_s,
            reconnect_interval_s=settings.phases.reconnect_interval_s,
        )
        upstreams = {side: BackendClient.of(settings, side) for side in Side}
        inspector = BufferInspector(
            aioredis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=2),
            prefix=buffer.key_prefix,
            partitions=buffer.partitions,
        )
        async with AsyncExitStack() as started:
            started.push_async_callback(inspector.close)
            store = await PhaseStore.connect(dsn, default_phase=settings.default_phase)
            started.push_async_callback(store.close)
            proxy_id = f"{settings.proxy_id or socket.gethostname() + ':' + str(os.getpid())}/{process_index}"
            presence = ProxyPresence(store.pool, proxy_id)
            gate = WriteGate(
                hold_timeout_s=settings.barrier.hold_timeout_s, confirm=presence.confirm, spooled=sink.spooled
            )
            cache.on_barrier = gate.handle
            for upstream in upstreams.values():
                await upstream.start()
                started.push_async_callback(upstream.close)
            started.push_async_callback(sink.close)
            await sink.start()
            started.push_async_callback(shadow.stop)
            started.push_async_callback(cache.stop)
            await asyncio.gather(cache.start(), shadow.start())
            started.push_async_callback(gate.stop)
            started.push_async_callback(presence.stop)
            presence.start(lambda: cache.loaded)
            seen = SeenTenants(store.pool, settings.operator.seen_tenants)
            started.push_async_callback(seen.stop)
            seen.start()
            health = None
            if series is not None:
                health = HealthRecorder(
                    store.pool,
                    health_settings,
                    series,
                    labels=labels,
                    # One process per proxy samples the buffer (Redis's state is the same for all).
                    backlog=inspector.gauges if process_index == 0 else None,
                    partitions=buffer.partitions,
                )
                started.push_async_callback(health.stop)
                health.start()
            if not cache.loaded:
                log.warning(
                    "phases not loaded yet (%s); the data plane answers 503 until they are", cache.last_error
                )
            executor = Executor(
                upstreams,
                shadow,
                sink,
                stats,
                capture_limit=settings.shadow.compare_max_bytes,
                telemetry=telemetry,
                note_tenant=seen.note if settings.operator.seen_tenants.enabled else None,
            )
            data_plane = DataPlane(
                cache=cache,
                executor=executor,
                gate=gate,
                tenant_header=settings.tenant.header,
                max_body_bytes=settings.max_body_bytes,
                telemetry=telemetry,
                router=RequestRouter(SqlRouter(settings) if settings.sql.endpoints else None),
            )
            runtime = cls(
                settings,
                stats,
                cache,
                store,
                upstreams,
                sink,
                shadow,
                data_plane,
                store.pool,
                inspector,
                presence,
                gate,
                seen,
                telemetry,
                PhaseMover(store=store, cache=cache, settings=settings, inspector=inspector),
            )
            runtime.health = health
            runtime.rollback = RollbackMonitor(
                dsn=dsn, store=store, mover=runtime.mover, policy=lambda: shadow.policy, stats=stats
            )
            runtime.rollback.start()
            started.pop_all()  # success: from now on `close` owns the shutdown
        return runtime

    async def close(self) -> None:
        """Stop in the reverse order of `create`."""
        if self.health is not None:
            await self.health.stop()
        await self.seen.stop()
        if self.rollback is not None:
            await self.rollback.stop()
        await self.presence.stop()
        await self.gate.stop()
        await self.cache.stop()
        await self.shadow.stop()
        await self.sink.close()
        for upstream in self.upstreams.values():
            await upstream.close()
        await self.store.close()
        await self.inspector.close()
        await asyncio.to_thread(self.telemetry.shutdown)  # flushes spans still queued for export
