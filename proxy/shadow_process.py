"""The shadow process: sends shadow reads, compares them with the served answers, records divergences.

It runs beside each serving process at a lower CPU priority (`shadow.process_nice`), so that on a busy
core the kernel gives the serving path the CPU first: a shadow can be late or be skipped, but it cannot
slow a client down. On an idle core, or where spare cores exist, every admitted read is compared.
"""

from __future__ import annotations

import asyncio
import logging
import os
from contextlib import suppress

import aiohttp
import asyncpg
from opentelemetry.trace import Link, SpanKind, Status, StatusCode, Tracer

from config.settings import Settings
from proxy.compare import Observation, compare
from proxy.divergences import Divergence, DivergenceRecorder
from proxy.errors import BackendError
from proxy.request import ProxyRequest
from proxy.shadow_job import (
    DIVERGENT,
    DROPPED,
    EQUAL,
    FRAME_HEADER,
    INTERNAL_ERROR,
    SHADOW_FAILED,
    STORED,
    ShadowJob,
    decode_job,
)
from proxy.upstream import Upstream
from routing.phases import Side
from telemetry.logs import configure_logging
from telemetry.process import run_async
from telemetry.tracing import build_tracer_provider, span_context_from_traceparent

log = logging.getLogger("cutover.shadow")


class ShadowComparer:
    """Observe the shadow side for one job, compare, and submit a divergence when they differ."""

    def __init__(
        self,
        settings: Settings,
        upstreams: dict[Side, Upstream],
        recorder: DivergenceRecorder,
        tracer: Tracer | None = None,
    ) -> None:
        self._upstreams = upstreams
        self._recorder = recorder
        self._limit = settings.shadow.compare_max_bytes
        self._timeout = aiohttp.ClientTimeout(total=settings.shadow.timeout_s)
        self._tracer = tracer

    async def run(self, job: ShadowJob) -> bytes:
        if self._tracer is None:
            return await self._run(job)
        # A span of its own trace, linked to the request's span: the shadow call happens after the client
        # has its answer, so it is not part of the request's latency (a child span would suggest it is).
        linked = span_context_from_traceparent(job.traceparent)
        if linked is None or not linked.trace_flags.sampled:
            # Recorded exactly when its request was: the span is there to be read beside the request's
            # (the link), and a request that was not recorded costs the shadow process no span.
            return await self._run(job)
        upstream = self._upstreams[job.shadow_side]
        request = job.request
        span = self._tracer.start_span(
            request.method,
            kind=SpanKind.CLIENT,
            links=[Link(linked)],
            attributes={
                "http.request.method": request.method,
                "server.address": upstream.host,
                "server.port": upstream.port,
                "url.full": upstream.display + request.raw_path,
                "cutover.backend": upstream.name,
                "cutover.role": "shadow",
                "cutover.phase": job.phase.value,
                "cutover.tenant": request.mirror_tenant,
            },
        )
        try:
            outcome = await self._run(job)
        except BaseException as exc:
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            span.end()
            raise
        span.set_attribute("cutover.shadow.result", _RESULTS.get(outcome, "unknown"))
        span.end()
        return outcome

    async def _run(self, job: ShadowJob) -> bytes:
        shadow = await self._observe(self._upstreams[job.shadow_side], job.request)
        comparison = compare(job.served, shadow)
        if comparison.equal:
            return EQUAL
        request = job.request
        self._recorder.submit(
            Divergence(
                tenant=request.mirror_tenant,
                phase=job.phase.value,
                method=request.method,
                path=request.raw_path,
                query=request.query,
                serving_side=job.serving_side.value,
                serving=job.served,
                shadow=shadow,
                comparison=comparison,
            )
        )
        return SHADOW_FAILED if shadow.error is not None else DIVERGENT

    async def _observe(self, upstream: Upstream, request: ProxyRequest) -> Observation:
        headers = upstream.rewriter.build(
            request.headers, client_host=request.client_host, scheme=request.scheme
        )
        url = upstream.url_for(request.raw_path, request.query)
        try:
            response = await upstream.request(
                request.method, url, headers, request.body, timeout=self._timeout
            )
        except BackendError as exc:
            return Observation(None, None, error=exc.code)
        try:
            length = response.content_length
            if length is not None and length > self._limit:
                return Observation(response.status, None)
            body = await upstream.read_body(response)
            return Observation(response.status, body if len(body) <= self._limit else None)
        except BackendError as exc:
            return Observation(response.status, None, error=exc.code)
        finally:
            response.release()


async def serve_shadow(settings: Settings, socket_path: str) -> None:
    """Accept the serving process's one connection and work its jobs until it closes."""
    done = asyncio.Event()
    tasks: set[asyncio.Task[None]] = set()
    upstreams = {side: Upstream(side, getattr(settings.backends, side.value)) for side in Side}
    for upstream in upstreams.values():
        await upstream.start()
    pool = await asyncpg.create_pool(settings.postgres_url.get_secret_value(), min_size=0, max_size=2)
    writer_ref: list[asyncio.StreamWriter] = []

    def emit(code: bytes, count: int = 1) -> None:
        if writer_ref and not writer_ref[0].is_closing():
            writer_ref[0].write(code * count)

    recorder = DivergenceRecorder(
        pool,
        queue_size=settings.shadow.divergence_queue,
        on_stored=lambda n: emit(STORED, n),
        on_dropped=lambda n: emit(DROPPED, n),
    )
    # Shadow spans are roots (linked, not children): whether to record one was decided with the request.
    tracer_provider = build_tracer_provider(
        settings.telemetry, component="shadow", roots_sampled_by_caller=True
    )
    tracer = None if tracer_provider is None else tracer_provider.get_tracer("cutover.shadow")
    comparer = ShadowComparer(settings, upstreams, recorder, tracer)

    async def work(job: ShadowJob) -> None:
        try:
            emit(await comparer.run(job))
        except Exception:  # the experiment must never take the process down
            log.exception("shadow comparison failed")
            emit(INTERNAL_ERROR)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer_ref.append(writer)
        with suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                header = await reader.readexactly(FRAME_HEADER.size)
                meta_len, body_len, served_len = FRAME_HEADER.unpack(header)
                payload = await reader.readexactly(meta_len + body_len + served_len)
                task = asyncio.create_task(work(decode_job(payload, meta_len, body_len)))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        done.set()

    recorder.start()
    server = await asyncio.start_unix_server(handle, path=socket_path)
    try:
        await done.wait()
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await recorder.stop()
        for upstream in upstreams.values():
            await upstream.close()
        await pool.close()
        if tracer_provider is not None:
            await asyncio.to_thread(tracer_provider.shutdown)  # export what is still queued


_RESULTS = {EQUAL: "equal", DIVERGENT: "divergent", SHADOW_FAILED: "failed"}


def shadow_process_main(settings: Settings, socket_path: str) -> None:
    """Entry point of the spawned shadow process."""
    configure_logging(settings, component="shadow")
    with suppress(OSError):
        os.nice(settings.shadow.process_nice)
    run_async(serve_shadow(settings, socket_path))
