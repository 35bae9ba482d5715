"""Naive reference: the FastAPI catch-all proxy a team writes in a day (one shared httpx client).

Backend URL from the BENCH_BACKEND environment variable. Run with
`uvicorn loadtests.refs.naive_proxy:app --loop uvloop --http httptools`.
"""

from __future__ import annotations

import os

import httpx
from fastapi import FastAPI, Request, Response

BACKEND = os.environ.get("BENCH_BACKEND", "http://127.0.0.1:8000")
HOP = {"host", "connection", "keep-alive", "transfer-encoding", "content-length", "upgrade"}

app = FastAPI()
client = httpx.AsyncClient(base_url=BACKEND, timeout=30.0)


@app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
async def proxy(path: str, request: Request) -> Response:
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
    upstream = await client.request(
        request.method,
        "/" + path,
        params=request.url.query,
        headers=headers,
        content=await request.body(),
    )
    out = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP | {"content-encoding"}}
    return Response(content=upstream.content, status_code=upstream.status_code, headers=out)
