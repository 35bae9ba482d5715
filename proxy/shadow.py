"""Shadow reads: the same read sent to the other side and compared with the serving answer, off the hot path.

The shadow request starts together with the serving one (so both sides see the read at the same moment),
runs as its own task, and waits for the serving observation through a future the executor resolves once
the client has its answer. The client never waits for the shadow. Failures of this machinery are counted
and logged; they never reach the serving path.
"""

from __future__ import annotations

import asyncio
import logging
import random

import aiohttp

from config.settings import ShadowSettings
from proxy.compare import Observation, compare
from proxy.divergences import Divergence, DivergenceRecorder
from proxy.errors import BackendError
from proxy.request import ProxyRequest
from proxy.stats import DataPlaneStats
from proxy.upstream import Upstream
from routing.decide import Plan
from routing.phases import Side

log = logging.getLogger("cutover.shadow")


class ShadowRunner:
    def __init__(
        self,
        upstreams: dict[Side, Upstream],
        settings: ShadowSettings,
        recorder: DivergenceRecorder,
        stats: DataPlaneStats,
    ) -> None:
        self._upstreams = upstreams
        self._settings = settings
        self._recorder = recorder
        self._stats = stats
        self._timeout = aiohttp.ClientTimeout(total=settings.timeout_s)
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def start(self, plan: Plan, request: ProxyRequest) -> asyncio.Future[Observation] | None:
        """Launch the shadow read; return the future to resolve with the serving observation, or None if
        this read is not shadowed (not sampled, or the in-flight cap is reached)."""
        if self._in_flight >= self._settings.max_in_flight or (
            self._settings.sample_rate < 1.0 and random.random() >= self._settings.sample_rate
        ):
            self._stats.shadow_skipped += 1
            return None
        assert plan.shadow is not None
        serving: asyncio.Future[Observation] = asyncio.get_running_loop().create_future()
        self._in_flight += 1
        task = asyncio.create_task(self._run(plan, request, plan.shadow, serving))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return serving

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run(
        self, plan: Plan, request: ProxyRequest, side: Side, serving: asyncio.Future[Observation]
    ) -> None:
        try:
            shadow = await self._observe(self._upstreams[side], request)
            served = await serving
            comparison = compare(served, shadow)
            self._stats.shadow_compared += 1
            if comparison.equal:
                self._stats.shadow_equal += 1
                return
            self._stats.shadow_divergent += 1
            if shadow.error is not None:
                self._stats.shadow_failed += 1
            self._recorder.submit(
                Divergence(
                    tenant=request.mirror_tenant,
                    phase=plan.phase.value,
                    method=request.method,
                    path=request.raw_path,
                    query=request.query,
                    serving_side=plan.serving.value,
                    serving=served,
                    shadow=shadow,
                    comparison=comparison,
                )
            )
        except asyncio.CancelledError:
            raise
        except Exception:  # the experiment must never take the process down
            log.exception("shadow comparison failed")
        finally:
            self._in_flight -= 1

    async def _observe(self, upstream: Upstream, request: ProxyRequest) -> Observation:
        headers = upstream.rewriter.build(
            request.headers, client_host=request.client_host, scheme=request.scheme
        )
        url = upstream.url_for(request.raw_path, request.query)
        limit = self._settings.compare_max_bytes
        try:
            response = await upstream.request(
                request.method, url, headers, request.body, timeout=self._timeout
            )
        except BackendError as exc:
            return Observation(None, None, error=exc.code)
        try:
            length = response.content_length
            if length is not None and length > limit:
                return Observation(response.status, None)
            body = await upstream.read_body(response)
            return Observation(response.status, body if len(body) <= limit else None)
        except BackendError as exc:
            return Observation(response.status, None, error=exc.code)
        finally:
            response.release()
