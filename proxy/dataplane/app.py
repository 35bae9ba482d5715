"""The data plane: a raw ASGI callable. request → classify → decide → execute.

No framework on this path: routing, middleware and request objects of a web framework cost more than the
whole hop is allowed to (see BENCHMARKS.md), and a proxy has exactly one route.
"""

from __future__ import annotations

import logging

from backends.headers import listed_fields
from proxy.dataplane.errors import BadRequest, InternalError, ProxyError, ServiceUnavailable
from proxy.dataplane.executor import PHASE_HEADERS, Executor
from proxy.dataplane.phase_cache import PhaseCache
from proxy.dataplane.request import ClientDisconnected, ProxyRequest, read_body
from proxy.dataplane.request_outcome import RequestOutcome, ResponseAborted, served_by
from proxy.dataplane.request_router import RequestRouter
from proxy.dataplane.request_telemetry import Exchange, RequestTelemetry
from proxy.dataplane.types import Receive, Scope, Send
from proxy.dataplane.unexpected import internal_error
from proxy.dataplane.write_gate import WriteGate
from routing.classify import InvalidTargetError, RequestKind, check_target, classify
from routing.tenant import InvalidTenantError
from telemetry.logs import REQUEST_SCOPE

log = logging.getLogger("cutover.proxy")

# Set by `proxy.dataplane.edge.EdgeProtocol`: the request target exactly as sent (uvicorn's scope
# only carries the parsed path, which hides an absolute-form target).
REQUEST_TARGET_EXTENSION = "cutover.request_target"
# `Connection` values that list no field: most requests' only one, not worth parsing.
_PLAIN_CONNECTION = frozenset({b"keep-alive", b"close"})
_UNKNOWN = RequestOutcome()  # recorded for a request ended by an exception (a cancelled task)


class DataPlane:
    def __init__(
        self,
        *,
        cache: PhaseCache,
        executor: Executor,
        gate: WriteGate,
        tenant_header: str,
        max_body_bytes: int,
        telemetry: RequestTelemetry | None = None,
        router: RequestRouter | None = None,
    ) -> None:
        self._cache = cache
        self._executor = executor
        self._gate = gate
        self._tenant_header = tenant_header.lower().encode("latin-1")
        self._tenant_header_name = tenant_header
        self._max_body_bytes = max_body_bytes
        # None when tracing and metrics are both off: then no request pays for telemetry at all.
        self._telemetry = telemetry if telemetry is not None and telemetry.enabled else None
        self._router = router or RequestRouter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            REQUEST_SCOPE.set(scope)  # log lines of this request carry its request id (made lazily)
            telemetry = self._telemetry
            if telemetry is None:
                await self._http(scope, receive, send, None)
                return
            # Inline rather than a wrapper coroutine: every resumption of the request's task passes
            # through each coroutine frame on its stack.
            exchange = telemetry.begin(scope)
            try:
                outcome = await self._http(scope, receive, send, exchange)
            except BaseException as exc:
                telemetry.finish(exchange, exc.outcome if isinstance(exc, ResponseAborted) else _UNKNOWN, exc)
                raise
            telemetry.finish(exchange, outcome)
        elif kind == "lifespan":
            await _lifespan(receive, send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1003})

    async def _http(
        self, scope: Scope, receive: Receive, send: Send, trace: Exchange | None
    ) -> RequestOutcome:
        """Answer one request; what became of it (recorded once, by the caller, when telemetry is on).
        `trace`: the request's trace context, for the backend calls' spans (None: telemetry off)."""
        phase_header: bytes | None = None
        gated: str | None = None
        tenant_value: str | None = None
        # What is known of the request so far, for an answer the proxy makes itself.
        tenant: str | None = None
        kind = phase = "unknown"
        try:
            extensions = scope.get("extensions") or {}
            raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
            check_target(raw_path, extensions.get(REQUEST_TARGET_EXTENSION))
            declared_length: int | None = None
            for name, value in scope["headers"]:
                if name == self._tenant_header:
                    if tenant_value is not None:
                        raise self._tenant_refused("is given more than once: a request names one tenant")
                    tenant_value = value.decode("latin-1")
                elif name == b"content-length":
                    declared_length = _content_length(value)
                elif (
                    name == b"connection"
                    and value.lower() not in _PLAIN_CONNECTION
                    and self._tenant_header in listed_fields(value)
                ):
                    # Hop-by-hop for this message: the backend would get the request without its tenant.
                    raise self._tenant_refused("is listed in Connection: it cannot be hop-by-hop")
            facts = classify(scope["method"], tenant_value)
            tenant, kind = facts.tenant, facts.kind  # StrEnum members are their values (no `.value` call)
            if not self._cache.loaded:
                raise ServiceUnavailable(
                    "tenant phases have not been loaded from the phase store yet",
                    code="not_ready",
                    retry_after_s=2,
                )
            body = await read_body(receive, limit=self._max_body_bytes, declared_length=declared_length)
            # A SQL endpoint: counted and traced as what the statements do, for the tenant they name.
            classified = self._router.classify(facts, raw_path, body)
            facts = classified.facts
            tenant, kind = facts.tenant, facts.kind
            if facts.kind is RequestKind.WRITE and facts.tenant is not None:
                # May wait while the tenant's authoritative side is being switched: read the phase after.
                await self._gate.enter(facts.tenant)
                gated = facts.tenant
            current = self._cache.phase_of(facts.tenant)
            phase, phase_header = current, PHASE_HEADERS[current][1]
            routed = self._router.route(classified, current, body)
            client = scope.get("client")
            request = ProxyRequest(
                method=facts.method,
                raw_path=raw_path.decode("latin-1"),
                query=scope.get("query_string", b"").decode("latin-1"),
                headers=scope["headers"],
                body=routed.body,
                tenant=facts.tenant,
                client_host=client[0] if client else None,
                scheme=scope.get("scheme", "http"),
                new_body=routed.new_body,
                sql_read=routed.sql_read,
            )
            outcome = await self._executor.run(routed.plan, request, send, trace)
            if outcome.refusal is not None:
                _log_refusal(scope, outcome.refusal, tenant_value)
                await _send_error(send, outcome.refusal, phase_header)
            return outcome
        except ProxyError as exc:
            _log_refusal(scope, exc, tenant_value)
            await _send_error(send, exc, phase_header)
            return RequestOutcome(tenant, phase, kind, served_by=served_by(exc), status=exc.status)
        except (InvalidTenantError, InvalidTargetError) as exc:
            code = "invalid_tenant" if isinstance(exc, InvalidTenantError) else "invalid_target"
            refusal = BadRequest(str(exc), code=code)
            _log_refusal(scope, refusal, None)
            await _send_error(send, refusal, phase_header)
            return RequestOutcome(tenant, phase, kind, status=BadRequest.status)
        except ClientDisconnected:
            return RequestOutcome(tenant, phase, kind)
        except ConnectionAbortedError:
            raise  # a backend failed mid-body, after the status line: the server cuts the connection
        except Exception as exc:
            # A bug. Answered in cutover's shape, never the server's plain-text 500; if the response has
            # started, `_send_error` cannot send and the incomplete response makes the server cut the
            # connection.
            await _send_error(send, internal_error(scope, exc), phase_header)
            return RequestOutcome(tenant, phase, kind, status=InternalError.status)
        finally:
            if gated is not None:
                self._gate.exit(gated)

    def _tenant_refused(self, why: str) -> BadRequest:
        return BadRequest(f"{self._tenant_header_name} {why}", code="invalid_tenant")


def _log_refusal(scope: Scope, error: ProxyError, tenant: str | None) -> None:
    """Each answer cutover makes itself, once, with its code: 4xx at info (the client's mistake), 5xx at
    warning (a backend failing, the buffer refusing, not ready). A bug (500 internal_error) is not
    here: `proxy.dataplane.unexpected` logs it with its traceback."""
    cause = error.__cause__
    log.log(
        logging.WARNING if error.status >= 500 else logging.INFO,
        "answered %d %s to %s %s: %s",
        error.status,
        error.code,
        scope.get("method"),
        scope.get("path"),
        error.detail,
        extra={
            "status": error.status,
            "error": error.code,
            "tenant": tenant,
            "served_by": served_by(error),
            **({"cause": f"{type(cause).__name__}: {cause}"} if cause is not None else {}),
        },
    )


def _content_length(value: bytes) -> int:
    if not value.isdigit():
        raise BadRequest("Content-Length must be a non-negative integer", code="bad_request")
    return int(value)


async def _send_error(send: Send, error: ProxyError, phase: bytes | None) -> None:
    body = error.body()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-cutover-served-by", served_by(error).encode()),
        *error.headers(),
    ]
    if phase is not None:
        headers.append((b"x-cutover-phase", phase))
    try:
        await send({"type": "http.response.start", "status": error.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    except RuntimeError:
        # The response had already started (a failure mid-stream): nothing more can be said.
        log.warning("could not send %s: response already started", error.code)


async def _lifespan(receive: Receive, send: Send) -> None:
    # Components are started by `proxy.runtime.Runtime`, not by lifespan events; acknowledge them only.
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
