"""Everything one proxy process runs, built from `Settings` once, started and stopped in order."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from dataclasses import dataclass

import asyncpg
import redis.asyncio as aioredis

from buffer_worker.inspect import BufferInspector
from buffer_worker.producer import RedisIntentProducer
from buffer_worker.sink import IntentSink
from buffer_worker.spool import SpoolingSink
from config.settings import Settings
from proxy.app import DataPlane
from proxy.executor import Executor
from proxy.phase_cache import PhaseCache
from proxy.phase_store import PhaseStore
from proxy.presence import ProxyPresence
from proxy.shadow import ShadowRunner
from proxy.stats import DataPlaneStats
from proxy.upstream import Upstream
from proxy.write_gate import WriteGate
from routing.phases import Side

log = logging.getLogger("cutover.runtime")


@dataclass
class Runtime:
    settings: Settings
    stats: DataPlaneStats
    cache: PhaseCache
    store: PhaseStore
    upstreams: dict[Side, Upstream]
    sink: IntentSink
    shadow: ShadowRunner
    data_plane: DataPlane
    pool: asyncpg.Pool
    inspector: BufferInspector
    presence: ProxyPresence
    gate: WriteGate

    @classmethod
    async def create(
        cls, settings: Settings, *, sink: IntentSink | None = None, process_index: int = 0
    ) -> Runtime:
        """Connect and start every component. A phase store that cannot be reached is not fatal: the
        process starts not-ready and the cache keeps trying to connect."""
        stats = DataPlaneStats()
        dsn = settings.postgres_url.get_secret_value()
        store = await PhaseStore.connect(dsn, default_phase=settings.default_phase)
        pool = store.pool
        cache = PhaseCache(
            dsn,
            default_phase=settings.default_phase,
            reload_interval_s=settings.phases.reload_interval_s,
            reconnect_interval_s=settings.phases.reconnect_interval_s,
        )
        upstreams = {side: Upstream(side, getattr(settings.backends, side.value)) for side in Side}
        for upstream in upstreams.values():
            await upstream.start()
        if sink is None:
            producer = RedisIntentProducer.from_url(
                settings.redis_url.get_secret_value(),
                prefix=settings.buffer.key_prefix,
                partitions=settings.buffer.partitions,
            )
            # One spool file per proxy process: a restarted process resumes its own predecessor's spool.
            sink = SpoolingSink(
                producer,
                f"{settings.buffer.spool_path}.{process_index}",
                max_bytes=settings.buffer.spool_max_bytes,
            )
        await sink.start()
        shadow = ShadowRunner(settings, stats)
        proxy_id = f"{settings.proxy_id or socket.gethostname() + ':' + str(os.getpid())}/{process_index}"
        presence = ProxyPresence(pool, proxy_id)
        gate = WriteGate(
            hold_timeout_s=settings.barrier.hold_timeout_s, confirm=presence.confirm, spooled=sink.spooled
        )
        cache.on_barrier = gate.handle
        executor = Executor(upstreams, shadow, sink, stats, capture_limit=settings.shadow.compare_max_bytes)
        data_plane = DataPlane(
            cache=cache,
            executor=executor,
            gate=gate,
            tenant_header=settings.tenant.header,
            max_body_bytes=settings.max_body_bytes,
        )
        await asyncio.gather(cache.start(), shadow.start())
        presence.start(lambda: cache.loaded)
        if not cache.loaded:
            log.warning(
                "phases not loaded yet (%s); the data plane answers 503 until they are", cache.last_error
            )
        inspector = BufferInspector(
            aioredis.Redis.from_url(
                settings.redis_url.get_secret_value(), socket_timeout=5, socket_connect_timeout=2
            ),
            prefix=settings.buffer.key_prefix,
            partitions=settings.buffer.partitions,
        )
        return cls(
            settings,
            stats,
            cache,
            store,
            upstreams,
            sink,
            shadow,
            data_plane,
            pool,
            inspector,
            presence,
            gate,
        )

    async def close(self) -> None:
        await self.gate.stop()
        await self.presence.stop()
        await self.shadow.stop()
        await self.cache.stop()
        for upstream in self.upstreams.values():
            await upstream.close()
        await self.sink.close()
        await self.inspector.close()
        await self.store.close()
