"""An exception nobody handled while serving a request (a bug): logged once, answered in cutover's shape.

Left to the server, it would answer a plain-text `500 Internal Server Error` and log the traceback
without the request's id. Here the traceback is logged once, with the request id, and the client gets
`{"error": "internal_error", "detail": ..., "request_id": ...}` with status 500. When the response has
already started, nothing more can be said: the handler returns without completing it and the server
cuts the connection, which a client can tell from a complete answer (it could not tell a second status
line from body bytes).

The data plane calls `internal_error` from its own error handling (no wrapper on its hot path); the
admin API is wrapped in `CatchUnexpected`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from proxy.dataplane.errors import InternalError
from proxy.dataplane.types import Message, Receive, Scope, Send
from telemetry.logs import LOG_CONTEXT, request_id

log = logging.getLogger("cutover.unexpected")

ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def internal_error(scope: Scope, exc: BaseException) -> InternalError:
    """Log `exc` with its traceback (once, here) and return the error to answer the client with."""
    LOG_CONTEXT.set(scope)  # the log line carries the request id the client is told
    log.error(
        "unexpected %s while handling %s %s",
        type(exc).__name__,
        scope.get("method"),
        scope.get("path"),
        exc_info=exc,
    )
    return InternalError(exc, request_id=request_id(scope))


class CatchUnexpected:
    """ASGI middleware: what the app's own handlers leave unhandled becomes `internal_error`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            error = internal_error(scope, exc)
            if started:
                return  # an incomplete response: the server cuts the connection
            body = error.body()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": error.status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
