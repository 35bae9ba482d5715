"""The status page on the admin port: `GET /status` (HTML) and its JSON, `GET /status/data` (figures,
polled every `refresh_s`) and `GET /status/series` (the last hour per tenant, polled once per bucket);
one stored divergence at `GET /status/divergence/{tenant}/{id}` (HTML) and `.../data` (its JSON).

Read scope. A bearer header works for all; a browser opens `/status?token=TOKEN` once and gets a session
cookie instead (see `proxy.admin.status_auth`). The pages are static HTML with a small script that fetches the
JSON and draws it (time series as inline SVG): no external assets, so they work on an isolated network.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from proxy.admin.auth import TokenAuthenticator
from proxy.admin.errors import AdminError
from proxy.admin.params import ROW_ID_SCHEMA, Tenant, checked_tenant, row_id_or_404
from proxy.admin.status_auth import COOKIE_NAME, COOKIE_PATH, StatusSessions, Viewer
from proxy.admin.status_data import gather, guarded
from proxy.admin.status_html import render_divergence_page, render_page
from proxy.admin.status_series import gather_series
from proxy.runtime import Runtime
from proxy.shadow.divergences import get_divergence
from proxy.shadow.report import side_by_side
from routing.tenant import TENANT_PATTERN


def create_status_router(runtime: Runtime) -> APIRouter:
    settings = runtime.settings.operator.status_page
    tokens = runtime.settings.admin.tokens
    authenticator = TokenAuthenticator(tokens)
    sessions = StatusSessions.from_settings(tokens, settings)
    router = APIRouter(include_in_schema=settings.enabled)
    if not settings.enabled:
        return router

    def viewer(request: Request, authorization: str | None) -> Viewer | None:
        principal = authenticator.authenticate(authorization)
        if principal is not None:
            return Viewer(principal.name, principal.scope)
        return sessions.verify(request.cookies.get(COOKIE_NAME))

    @router.get("/status", response_class=HTMLResponse, responses=_PAGE_RESPONSES)
    async def status_page(
        request: Request,
        token: Annotated[str | None, Query(max_length=4096)] = None,
        authorization: Annotated[str | None, Header()] = None,
    ) -> Response:
        if token is not None:
            principal = authenticator.authenticate(f"Bearer {token}")
            if principal is None:
                return _sign_in_page(401, "That token is not valid.")
            # Redirect so the token leaves the address bar and the history; the cookie carries on.
            response = RedirectResponse(COOKIE_PATH, status_code=303)
            response.set_cookie(
                COOKIE_NAME,
                sessions.issue(principal.name),
                max_age=sessions.ttl_s,
                path=COOKIE_PATH,
                httponly=True,
                samesite="strict",
                secure=request.url.scheme == "https",
            )
            return response
        who = viewer(request, authorization)
        if who is None:
            return _sign_in_page(401, "Open this page once as /status?token=TOKEN (a read or write token).")
        series_refresh_s = max(settings.refresh_s, float(runtime.settings.operator.health.bucket_s))
        page = render_page(viewer=who.name, refresh_s=settings.refresh_s, series_refresh_s=series_refresh_s)
        return HTMLResponse(page, headers=_NO_STORE)

    @router.get("/status/data", responses={401: {"description": "no session cookie and no valid token"}})
    async def status_data(
        request: Request, authorization: Annotated[str | None, Header()] = None
    ) -> JSONResponse:
        who = viewer(request, authorization)
        if who is None:
            return _unauthorized()
        body: dict[str, Any] = await gather(runtime, settings)
        body["viewer"] = who.name
        return JSONResponse(body, headers=_NO_STORE)

    @router.get("/status/series", responses=_SERIES)
    async def status_series(
        request: Request,
        tenants: Annotated[
            str | None,
            Query(
                description=f"tenants to show first, before the busiest: ids separated by commas (at most"
                f" {MAX_PINNED})",
                json_schema_extra={"pattern": _PINNED_PATTERN},
            ),
        ] = None,
        authorization: Annotated[str | None, Header()] = None,
    ) -> JSONResponse:
        if viewer(request, authorization) is None:
            return _unauthorized()
        pinned = [checked_tenant(t) for t in tenants.split(",")] if tenants is not None else []
        if len(pinned) > MAX_PINNED:
            raise AdminError(
                422,
                "invalid_request",
                f"at most {MAX_PINNED} tenants can be pinned",
                problems=[{"field": "query.tenants", "problem": f"at most {MAX_PINNED} ids"}],
            )
        return JSONResponse(await guarded(gather_series(runtime, pinned)), headers=_NO_STORE)

    @router.get("/status/divergence/{tenant}/{divergence_id}", response_class=HTMLResponse, responses=_VIEW)
    async def divergence_page(
        request: Request,
        tenant: Tenant,
        divergence_id: Annotated[int, Path(json_schema_extra=ROW_ID_SCHEMA)],
        authorization: Annotated[str | None, Header()] = None,
    ) -> Response:
        who = viewer(request, authorization)
        if who is None:
            return _sign_in_page(401, "Open /status?token=TOKEN once (a read or write token), then this.")
        row_id_or_404(divergence_id, "divergence")
        return HTMLResponse(render_divergence_page(viewer=who.name), headers=_NO_STORE)

    @router.get("/status/divergence/{tenant}/{divergence_id}/data", responses=_VIEW_DATA)
    async def divergence_data(
        request: Request,
        tenant: Tenant,
        divergence_id: Annotated[int, Path(json_schema_extra=ROW_ID_SCHEMA)],
        authorization: Annotated[str | None, Header()] = None,
    ) -> JSONResponse:
        if viewer(request, authorization) is None:
            return _unauthorized()
        found = await get_divergence(runtime.pool, tenant, row_id_or_404(divergence_id, "divergence"))
        if found is None:
            raise AdminError(404, "not_found", f"no divergence {divergence_id} of tenant {tenant!r}")
        found["side_by_side"] = side_by_side(found["serving_body"], found["shadow_body"])
        return JSONResponse(found, headers=_NO_STORE)

    return router


def _unauthorized() -> JSONResponse:
    return JSONResponse(
        {"error": "unauthorized", "detail": "a status session cookie or a bearer token is required"},
        status_code=401,
        headers={"WWW-Authenticate": "Bearer"},
    )


_NO_STORE = {"Cache-Control": "no-store", "X-Frame-Options": "DENY"}
MAX_PINNED = 10  # tenants a viewer may pin to the time series
_ONE = TENANT_PATTERN[1:-1]  # the tenant pattern without its anchors (tenant ids hold no comma)
_PINNED_PATTERN = f"^{_ONE}(?:,{_ONE}){{0,{MAX_PINNED - 1}}}$"
_PAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    303: {"description": "signed in with `?token=`: to /status, with the session cookie"},
    401: {"description": "the sign-in page", "content": {"text/html": {}}},
}
_SERIES: dict[int | str, dict[str, Any]] = {
    400: {"description": "a malformed tenant id in `tenants` (`invalid_tenant`)"},
    401: {"description": "no session cookie and no valid token"},
    422: {"description": "more tenants than can be pinned (`invalid_request`)"},
}
_VIEW: dict[int | str, dict[str, Any]] = {
    401: {"description": "the sign-in page", "content": {"text/html": {}}},
    404: {"description": "an id no divergence can have"},
}
_VIEW_DATA: dict[int | str, dict[str, Any]] = {
    401: {"description": "no session cookie and no valid token"},
    404: {"description": "no such divergence"},
    503: {"description": "the phase store is unavailable (`store_unavailable`)"},
}


def _sign_in_page(status: int, message: str) -> HTMLResponse:
    body = (
        "<!doctype html><meta charset=utf-8><title>cutover status</title>"
        "<body style='font:16px system-ui,sans-serif;margin:3em'>"
        f"<h1>cutover status</h1><p>{message}</p></body>"
    )
    return HTMLResponse(body, status_code=status, headers=_NO_STORE)
