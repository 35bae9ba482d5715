"""Shadow reads, serving-process side: admit, hand off to the shadow process, count the outcomes.

The comparison itself runs in a separate, lower-priority process (`proxy.shadow_process`): sending a
second request and diffing its answer costs about as much CPU as serving the read, and on a busy core
that cost would land on the client's latency. Here a shadowed read costs one frame written to a Unix
socket after the client has its answer.

The admission decision (sampling, in-flight cap) is made before serving so the executor knows whether to
capture the serving body. An admitted read holds an in-flight slot until its outcome byte comes back,
which bounds both the shadow backlog and the socket buffer. While the shadow process is down (starting,
or restarting after a crash) reads are not shadowed and are counted as skipped.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import random
import tempfile
from contextlib import suppress
from pathlib import Path

from config.settings import Settings
from proxy.compare import Observation
from proxy.request import ProxyRequest
from proxy.shadow_job import DIVERGENT, DROPPED, EQUAL, INTERNAL_ERROR, SHADOW_FAILED, STORED, encode_job
from proxy.shadow_process import shadow_process_main
from proxy.stats import DataPlaneStats
from routing.decide import Plan

log = logging.getLogger("cutover.shadow")
_CONNECT_TIMEOUT_S = 15.0
_RESTART_DELAY_S = 1.0


class ShadowRunner:
    def __init__(self, settings: Settings, stats: DataPlaneStats) -> None:
        self._settings = settings
        self._config = settings.shadow
        self._stats = stats
        self._in_flight = 0
        self._writer: asyncio.StreamWriter | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._directory = tempfile.TemporaryDirectory(prefix="cutover-shadow-")
        self._socket_path = str(Path(self._directory.name) / "shadow.sock")
        self._connected = asyncio.Event()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def available(self) -> bool:
        return self._writer is not None

    # -- hot path -------------------------------------------------------------------------------------
    def admit(self) -> bool:
        """Whether this read is shadowed: the shadow process is up, the read is sampled, and the in-flight
        cap is not reached. An admitted read holds its slot until `launch` (or `cancel`)."""
        if (
            self._writer is None
            or self._in_flight >= self._config.max_in_flight
            or (self._config.sample_rate < 1.0 and random.random() >= self._config.sample_rate)
        ):
            self._stats.shadow_skipped += 1
            return False
        self._in_flight += 1
        return True

    def launch(
        self, plan: Plan, request: ProxyRequest, served: Observation, traceparent: str | None = None
    ) -> None:
        """Hand the read to the shadow process; `traceparent` names the request's span, which the shadow
        call links to."""
        if self._writer is None:  # the shadow process went away since admission
            self.cancel()
            self._stats.shadow_skipped += 1
            return
        self._writer.write(encode_job(plan, request, served, traceparent))

    def cancel(self) -> None:
        """Give back the slot of an admitted read that will not be shadowed (the serving path failed)."""
        self._in_flight -= 1

    # -- lifecycle ------------------------------------------------------------------------------------
    async def start(self, wait_s: float = _CONNECT_TIMEOUT_S) -> None:
        self._supervisor = asyncio.create_task(self._supervise(), name="shadow-supervisor")
        with suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), wait_s)
        if not self.available:
            log.warning("shadow process not up after %.0f s; reads are not shadowed until it is", wait_s)

    async def stop(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            with suppress(asyncio.CancelledError):
                await self._supervisor
        await self._close_process()
        self._directory.cleanup()

    async def _supervise(self) -> None:
        """Run the shadow process; restart it whenever it (or its connection) dies."""
        while True:
            try:
                reader = await self._spawn()
                self._connected.set()
                await self._count_outcomes(reader)
                log.warning("shadow process connection lost; restarting it")
            except (OSError, TimeoutError) as exc:
                log.warning("shadow process could not be started (%s); retrying", type(exc).__name__)
            self._writer = None
            self._in_flight = 0  # their outcomes will never come back
            await self._close_process()
            await asyncio.sleep(_RESTART_DELAY_S)

    async def _spawn(self) -> asyncio.StreamReader:
        Path(self._socket_path).unlink(missing_ok=True)
        context = multiprocessing.get_context("spawn")
        self._process = context.Process(
            target=shadow_process_main,
            args=(self._settings, self._socket_path),
            name="cutover-shadow",
            daemon=True,
        )
        self._process.start()
        deadline = asyncio.get_running_loop().time() + _CONNECT_TIMEOUT_S
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(self._socket_path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if asyncio.get_running_loop().time() > deadline or not self._process.is_alive():
                    raise TimeoutError("shadow process did not open its socket") from None
                await asyncio.sleep(0.05)
        self._writer = writer
        return reader

    async def _count_outcomes(self, reader: asyncio.StreamReader) -> None:
        stats = self._stats
        while chunk := await reader.read(4096):
            for code in chunk:
                if code in _COMPARED:
                    self._in_flight -= 1
                    stats.shadow_compared += 1
                    if code == _EQUAL:
                        stats.shadow_equal += 1
                    else:
                        stats.shadow_divergent += 1
                        if code == _FAILED:
                            stats.shadow_failed += 1
                elif code == _INTERNAL:
                    self._in_flight -= 1
                    stats.shadow_errors += 1
                elif code == _STORED:
                    stats.divergences_stored += 1
                elif code == _DROPPED:
                    stats.divergences_dropped += 1

    async def _close_process(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        process, self._process = self._process, None
        if process is None:
            return
        process.join(timeout=0)
        if process.is_alive():
            await asyncio.sleep(0.2)  # closing the socket ends it; give it a moment to flush
            process.terminate()
            await asyncio.to_thread(process.join, 5)
        if process.is_alive():
            process.kill()


_EQUAL, _DIVERGENT, _FAILED = EQUAL[0], DIVERGENT[0], SHADOW_FAILED[0]
_COMPARED = frozenset({_EQUAL, _DIVERGENT, _FAILED})
_INTERNAL, _STORED, _DROPPED = INTERNAL_ERROR[0], STORED[0], DROPPED[0]
