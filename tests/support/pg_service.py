"""A small data service over its own PostgreSQL database: old or new in end-to-end tests where each side's
data lives in a real database (so the PostgreSQL applier can write it, and the test can compare tables).

    GET    /items/{id}        the item, 404 if absent
    PUT    /items/{id}        create or replace: `{...body, "id": id}`
    PATCH  /items/{id}        shallow merge into the stored item (created when absent)
    POST   /items             create; the service assigns the id unless the body carries one (201 + Location)
    DELETE /items/{id}        204, or 404 if absent
    POST   /query             `{"sql": text | [texts], "params": [...] | [[...], ...]}`: the statements, run
                              in one transaction (PostgreSQL dialect), answering `{"rows": [...]}`

Tables (`SCHEMA`): `items (tenant_id, id, doc jsonb)` behind the REST resource, `orders (tenant_id, id,
total)` written through SQL. The tenant is `X-Tenant-ID`. A request whose `Idempotency-Key` was seen
gets the first answer again without being applied twice, as the HTTP applier expects. `jitter_ms`
delays the answer to a client's write (one without `Idempotency-Key`) after its commit by a random time
up to that: the window in which a later write of the same key can be committed and acknowledged first.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson

from routing.phases import Side
from tests.support.asgi import Receive, Scope, Send, read_body
from tests.support.postgres import SessionDatabases, database_url
from tests.support.servers import RunningServer, backend_config, start_server

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (tenant_id text, id text, doc jsonb NOT NULL, PRIMARY KEY (tenant_id, id));
CREATE TABLE IF NOT EXISTS orders (tenant_id text, id text, total bigint NOT NULL,
                                   PRIMARY KEY (tenant_id, id))
"""
_Answer = tuple[int, bytes, list[tuple[bytes, bytes]]]


@dataclass
class PgDataService:
    name: str
    url: str  # the database
    jitter_ms: float = 0.0
    pool: asyncpg.Pool | None = None
    server: RunningServer | None = None
    answers: dict[str, _Answer] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        assert self.server is not None
        return self.server.url

    async def start(self) -> None:
        conn = await asyncpg.connect(self.url)
        try:
            await conn.execute(SCHEMA)
        finally:
            await conn.close()
        self.pool = await asyncpg.create_pool(self.url, min_size=2, max_size=16)
        self.server = await start_server(backend_config(self))

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
        if self.pool is not None:
            await self.pool.close()

    async def rows(self, tenant: str) -> dict[str, dict[str, Any]]:
        """The tenant's items and orders: `{"items": {id: doc}, "orders": {id: total}}`."""
        assert self.pool is not None
        async with self.pool.acquire() as conn:
            items = await conn.fetch("SELECT id, doc FROM items WHERE tenant_id = $1", tenant)
            orders = await conn.fetch("SELECT id, total FROM orders WHERE tenant_id = $1", tenant)
        return {
            "items": {r["id"]: orjson.loads(r["doc"]) for r in items},
            "orders": {r["id"]: r["total"] for r in orders},
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        method: str = scope["method"]
        key = headers.get("idempotency-key")
        if key is not None and key in self.answers:
            await _send(send, *self.answers[key])
            return
        answer = await self._handle(method, scope["path"], headers.get("x-tenant-id", ""), body)
        if key is not None:
            self.answers[key] = answer
        if method != "GET" and key is None and self.jitter_ms:  # clients' writes, not the worker's
            await asyncio.sleep(random.uniform(0, self.jitter_ms) / 1000)
        await _send(send, *answer)

    async def _handle(self, method: str, path: str, tenant: str, body: bytes) -> _Answer:
        assert self.pool is not None
        if path == "/query" and method == "POST":
            return await self._query(orjson.loads(body))
        parts = path.strip("/").split("/")
        if parts[0] != "items" or len(parts) > 2:
            return _json(404, {"error": "not_found"})
        if len(parts) == 1:
            if method != "POST":
                return _json(405, {"error": "method_not_allowed"})
            document = orjson.loads(body)
            item_id = str(document.get("id") or f"{self.name}-{uuid.uuid4().hex[:8]}")
            document["id"] = item_id
            async with self.pool.acquire() as conn:
                await conn.execute(
                    "INSERT INTO items VALUES ($1, $2, $3::jsonb)",
                    tenant,
                    item_id,
                    orjson.dumps(document).decode(),
                )
            status, payload, extra = _json(201, document)
            return status, payload, [*extra, (b"location", f"/items/{item_id}".encode())]
        item_id = parts[1]
        async with self.pool.acquire() as conn:
            if method == "GET":
                doc = await conn.fetchval(
                    "SELECT doc FROM items WHERE tenant_id = $1 AND id = $2", tenant, item_id
                )
                return _json(404, {"error": "not_found"}) if doc is None else (200, doc.encode(), _JSON)
            if method == "DELETE":
                status = await conn.execute(
                    "DELETE FROM items WHERE tenant_id = $1 AND id = $2", tenant, item_id
                )
                return (204, b"", []) if status.endswith(" 1") else _json(404, {"error": "not_found"})
            document = {**orjson.loads(body), "id": item_id}
            merge = "items.doc || EXCLUDED.doc" if method == "PATCH" else "EXCLUDED.doc"
            if method not in ("PUT", "PATCH"):
                return _json(405, {"error": "method_not_allowed"})
            doc = await conn.fetchval(
                f"INSERT INTO items VALUES ($1, $2, $3::jsonb) ON CONFLICT (tenant_id, id)"
                f" DO UPDATE SET doc = {merge} RETURNING doc",
                tenant,
                item_id,
                orjson.dumps(document).decode(),
            )
        return 200, doc.encode(), _JSON

    async def _query(self, request: dict[str, Any]) -> _Answer:
        assert self.pool is not None
        texts = request["sql"] if isinstance(request["sql"], list) else [request["sql"]]
        params = request.get("params") or []
        params_per_text = params if isinstance(request["sql"], list) else [params]
        rows: list[list[Any]] = []
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                for text, args in zip(texts, params_per_text, strict=True):
                    rows.extend([list(r.values()) for r in await conn.fetch(text, *args)])
        except asyncpg.PostgresError as exc:
            return _json(400, {"error": "sql_error", "detail": str(exc)})
        return _json(200, {"rows": rows})


_JSON = [(b"content-type", b"application/json")]


def _json(status: int, body: Any) -> _Answer:
    return status, orjson.dumps(body), _JSON


async def _send(send: Send, status: int, payload: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    length = (b"content-length", str(len(payload)).encode())
    await send({"type": "http.response.start", "status": status, "headers": [*headers, length]})
    await send({"type": "http.response.body", "body": payload})


@contextlib.asynccontextmanager
async def pg_sides(
    jitter_ms: float = 0.0, databases: SessionDatabases | None = None
) -> AsyncIterator[dict[Side, PgDataService]]:
    """Old and new, each a `PgDataService` over a fresh database, dropped on the way out (with
    `databases`: with the session's, at its end)."""
    store = SessionDatabases() if databases is None else databases
    services: dict[Side, PgDataService] = {}
    try:
        for side in Side:
            name = await store.create(f"cutover_{side.value}")
            services[side] = PgDataService(side.value, database_url(name), jitter_ms)
            await services[side].start()
        yield services
    finally:
        for service in services.values():
            await service.stop()
        if databases is None:
            await store.drop_all()
