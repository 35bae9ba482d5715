"""The demo old/new backends as tests see them, and a raw echo backend for reverse-proxy checks."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import orjson

from proxy.demo.backend import Faults
from tests.support.asgi import Receive, Scope, Send, read_body
from tests.support.http import loopback_client
from tests.support.servers import RunningServer


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    query: str
    headers: dict[str, str]

    @property
    def tenant(self) -> str | None:
        return self.headers.get("x-tenant-id")


class RecordingApp:
    """ASGI middleware that records every HTTP request reaching the wrapped backend."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.seen: list[Seen] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.seen.append(
                Seen(
                    scope["method"],
                    scope["raw_path"].decode("latin-1"),
                    scope["query_string"].decode("latin-1"),
                    {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]},
                )
            )
        await self.app(scope, receive, send)

    def requests_for(self, tenant: str, *, method: str | None = None, path: str | None = None) -> list[Seen]:
        return [
            s
            for s in self.seen
            if s.tenant == tenant
            and (method is None or s.method == method)
            and (path is None or s.path == path)
            and not s.path.startswith("/_")
        ]


@dataclass
class DemoBackend:
    name: str
    server: RunningServer
    app: Any  # the FastAPI app (its state holds faults and storage)
    recorder: RecordingApp

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def faults(self) -> Faults:
        return self.app.state.faults  # type: ignore[no-any-return]

    async def control(self, **faults: Any) -> None:
        async with loopback_client(base_url=self.url) as client:
            response = await client.post("/_control", json=faults)
            assert response.status_code == 200, response.text

    async def dump(self) -> dict[str, Any]:
        async with loopback_client(base_url=self.url) as client:
            response = await client.get("/_dump")
            assert response.status_code == 200
            return response.json()  # type: ignore[no-any-return]

    async def items_of(self, tenant: str) -> dict[str, Any]:
        return (await self.dump())["items"].get(tenant, {})  # type: ignore[no-any-return]

    async def seed(self, tenant: str, item_id: str, body: dict[str, Any]) -> None:
        """Write straight to this backend, bypassing the proxy."""
        async with loopback_client(base_url=self.url) as client:
            response = await client.put(f"/items/{item_id}", json=body, headers={"X-Tenant-ID": tenant})
            assert response.status_code == 200, response.text


BIG_CHUNK = bytes(range(256)) * 1024  # 256 KiB


async def echo_app(scope: Scope, receive: Receive, send: Send) -> None:
    """A raw ASGI backend for reverse-proxy checks.

    /status/<code>   answers <code> with a small JSON body
    /hop             answers 200 with hop-by-hop response headers (and one end-to-end header)
    /big?size=N      streams N bytes in 256 KiB chunks (Content-Length set)
    anything else    echoes method, raw path, query, headers and body (base64) as JSON
    """
    if scope["type"] != "http":
        return
    body = await read_body(receive)
    path: str = scope["path"]
    if path.startswith("/status/"):
        status = int(path.rsplit("/", 1)[1])
        payload = orjson.dumps({"status": status})
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
        return
    if path == "/hop":
        payload = b"hop"
        headers = [
            (b"content-length", str(len(payload)).encode()),
            (b"connection", b"x-private-hop"),
            (b"x-private-hop", b"secret"),
            (b"keep-alive", b"timeout=5, max=100"),
            (b"proxy-authenticate", b'Basic realm="backend"'),
            (b"trailer", b"x-checksum"),
            (b"proxy-connection", b"keep-alive"),
            (b"x-end-to-end", b"kept"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
        return
    if path == "/big":
        query = dict(part.split("=", 1) for part in scope["query_string"].decode().split("&") if part)
        size = int(query["size"])
        headers = [(b"content-type", b"application/octet-stream"), (b"content-length", str(size).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        sent = 0
        while sent < size:
            chunk = BIG_CHUNK if size - sent >= len(BIG_CHUNK) else BIG_CHUNK[: size - sent]
            sent += len(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": sent < size})
        return
    payload = orjson.dumps(
        {
            "method": scope["method"],
            "raw_path": scope["raw_path"].decode("latin-1"),
            "query": scope["query_string"].decode("latin-1"),
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
            "body_b64": base64.b64encode(body).decode(),
        }
    )
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
