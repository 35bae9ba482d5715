"""`GET /metrics` on the admin port: Prometheus text of the proxy's OpenTelemetry metrics, or OpenMetrics
for a scraper that asks for it (`Accept: application/openmetrics-text`, as Prometheus itself does).

Authentication follows `telemetry.metrics_auth`: `read` (the default) wants any admin token as a
Bearer token, as Prometheus sends with `authorization: {credentials: ...}` in its scrape config; `none`
leaves the endpoint open to whoever reaches the admin port.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, Header, Request, Response
from fastapi.responses import JSONResponse

from proxy.admin.auth import TokenAuthenticator
from proxy.admin.metrics import ProxyMetrics
from proxy.runtime import Runtime
from telemetry.prometheus import CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE


def register_metrics(app: FastAPI, runtime: Runtime) -> None:
    settings = runtime.settings.telemetry
    metrics = ProxyMetrics(runtime) if settings.metrics else None
    authenticator = TokenAuthenticator(runtime.settings.admin.tokens)

    @app.get(
        "/metrics",
        response_class=Response,
        responses={
            200: {"content": {CONTENT_TYPE: {}, OPENMETRICS_CONTENT_TYPE: {}}},
            401: {"description": "no valid token (unless `telemetry.metrics_auth: none`)"},
            404: {"description": "`telemetry.metrics` is off (`metrics_disabled`)"},
        },
    )
    async def prometheus_metrics(
        _request: Request,
        authorization: Annotated[str | None, Header()] = None,
        accept: Annotated[str | None, Header()] = None,
    ) -> Response:
        if settings.metrics_auth == "read" and authenticator.authenticate(authorization) is None:
            return JSONResponse(
                {
                    "error": "unauthorized",
                    "detail": "a valid 'Authorization: Bearer <token>' header is required",
                },
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        if metrics is None:
            return JSONResponse(
                {"error": "metrics_disabled", "detail": "telemetry.metrics is off in this proxy's settings"},
                status_code=404,
            )
        body, content_type = await metrics.render(accept)
        return Response(body, media_type=content_type)
