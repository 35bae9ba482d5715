"""The status page on the admin port: `GET /status` (HTML) and `GET /status/data` (its JSON).

Read scope. A bearer header works for both; a browser opens `/status?token=TOKEN` once and gets a session
cookie instead (see `proxy.status_auth`). The page is static HTML with a small script that polls
`/status/data` every `refresh_s` and draws it: no external assets, so it works on an isolated network.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from proxy.admin_auth import TokenAuthenticator
from proxy.status_auth import COOKIE_NAME, COOKIE_PATH, StatusSessions, Viewer
from proxy.status_data import gather
from proxy.status_html import render_page

if TYPE_CHECKING:
    from proxy.runtime import Runtime


def create_status_router(runtime: Runtime) -> APIRouter:
    settings = runtime.settings.operator.status_page
    tokens = runtime.settings.admin.tokens
    authenticator = TokenAuthenticator(tokens)
    sessions = StatusSessions(tokens, ttl_s=settings.session_ttl_s)
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
        return HTMLResponse(render_page(viewer=who.name, refresh_s=settings.refresh_s), headers=_NO_STORE)

    @router.get("/status/data", responses={401: {"description": "no session cookie and no valid token"}})
    async def status_data(
        request: Request, authorization: Annotated[str | None, Header()] = None
    ) -> JSONResponse:
        who = viewer(request, authorization)
        if who is None:
            return JSONResponse(
                {"error": "unauthorized", "detail": "a status session cookie or a bearer token is required"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        body: dict[str, Any] = await gather(runtime, settings)
        body["viewer"] = who.name
        return JSONResponse(body, headers=_NO_STORE)

    return router


_NO_STORE = {"Cache-Control": "no-store", "X-Frame-Options": "DENY"}
_PAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    303: {"description": "signed in with `?token=`: to /status, with the session cookie"},
    401: {"description": "the sign-in page", "content": {"text/html": {}}},
}


def _sign_in_page(status: int, message: str) -> HTMLResponse:
    body = (
        "<!doctype html><meta charset=utf-8><title>cutover status</title>"
        "<body style='font:16px system-ui,sans-serif;margin:3em'>"
        f"<h1>cutover status</h1><p>{message}</p></body>"
    )
    return HTMLResponse(body, status_code=status, headers=_NO_STORE)
