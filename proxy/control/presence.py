"""Each proxy process announces itself (heartbeat) and confirms barriers, in PostgreSQL.

The barrier coordinator counts a proxy as live while its heartbeat is younger than `LIVE_WITHIN_S`: a
live proxy that does not confirm aborts the switch, a dead one is not waited for.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import suppress

import asyncpg

from common.store_errors import STORE_ERRORS
from common.tasks import cancel_and_wait

log = logging.getLogger("cutover.presence")
HEARTBEAT_S = 1.0
LIVE_WITHIN_S = 3.0


class ProxyPresence:
    def __init__(self, pool: asyncpg.Pool, proxy_id: str) -> None:
        self._pool = pool
        self.proxy_id = proxy_id
        self._task: asyncio.Task[None] | None = None

    def start(self, phases_loaded: Callable[[], bool]) -> None:
        self._task = asyncio.create_task(self._beat(phases_loaded), name="proxy-heartbeat")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        with suppress(*STORE_ERRORS):
            async with asyncio.timeout(2):
                await self._pool.execute("DELETE FROM cutover_proxy WHERE proxy_id = $1", self.proxy_id)

    async def confirm(self, barrier_id: int) -> None:
        await self._pool.execute(
            "INSERT INTO cutover_barrier_ack (barrier_id, proxy_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            barrier_id,
            self.proxy_id,
        )

    async def _beat(self, phases_loaded: Callable[[], bool]) -> None:
        while True:
            try:
                await self._pool.execute(
                    "INSERT INTO cutover_proxy (proxy_id, phases_loaded) VALUES ($1, $2)"
                    " ON CONFLICT (proxy_id) DO UPDATE SET heartbeat_at = now(),"
                    " phases_loaded = EXCLUDED.phases_loaded",
                    self.proxy_id,
                    phases_loaded(),
                )
            except STORE_ERRORS as exc:
                log.debug("heartbeat failed: %s", type(exc).__name__)
            await asyncio.sleep(HEARTBEAT_S)
