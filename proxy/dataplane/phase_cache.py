"""Every proxy's in-memory copy of tenant phases: the hot path reads a dict, never a store.

Kept fresh by LISTEN/NOTIFY (a change is in force within milliseconds) with a periodic full reload as the
backstop for a missed notification. LISTEN is registered *before* each full load, so a change committed
between the two is seen by one or the other; versions only move forward, so the order in which the
notification and the reload land does not matter.

A cache that has never loaded is not ready: the data plane answers 503 rather than guess a phase. One that
loses the store later keeps serving the last known phases and reports itself stale.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import asyncpg

from common.tasks import cancel_and_wait
from proxy.control.schema import BARRIER_CHANNEL, PHASE_CHANNEL, ensure_schema
from routing.phases import Phase

log = logging.getLogger("cutover.phases")


class PhaseCache:
    def __init__(
        self, dsn: str, *, default_phase: Phase, reload_interval_s: float, reconnect_interval_s: float
    ):
        self._dsn = dsn
        self.default_phase = default_phase
        self._reload_interval_s = reload_interval_s
        self._reconnect_interval_s = reconnect_interval_s
        self._phases: dict[str, tuple[Phase, int]] = {}
        self.loaded = False
        self.connected = False
        self.last_sync_monotonic: float | None = None
        self.last_error: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._first_load = asyncio.Event()
        # Barrier notifications ride on the same LISTEN connection (see proxy.dataplane.write_gate).
        self.on_barrier: Callable[[dict[str, Any]], None] | None = None

    # -- hot path -------------------------------------------------------------------------------------
    def phase_of(self, tenant: str | None) -> Phase:
        if tenant is None:
            return self.default_phase
        entry = self._phases.get(tenant)
        return self.default_phase if entry is None else entry[0]

    def version_of(self, tenant: str) -> int:
        entry = self._phases.get(tenant)
        return 0 if entry is None else entry[1]

    # -- state ----------------------------------------------------------------------------------------
    def staleness_s(self) -> float | None:
        """Seconds since the cache was last known to match the store (None if never loaded)."""
        if self.last_sync_monotonic is None:
            return None
        return 0.0 if self.connected else time.monotonic() - self.last_sync_monotonic

    def snapshot(self) -> dict[str, tuple[Phase, int]]:
        return dict(self._phases)

    def apply(self, tenant: str, phase: Phase, version: int) -> None:
        current = self._phases.get(tenant)
        if current is None or version > current[1]:
            self._phases[tenant] = (phase, version)

    # -- lifecycle ------------------------------------------------------------------------------------
    async def start(self, wait_s: float = 5.0) -> None:
        """Start syncing; wait up to `wait_s` for the first load (the cache stays not-ready otherwise)."""
        self._task = asyncio.create_task(self._run(), name="phase-cache")
        with suppress(TimeoutError):
            async with asyncio.timeout(wait_s):
                await self._first_load.wait()

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    async def _run(self) -> None:
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self._dsn, timeout=self._reconnect_interval_s * 5)
                await self._follow(conn)
            except asyncio.CancelledError:
                raise
            except (
                OSError,
                asyncpg.PostgresError,
                asyncpg.InterfaceError,
                ConnectionError,
                TimeoutError,
            ) as exc:
                if self.connected or self.last_error is None:
                    log.warning("phase store unreachable (%s); serving last known phases", type(exc).__name__)
                self.connected = False
                self.last_error = type(exc).__name__
            finally:
                if conn is not None and not conn.is_closed():
                    conn.terminate()
            await asyncio.sleep(self._reconnect_interval_s)

    async def _follow(self, conn: asyncpg.Connection) -> None:
        """LISTEN, then reload every `reload_interval_s` until the connection is lost."""
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        await ensure_schema(conn)
        await conn.add_listener(PHASE_CHANNEL, self._on_notify)
        await conn.add_listener(BARRIER_CHANNEL, self._on_barrier_notify)
        while not lost.is_set():
            await self._reload(conn)
            # asyncio.wait, not wait_for: a cancel (stop) must never be mistaken for the timeout.
            lost_wait = asyncio.ensure_future(lost.wait())
            try:
                await asyncio.wait({lost_wait}, timeout=self._reload_interval_s)
            finally:
                lost_wait.cancel()
        raise ConnectionError("phase store connection closed")

    async def _reload(self, conn: asyncpg.Connection) -> None:
        rows = await conn.fetch("SELECT tenant, phase, version FROM cutover_tenant_phase")
        for row in rows:
            self.apply(row["tenant"], Phase(row["phase"]), row["version"])
        self.loaded = True
        self.connected = True
        self.last_error = None
        self.last_sync_monotonic = time.monotonic()
        self._first_load.set()

    def _on_barrier_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        if self.on_barrier is None:
            return
        try:
            self.on_barrier(json.loads(payload))
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring malformed barrier notification %r", payload[:200])

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        try:
            change = json.loads(payload)
            self.apply(change["tenant"], Phase(change["phase"]), int(change["version"]))
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring malformed phase notification %r", payload[:200])
