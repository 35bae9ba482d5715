"""Run a `Plan`: forward to the serving side, fall back when the plan and safety allow, shadow reads,
and turn acknowledged writes into intents before the client sees the acknowledgement. What was served
comes back as one `RequestOutcome`: the data plane sends the answers cutover makes itself (its
`refusal`) and records the outcome once."""

from __future__ import annotations

import logging
from collections.abc import Callable

import aiohttp

from backends.client import BackendClient
from backends.errors import BackendFailure
from backends.headers import response_headers
from buffer_worker.intent import Intent
from buffer_worker.sink import BufferUnavailableError, IntentSink
from proxy.dataplane.errors import BackendError, ProxyError, ServiceUnavailable
from proxy.dataplane.request import ProxyRequest
from proxy.dataplane.request_outcome import REJECTED, RequestOutcome, ResponseAborted, served_by
from proxy.dataplane.request_telemetry import Exchange, RequestTelemetry
from proxy.dataplane.stats import DataPlaneStats
from proxy.dataplane.types import Send
from proxy.shadow.compare import Observation
from proxy.shadow.runner import ShadowRunner
from routing.classify import RequestKind
from routing.decide import Action, Outcome, Plan, resolve
from routing.phases import Phase, Side

log = logging.getLogger("cutover.executor")

# Bodies up to this size (by Content-Length) are read whole and sent in one ASGI message: two sends
# instead of a chunk loop. Larger or unsized bodies are streamed chunk by chunk, never held whole.
_SMALL_BODY_BYTES = 64 * 1024
# Request headers an intent keeps for the apply; everything else is either hop-specific or rewritten.
_INTENT_HEADERS = frozenset({b"content-type", b"content-encoding", b"content-language", b"if-match"})


class Executor:
    def __init__(
        self,
        upstreams: dict[Side, BackendClient],
        shadow: ShadowRunner,
        sink: IntentSink,
        stats: DataPlaneStats,
        *,
        capture_limit: int,
        telemetry: RequestTelemetry | None = None,
        note_tenant: Callable[[str], None] | None = None,
    ) -> None:
        self._upstreams = upstreams
        self._shadow = shadow
        self._sink = sink
        self._stats = stats
        self._capture_limit = capture_limit
        # Chosen once: with telemetry off, no backend call is timed or traced.
        self._telemetry = telemetry if telemetry is not None and telemetry.enabled else None
        self._timed = self._telemetry is not None and self._telemetry.access_log  # backend times kept
        # Told of each tenant a backend answered with a 2xx (proxy.control.seen_tenants): made-up ids never
        # are.
        self._note_tenant = note_tenant

    async def run(
        self, plan: Plan, request: ProxyRequest, send: Send, trace: Exchange | None = None
    ) -> RequestOutcome:
        """Serve `request` by `plan`; `trace` is its trace context when telemetry is on."""
        if plan.mirror is not None and (refusal := self._sink.refusal()) is not None:
            # Checked before the authoritative side sees the write: never acknowledge what cannot be mirrored.
            unavailable = ServiceUnavailable(
                f"the write buffer cannot take intents: {refusal.detail}; "
                f"the write was not sent to {plan.serving}",
                code=refusal.code,
                retry_after_s=5,
                tenant=request.mirror_tenant,
            )
            return RequestOutcome(
                request.tenant, plan.phase, plan.kind, status=unavailable.status, refusal=unavailable
            )
        slot = None if plan.shadow is None else self._shadow.admit(plan, request)
        if slot is None:
            return (await self._serve(plan, request, send, trace, capture=False))[1]
        served: Observation | None = None  # None: nothing to compare, the slot goes back
        try:
            # A failed serving side is observed as its error: the shadow read still runs, so the failure
            # counts against that side.
            served, outcome = await self._serve(plan, request, send, trace, capture=True)
        finally:
            self._shadow.launch(slot, plan, request, served, None if trace is None else trace.traceparent)
        return outcome

    async def _serve(
        self, plan: Plan, request: ProxyRequest, send: Send, trace: Exchange | None, *, capture: bool
    ) -> tuple[Observation, RequestOutcome]:
        upstream = self._upstreams[plan.serving]
        timings: list[tuple[str, float]] | None = [] if self._timed else None
        response: aiohttp.ClientResponse | None = None
        failure: BackendError | None = None
        try:
            response = await self._send_upstream(upstream, request, trace, "serving", timings)
            outcome = Outcome.OK if response.status < 500 else Outcome.SERVER_ERROR
        except BackendError as exc:
            failure = exc
            outcome = Outcome.TIMEOUT if exc.timeout else Outcome.CONNECT_ERROR

        fallback_safe = False
        if outcome is not Outcome.OK and plan.fallback is not None:
            fallback_safe = await self._fallback_safe(request, plan.fallback)
        action = resolve(plan, outcome, fallback_safe=fallback_safe)
        try:
            return await self._act(
                plan, request, send, trace, action, outcome, upstream, response, failure, timings, capture
            )
        except ProxyError as exc:
            # Answered by cutover: a backend failure names the backend; a write the backend acknowledged
            # but the buffer refused is the proxy's refusal, not the backend's answer.
            served = RequestOutcome(
                request.tenant,
                plan.phase,
                plan.kind,
                REJECTED if action is Action.RESPOND else action,
                plan.serving,
                served_by(exc),
                exc.status,
                backend_s=_timed(timings),
                refusal=exc,
            )
            return Observation(None, None, error=exc.code), served

    async def _act(
        self,
        plan: Plan,
        request: ProxyRequest,
        send: Send,
        trace: Exchange | None,
        action: Action,
        outcome: Outcome,
        upstream: BackendClient,
        response: aiohttp.ClientResponse | None,
        failure: BackendError | None,
        timings: list[tuple[str, float]] | None,
        capture: bool,
    ) -> tuple[Observation, RequestOutcome]:
        """Carry out `action`, decided on the serving side's `outcome`."""
        if action is Action.RESPOND:
            assert response is not None  # RESPOND follows an answer (2xx-4xx, or a 5xx with no fallback)
            self._stats.requests[plan.serving_key] += 1
            if self._note_tenant is not None and 200 <= response.status < 300 and request.tenant is not None:
                self._note_tenant(request.tenant)
            served = RequestOutcome(
                request.tenant,
                plan.phase,
                plan.kind,
                action,
                plan.serving,
                plan.serving,
                response.status,
                intent_queued=plan.mirror is not None and 200 <= response.status < 300,
                backend_s=_timed(timings),
            )
            if plan.mirror is not None:
                observed = await self._respond_write(plan, request, upstream, response, send, trace)
            else:
                observed = await self._respond(
                    plan, upstream, response, send, plan.serving, served, capture=capture
                )
            return observed, served
        failed_status = None
        if response is not None:
            failed_status = response.status
            response.release()
        if action is Action.FALLBACK:
            assert plan.fallback is not None
            self._stats.fallbacks[plan.phase] += 1
            fallback = self._upstreams[plan.fallback]
            log.info(
                "serving %s %s for tenant %r from %s: %s %s",
                request.method,
                request.raw_path,
                request.tenant,
                plan.fallback,
                plan.serving,
                _failure_text(outcome, failure, failed_status),
                extra={
                    "tenant": request.tenant,
                    "phase": plan.phase.value,
                    "failed": plan.serving.value,
                    "fallback": plan.fallback.value,
                    "reason": outcome.value,
                    **({"backend_status": failed_status} if failed_status is not None else {}),
                },
            )
            response = await self._send_upstream(fallback, request, trace, "fallback", timings)
            if self._note_tenant is not None and 200 <= response.status < 300 and request.tenant is not None:
                self._note_tenant(request.tenant)
            assert plan.fallback_key is not None
            self._stats.requests[plan.fallback_key] += 1
            served = RequestOutcome(
                request.tenant,
                plan.phase,
                plan.kind,
                action,
                plan.serving,
                plan.fallback,
                response.status,
                backend_s=_timed(timings),
            )
            await self._respond(plan, fallback, response, send, plan.fallback, served, capture=False)
            # What a shadow compares is the serving side's answer, and that side failed.
            return Observation(failed_status, None, error=outcome.value), served
        if action is Action.UNAVAILABLE:
            self._stats.fallback_refused += 1
            raise ServiceUnavailable(
                f"backend {plan.serving} failed ({outcome}) and falling back to {plan.fallback} is not safe "
                "while writes toward it are still pending",
                code="fallback_unsafe",
                backend=plan.serving.value,
            )
        assert failure is not None  # BAD_GATEWAY / GATEWAY_TIMEOUT follow a transport failure
        raise failure

    async def _send_upstream(
        self,
        upstream: BackendClient,
        request: ProxyRequest,
        trace: Exchange | None,
        role: str,
        timings: list[tuple[str, float]] | None,
    ) -> aiohttp.ClientResponse:
        headers = upstream.rewriter.build(
            request.headers, client_host=request.client_host, scheme=request.scheme
        )
        url = upstream.url_for(request.raw_path, request.query)
        body = request.body_for(upstream.side)
        try:
            if trace is None or self._telemetry is None:
                return await upstream.request(request.method, url, headers, body)
            return await self._telemetry.call_backend(
                upstream, request.method, url, request.raw_path, headers, body, trace, role, timings
            )
        except BackendFailure as exc:
            raise BackendError.of(exc) from exc

    async def _fallback_safe(self, request: ProxyRequest, side: Side) -> bool:
        try:
            return await self._sink.pending(request.mirror_tenant, side) == 0
        except BufferUnavailableError:
            return False  # unknown is not safe

    async def _respond(
        self,
        plan: Plan,
        upstream: BackendClient,
        response: aiohttp.ClientResponse,
        send: Send,
        served_by: Side,
        served: RequestOutcome,
        *,
        capture: bool,
    ) -> Observation:
        try:
            headers = _client_headers(response, plan, served_by)
            length = response.content_length
            if length is not None and length <= _SMALL_BODY_BYTES:
                body = await _read_body(upstream, response)
                await send({"type": "http.response.start", "status": response.status, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                if capture:
                    return Observation(response.status, body, headers=response.raw_headers)
                return _UNCAPTURED
            await send({"type": "http.response.start", "status": response.status, "headers": headers})
            captured: bytearray | None = bytearray() if capture else None
            limit = self._capture_limit
            try:
                async for chunk in response.content.iter_any():
                    if captured is not None:
                        captured = captured + chunk if len(captured) + len(chunk) <= limit else None
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except (TimeoutError, aiohttp.ClientError) as exc:
                # The status line is out: the only honest signal left is to cut the connection.
                raise ResponseAborted(
                    f"backend {served_by} failed mid-body: {type(exc).__name__}", served
                ) from exc
            await send({"type": "http.response.body", "body": b""})
            if not capture:
                return _UNCAPTURED
            whole = bytes(captured) if captured is not None else None
            return Observation(response.status, whole, headers=response.raw_headers)
        finally:
            response.release()

    async def _respond_write(
        self,
        plan: Plan,
        request: ProxyRequest,
        upstream: BackendClient,
        response: aiohttp.ClientResponse,
        send: Send,
        trace: Exchange | None,
    ) -> Observation:
        """A write in a mirroring phase: the intent must be durable before the client sees the 2xx."""
        assert plan.mirror is not None
        assert plan.kind is RequestKind.WRITE
        try:
            body = await _read_body(upstream, response)
        finally:
            response.release()
        if 200 <= response.status < 300:
            intent = Intent(
                tenant=request.mirror_tenant,
                target=plan.mirror,
                method=request.method,
                path=request.raw_path,
                query=request.query,
                headers=tuple(
                    (name.decode("latin-1"), value.decode("latin-1"))
                    for name, value in request.headers
                    if name in _INTENT_HEADERS
                ),
                body=request.body_for(plan.mirror),
                status=response.status,
                response_body=body,
                response_headers=tuple(
                    (name.decode("latin-1"), value.decode("latin-1"))
                    for name, value in response.raw_headers
                    if name.lower() in (b"location", b"content-type", b"etag")
                ),
                # The worker's apply continues the trace of this write.
                traceparent=None if trace is None else trace.traceparent,
            )
            try:
                await self._sink.append(intent)
                self._stats.intents_appended += 1
            except BufferUnavailableError as exc:
                self._stats.intents_failed += 1
                # Logged once, as the 503 it becomes (proxy.dataplane.app), with this cause.
                raise ServiceUnavailable(
                    f"the write was applied on {plan.serving} but could not be queued for {plan.mirror}; "
                    "retry it (writes are applied idempotently by key)",
                    code="buffer_unavailable",
                    tenant=request.mirror_tenant,
                ) from exc
        headers = _client_headers(response, plan, plan.serving)
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return Observation(response.status, None)


def _failure_text(outcome: Outcome, failure: BackendError | None, status: int | None) -> str:
    if status is not None:
        return f"answered {status}"
    return (
        f"failed ({outcome.value}: {failure.detail})" if failure is not None else f"failed ({outcome.value})"
    )


async def _read_body(upstream: BackendClient, response: aiohttp.ClientResponse) -> bytes:
    try:
        return await upstream.read_body(response)
    except BackendFailure as exc:
        raise BackendError.of(exc) from exc


def _client_headers(
    response: aiohttp.ClientResponse, plan: Plan, served_by: Side
) -> list[tuple[bytes, bytes]]:
    headers = response_headers(response.raw_headers)
    headers.append(SERVED_BY_HEADERS[served_by])
    headers.append(PHASE_HEADERS[plan.phase])
    return headers


_UNCAPTURED = Observation(None, None)  # what `_respond` returns when nobody compares the answer


def _timed(timings: list[tuple[str, float]] | None) -> tuple[tuple[str, float], ...]:
    return () if not timings else tuple(timings)


# Built once: `Enum.value` is a Python-level property, and these go on every response.
SERVED_BY_HEADERS = {side: (b"x-cutover-served-by", side.value.encode()) for side in Side}
PHASE_HEADERS = {phase: (b"x-cutover-phase", phase.value.encode()) for phase in Phase}
