"""A scripted backend pair for shadow tests: each side answers what the test sets, per path."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
import pytest

from proxy.control.schema import ensure_schema
from routing.phases import Side
from tests.support.asgi import Receive, Scope, Send
from tests.support.servers import RunningServer, backend_config, start_server


@dataclass
class Answer:
    status: int = 200
    body: bytes = b"{}"
    headers: list[tuple[bytes, bytes]] = field(
        default_factory=lambda: [(b"content-type", b"application/json")]
    )
    delay_s: float = 0.0


@dataclass
class ScriptedApp:
    """Answers `answers[path]` (or a callable producing one per request), 404 otherwise; counts requests."""

    answers: dict[str, Any] = field(default_factory=dict)
    seen: list[tuple[str, str, str | None]] = field(default_factory=list)  # (method, path, tenant)

    def set(
        self, path: str, body: Any = None, *, status: int = 200, raw: bytes | None = None, **kw: Any
    ) -> None:
        payload = raw if raw is not None else orjson.dumps(body)
        self.answers[path] = Answer(status=status, body=payload, **kw)

    def count(self, method: str, path: str, tenant: str | None = None) -> int:
        return sum(
            1 for m, p, t in self.seen if m == method and p == path and (tenant is None or t == tenant)
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body", False):
            pass
        headers = dict(scope["headers"])
        tenant = headers.get(b"x-tenant-id", b"").decode() or None
        self.seen.append((scope["method"], scope["path"], tenant))
        answer = self.answers.get(scope["path"])
        if callable(answer):
            answer = answer()
        if answer is None:
            answer = Answer(status=404, body=b'{"error":"not_found"}')
        if answer.delay_s:
            import asyncio

            await asyncio.sleep(answer.delay_s)
        body = b"" if scope["method"] == "HEAD" else answer.body
        out = [*answer.headers, (b"content-length", str(len(answer.body)).encode())]
        await send({"type": "http.response.start", "status": answer.status, "headers": out})
        await send({"type": "http.response.body", "body": body})


@dataclass
class ScriptedPair:
    apps: dict[Side, ScriptedApp]
    servers: dict[Side, RunningServer]

    @property
    def old(self) -> ScriptedApp:
        return self.apps[Side.OLD]

    @property
    def new(self) -> ScriptedApp:
        return self.apps[Side.NEW]

    def backends(self, **extra: Any) -> dict[str, Any]:
        return {side.value: {"url": self.servers[side].url, "timeout_s": 5, **extra} for side in Side}

    def reset(self) -> None:
        for app in self.apps.values():
            app.answers.clear()
            app.seen.clear()


@pytest.fixture(scope="session")
async def _scripted_pair() -> AsyncIterator[ScriptedPair]:
    apps = {side: ScriptedApp() for side in Side}
    servers = {side: await start_server(backend_config(apps[side])) for side in Side}
    yield ScriptedPair(apps, servers)
    for server in servers.values():
        await server.stop()


@pytest.fixture
def scripted(_scripted_pair: ScriptedPair) -> ScriptedPair:
    _scripted_pair.reset()
    return _scripted_pair


@pytest.fixture(scope="session")
async def pg_pool(pg_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the session's database, with every table created."""
    pool = await asyncpg.create_pool(pg_url, min_size=1, max_size=4)
    async with pool.acquire() as conn:
        await ensure_schema(conn)
    yield pool
    await pool.close()
