"""The shadow process: sends shadow reads, compares them with the served answers, records divergences.

It runs beside each serving process at a lower CPU priority (`shadow.process_nice`), so that on a busy
core the kernel gives the serving path the CPU first: a shadow can be late or be skipped, but it cannot
slow a client down. On an idle core, or where spare cores exist, every admitted read is compared.

Per job: the shadow read (and, when the noise learner asks for one, a second copy of the read to the
serving side) are sent at once, bounded by `shadow.timeout_s`; the answers are lifted and analysed
(`proxy.shadow.analysis`); counters go to the tally, written to PostgreSQL every `flush_interval_s`;
divergent and failed reads are stored, masked (`proxy.shadow.sample`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from contextlib import suppress

import aiohttp
import asyncpg
import orjson
from opentelemetry.trace import Link, SpanKind, Status, StatusCode, Tracer

from backends.client import BackendClient
from backends.errors import BackendFailure
from common.periodic import Periodic
from common.store_errors import STORE_ERRORS
from common.tasks import cancel_and_wait
from config.divergence import DivergencePolicy
from config.settings import Settings
from proxy.dataplane.request import ProxyRequest
from proxy.shadow.analysis import analyse
from proxy.shadow.compare import Observation, lift_observation
from proxy.shadow.divergences import DivergenceRecorder
from proxy.shadow.job import (
    DROPPED,
    FRAME_HEADER,
    JOB,
    POLICY,
    SKIPS,
    STORED,
    ShadowJob,
    Verdict,
    completion,
    decode_job,
)
from proxy.shadow.mask import Masker
from proxy.shadow.noise import NoiseLearner
from proxy.shadow.rules import Ruleset
from proxy.shadow.sample import build_sample
from proxy.shadow.tally import Outcome, Tally, write_tally
from routing.phases import Side
from telemetry.logs import configure_logging
from telemetry.process import run_async, settle_heap
from telemetry.tracing import build_tracer_provider, span_context_from_traceparent

log = logging.getLogger("cutover.shadow")


class ShadowComparer:
    """Observe the shadow side (and a copy of the serving side) for one job, analyse, count, record."""

    def __init__(
        self,
        settings: Settings,
        upstreams: dict[Side, BackendClient],
        recorder: DivergenceRecorder,
        tally: Tally,
        tracer: Tracer | None = None,
    ) -> None:
        self._upstreams = upstreams
        self._recorder = recorder
        self._tally = tally
        self._limit = settings.shadow.compare_max_bytes
        self._timeout = aiohttp.ClientTimeout(total=settings.shadow.timeout_s)
        self._masker = Masker(settings.divergence.hmac_key)
        self.learner = NoiseLearner(settings.divergence.policy.noise)
        self.set_policy(settings.divergence.policy)
        self._tracer = tracer

    async def run(self, job: ShadowJob) -> Verdict:
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
        path = request.raw_path
        route, name = self._ruleset.route(path)
        attributes: dict[str, str | int] = {
            "http.request.method": request.method,
            "server.address": upstream.host,
            "server.port": upstream.port,
            "url.full": upstream.display + path,
            "cutover.backend": upstream.name,
            "cutover.role": "shadow",
            "cutover.phase": job.phase.value,
            "cutover.tenant": request.mirror_tenant,
        }
        if route is not None:
            attributes["url.template"] = route
        span = self._tracer.start_span(
            f"cutover {request.method} {name}",
            kind=SpanKind.CLIENT,
            links=[Link(linked)],
            attributes=attributes,
        )
        try:
            verdict = await self._run(job)
        except BaseException as exc:
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            span.end()
            raise
        span.set_attribute("cutover.shadow.result", verdict.name.lower())
        span.end()
        return verdict

    def set_policy(self, policy: DivergencePolicy) -> None:
        self._policy = policy
        self._ruleset = Ruleset(policy)
        self.learner.set_policy(policy.noise)

    def count_skips(self, rows: list[tuple[str, str, int]]) -> None:
        for tenant, resource, count in rows:
            self._tally.add_skips(tenant, resource, count)

    async def _run(self, job: ShadowJob) -> Verdict:
        request = job.request
        resource, rules = self._ruleset.match(request.raw_path)
        # A copy of a read that already failed on the serving side would teach nothing.
        copy_wanted = job.copy_allowed and job.served.error is None and self.learner.wants_copy(resource)
        shadow_read = self._observe(self._upstreams[job.shadow_side], request)
        if copy_wanted:
            copy_read = self._observe(self._upstreams[job.serving_side], request)
            shadow, copy = await asyncio.gather(shadow_read, copy_read)
        else:
            shadow, copy = await shadow_read, None
        keep = self._ruleset.keep_headers
        served_l = lift_observation(job.served, keep_headers=keep, max_bytes=self._limit)
        shadow_l = lift_observation(shadow, keep_headers=keep, max_bytes=self._limit)
        copy_l = None if copy is None else lift_observation(copy, keep_headers=keep, max_bytes=self._limit)
        analysis = analyse(
            resource=resource,
            serving_side=job.serving_side,
            served=served_l,
            shadow=shadow_l,
            copy=copy_l,
            rules=rules,
            learner=self.learner,
        )
        self._tally.add(
            Outcome(
                tenant=request.mirror_tenant,
                resource=resource,
                phase=job.phase.value,
                verdict=analysis.verdict,
                new_error=analysis.new_error,
                divergent_fields=analysis.divergent_fields,
                noise_fields=analysis.noise_fields,
            )
        )
        if analysis.verdict in (Verdict.DIVERGENT, Verdict.FAILED):
            self._recorder.submit(
                build_sample(
                    phase=job.phase.value,
                    resource=resource,
                    request=request,
                    serving_side=job.serving_side.value,
                    served=served_l,
                    shadow=shadow_l,
                    analysis=analysis,
                    rules=rules,
                    masker=self._masker,
                    policy=self._policy,
                )
            )
        return analysis.verdict

    async def _observe(self, upstream: BackendClient, request: ProxyRequest) -> Observation:
        headers = upstream.rewriter.build(
            request.headers, client_host=request.client_host, scheme=request.scheme
        )
        url = upstream.url_for(request.raw_path, request.query)
        try:
            response = await upstream.request(
                request.method, url, headers, request.body, timeout=self._timeout
            )
        except BackendFailure as exc:
            return Observation(None, None, error=exc.code)
        try:
            length = response.content_length
            if length is not None and length > self._limit:
                return Observation(response.status, None, headers=response.raw_headers)
            body = await upstream.read_body(response)
            captured = body if len(body) <= self._limit else None
            return Observation(response.status, captured, headers=response.raw_headers)
        except BackendFailure as exc:
            return Observation(response.status, None, error=exc.code)
        finally:
            response.release()


async def flush_tally(pool: asyncpg.Pool, tally: Tally, settings: Settings) -> None:
    """Write what the tally gathered; on failure keep it for the next attempt."""
    if tally.empty():
        return
    taken = tally.take()
    try:
        health = settings.operator.health
        await write_tally(pool, taken, health=health, labels=settings.telemetry.tenant_labels)
    except STORE_ERRORS as exc:
        tally.merge_back(taken)
        log.warning("could not write shadow counters (%s); kept for the next flush", type(exc).__name__)


async def serve_shadow(settings: Settings, socket_path: str) -> None:
    """Accept the serving process's one connection and work its jobs until it closes."""
    done = asyncio.Event()
    tasks: set[asyncio.Task[None]] = set()
    upstreams = {side: BackendClient.of(settings, side) for side in Side}
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
        retention=settings.divergence.retention,
        on_stored=lambda n: emit(STORED, n),
        on_dropped=lambda n: emit(DROPPED, n),
    )
    # Shadow spans are roots (linked, not children): whether to record one was decided with the request.
    tracer_provider = build_tracer_provider(
        settings.telemetry, component="shadow", roots_sampled_by_caller=True
    )
    tracer = None if tracer_provider is None else tracer_provider.get_tracer("cutover.shadow")
    tally = Tally()
    comparer = ShadowComparer(settings, upstreams, recorder, tally, tracer)

    async def work(job: ShadowJob) -> None:
        try:
            verdict = await comparer.run(job)
        except Exception:  # the experiment must never take the process down
            log.exception("shadow comparison failed")
            verdict = Verdict.INTERNAL
        emit(completion(verdict, job.shadow_side))

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer_ref.append(writer)
        with suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                header = await reader.readexactly(FRAME_HEADER.size)
                kind, first_len, body_len, served_len = FRAME_HEADER.unpack(header)
                payload = await reader.readexactly(first_len + body_len + served_len)
                if kind == JOB:
                    task = asyncio.create_task(work(decode_job(payload, first_len, body_len)))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                elif kind == POLICY:
                    comparer.set_policy(DivergencePolicy.model_validate_json(payload))
                elif kind == SKIPS:
                    comparer.count_skips(orjson.loads(payload))
        done.set()

    recorder.start()
    flush = functools.partial(flush_tally, pool, tally, settings)
    flusher = Periodic("shadow-tally-flusher", settings.divergence.flush_interval_s, flush, final=flush)
    flusher.start()
    server = await asyncio.start_unix_server(handle, path=socket_path)
    settle_heap()
    try:
        await done.wait()
    finally:
        server.close()
        await cancel_and_wait(*tasks, reraise=False)
        await flusher.stop()  # and a last flush
        await recorder.stop()
        for upstream in upstreams.values():
            await upstream.close()
        await pool.close()
        if tracer_provider is not None:
            await asyncio.to_thread(tracer_provider.shutdown)  # export what is still queued


def shadow_process_main(settings: Settings, socket_path: str) -> None:
    """Entry point of the spawned shadow process."""
    configure_logging(settings, component="shadow")
    with suppress(OSError):
        os.nice(settings.shadow.process_nice)
    run_async(serve_shadow(settings, socket_path))
