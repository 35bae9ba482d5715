"""The admin guard on a small app of its own: it answers for routes added directly and through included
routers, before the body is read, and leaves routes without a token requirement alone."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from pydantic import BaseModel

from config.settings import AdminToken
from proxy.admin.auth import TokenAuthenticator
from proxy.admin.errors import install_error_handlers
from proxy.admin.guard import AdminGuard, Reader, Writer

WRITE, READ = "w-token-0123456789abcdef", "r-token-0123456789abcdef"


class Body(BaseModel):
    value: int


def guarded_app() -> FastAPI:
    app = FastAPI()
    tokens = {
        "writer": AdminToken.model_validate({"token": WRITE, "scope": "write"}),
        "reader": AdminToken.model_validate({"token": READ, "scope": "read"}),
    }
    app.state.authenticator = TokenAuthenticator(tokens)
    install_error_handlers(app)
    app.add_middleware(AdminGuard, routes=app.router.routes, authenticator=app.state.authenticator)

    async def receive_spy(body: Body, who: Writer) -> dict[str, Any]:
        return {"value": body.value, "who": who.name}

    @app.post("/direct")
    async def direct(body: Body, who: Writer) -> dict[str, Any]:
        return await receive_spy(body, who)

    router = APIRouter()

    @router.post("/included")
    async def included(body: Body, who: Writer) -> dict[str, Any]:
        return await receive_spy(body, who)

    @router.get("/read")
    async def read(who: Reader) -> dict[str, Any]:
        return {"who": who.name}

    @router.post("/open")
    async def open_route(body: Body) -> dict[str, Any]:
        return {"value": body.value}

    app.include_router(router)
    return app


def client_of(app: FastAPI, reads: list[str]) -> httpx.AsyncClient:
    """A client of `app` through a spy that notes every path whose body the app reads."""

    async def spied(scope: Any, receive: Any, send: Any) -> None:
        async def spy() -> Any:
            message = await receive()
            if message["type"] == "http.request":
                reads.append(scope["path"])
            return message

        await app(scope, spy, send)

    return httpx.AsyncClient(transport=httpx.ASGITransport(app=spied), base_url="http://admin")


@pytest.mark.parametrize("path", ["/direct", "/included"])
async def test_refused_without_reading_the_body(path: str) -> None:
    reads: list[str] = []
    async with client_of(guarded_app(), reads) as client:
        for token, status in ((None, 401), ("nope", 401), (READ, 403)):
            headers = {} if token is None else {"Authorization": f"Bearer {token}"}
            response = await client.post(path, content=b'{"value": ', headers=headers)
            assert response.status_code == status, response.text
            assert response.json()["error"] in ("unauthorized", "forbidden")
        assert reads == [], "the guard let the route read the body first"
        ok = await client.post(path, json={"value": 3}, headers={"Authorization": f"Bearer {WRITE}"})
        assert ok.json() == {"value": 3, "who": "writer"}
        malformed = await client.post(path, content=b"{", headers={"Authorization": f"Bearer {WRITE}"})
        assert malformed.status_code == 422
        assert malformed.json()["error"] == "invalid_request"
        assert set(reads) == {path}  # the accepted requests were read


async def test_read_routes_take_any_token_and_open_routes_none() -> None:
    async with client_of(guarded_app(), []) as client:
        assert (await client.get("/read")).status_code == 401
        for token, name in ((READ, "reader"), (WRITE, "writer")):
            answer = await client.get("/read", headers={"Authorization": f"Bearer {token}"})
            assert answer.json() == {"who": name}
        assert (await client.post("/open", json={"value": 1})).json() == {"value": 1}
