"""Who may call which admin route, decided before the route reads a byte of the request.

A route states what it needs by depending on `require_read` (any token) or `require_write` (a token of
write scope): `Reader` / `Writer` below. FastAPI reads and parses a request's body before it solves a
route's dependencies, so a dependency alone would let anyone make the server parse a body, and answer a
malformed one with 422 rather than 401. `AdminGuard`, an ASGI middleware in front of the routes, matches
the request to its route first (as Starlette's router would), reads from the route's dependencies what
it needs, and answers 401 (no valid token) or 403 (read token, write route) without touching the body.
The dependencies then hand the route the principal the guard found.

Routes with their own sign-in (the status page's session cookie, `/metrics` with `metrics_auth: none`)
depend on neither and pass the guard untouched.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any

import fastapi.routing
from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from config.settings import TokenScope
from proxy.admin.auth import Principal, TokenAuthenticator
from proxy.admin.errors import AdminError

if TYPE_CHECKING:
    from fastapi.dependencies.models import Dependant

PRINCIPAL_KEY = "cutover.principal"  # where the guard leaves the caller in the ASGI scope
# Documents the scheme in the OpenAPI schema; the guard does the checking.
_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="an admin token: `read` scope for reads, `write` scope for changes",
)
_Credentials = Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)]


def authorize(authenticator: TokenAuthenticator, authorization: str | None, needed: TokenScope) -> Principal:
    """The caller, or AdminError 401 (no valid token) / 403 (`needed` is write, the token reads only).
    Tokens are compared in constant time (`TokenAuthenticator`)."""
    found = authenticator.authenticate(authorization)
    if found is None:
        raise AdminError(401, "unauthorized", "a valid 'Authorization: Bearer <token>' header is required")
    if needed is TokenScope.WRITE and not found.can_write():
        raise AdminError(403, "forbidden", f"token {found.name!r} has read scope; this needs write scope")
    return found


def _principal(request: Request, needed: TokenScope) -> Principal:
    found = request.scope.get(PRINCIPAL_KEY)
    if isinstance(found, Principal) and (needed is TokenScope.READ or found.can_write()):
        return found
    # Not through the guard (an app assembled without it): check here, as late as FastAPI allows.
    authenticator: TokenAuthenticator = request.app.state.authenticator
    return authorize(authenticator, request.headers.get("authorization"), needed)


def require_read(request: Request, _credentials: _Credentials) -> Principal:
    return _principal(request, TokenScope.READ)


def require_write(request: Request, _credentials: _Credentials) -> Principal:
    return _principal(request, TokenScope.WRITE)


Reader = Annotated[Principal, Depends(require_read)]
Writer = Annotated[Principal, Depends(require_write)]


def needed_scope(dependant: Dependant) -> TokenScope | None:
    """What a route's dependencies (at any depth) ask of the caller: write, read, or nothing."""
    needed: TokenScope | None = None
    stack = [dependant]
    while stack:
        current = stack.pop()
        if current.call is require_write:
            return TokenScope.WRITE
        if current.call is require_read:
            needed = TokenScope.READ
        stack.extend(current.dependencies)
    return needed


class AdminGuard:
    """ASGI middleware: authenticate and check scope for the route a request will reach, before it runs.
    `routes` is the app's route list, read at the first request (every route is registered by then)."""

    def __init__(self, app: ASGIApp, *, routes: list[BaseRoute], authenticator: TokenAuthenticator) -> None:
        self._app = app
        self._routes = routes
        self._authenticator = authenticator
        self._needs: list[tuple[BaseRoute, TokenScope | None]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        needed = self._needed(scope)
        if needed is not None:
            authorization = None
            for name, value in scope["headers"]:
                if name == b"authorization":
                    authorization = value.decode("latin-1")
                    break
            try:
                scope[PRINCIPAL_KEY] = authorize(self._authenticator, authorization, needed)
            except AdminError as exc:
                await exc.response()(scope, receive, send)
                return
        await self._app(scope, receive, send)

    def _needed(self, scope: Scope) -> TokenScope | None:
        if self._needs is None:
            self._needs = [(route, _route_needs(route)) for route in flat_routes(self._routes)]
        for route, needed in self._needs:
            match, _ = route.matches(scope)
            if match is Match.FULL:  # the route Starlette's router will run (it takes the first full match)
                return needed
        return None  # no route: the router answers 404 or 405 without reading the body


def flat_routes(routes: Sequence[BaseRoute]) -> list[BaseRoute]:
    """Every route, those of included routers too (kept as one route each by recent FastAPI, whose
    routes then match as they are: cutover includes routers without a prefix)."""
    iterate = getattr(fastapi.routing, "iter_route_contexts", None)
    if iterate is None:  # older FastAPI copies included routes into the app's list
        return list(routes)
    return [context.original_route for context in iterate(routes)]


def _route_needs(route: BaseRoute) -> TokenScope | None:
    dependant: Any = getattr(route, "dependant", None)
    return None if dependant is None else needed_scope(dependant)
