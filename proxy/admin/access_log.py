"""The admin API's access log (`access_log: true`): one `cutover.access` line per request, like the data
plane's, with `api: admin`, the status and the duration. uvicorn's own access log is off for both servers
of a proxy process: its switch is one logger shared by every server in the process, so it could not be on
for the admin API and off for the data plane (which writes a richer line of its own)."""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy.dataplane.request_telemetry import access_log
from telemetry.logs import LOG_CONTEXT


class AdminAccessLog:
    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        LOG_CONTEXT.set(scope)  # this request's lines, this one included, carry its request id
        started = time.perf_counter()
        status = 0

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self._app(scope, receive, send_status)
        finally:
            duration_ms = round((time.perf_counter() - started) * 1000, 3)
            fields: dict[str, Any] = {
                "api": "admin",
                "method": scope["method"],
                "path": scope["path"],
                "status": status,
                "duration_ms": duration_ms,
            }
            access_log.info(
                "%s %s %d in %.1f ms", scope["method"], scope["path"], status, duration_ms, extra=fields
            )
