"""Floor reference: the least a Python forwarder can do (raw ASGI + one pooled aiohttp session).

Backend URL from the BENCH_BACKEND environment variable. Run with
`uvicorn loadtests.refs.floor_proxy:app --loop uvloop --http httptools`.
"""

from __future__ import annotations

import os
from typing import Any

import aiohttp

BACKEND = os.environ.get("BENCH_BACKEND", "http://127.0.0.1:8000")
HOP = {b"host", b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"upgrade"}
_session: aiohttp.ClientSession | None = None


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    global _session
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                connector = aiohttp.TCPConnector(limit=512, ttl_dns_cache=None)
                _session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if _session is not None:
                    await _session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return
    assert scope["type"] == "http"
    assert _session is not None
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    url = BACKEND + scope["raw_path"].decode("latin-1")
    if scope["query_string"]:
        url += "?" + scope["query_string"].decode("latin-1")
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"] if k not in HOP]
    async with _session.request(scope["method"], url, headers=headers, data=body or None) as resp:
        out = [(k, v) for k, v in resp.raw_headers if k.lower() not in HOP]
        if resp.content_length is not None:
            out.append((b"content-length", str(resp.content_length).encode()))
        await send({"type": "http.response.start", "status": resp.status, "headers": out})
        async for chunk in resp.content.iter_any():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})
