"""A backend that behaves like json-server 0.17 (typicode/json-server, `src/server/router/plural.js`), for
tests of replay against a service that gives cutover no help:

    GET    /items        the tenant's records, a bare JSON array, in insertion order; with `_page`
                         (from 1) and `_limit` (default 10) one page of them, with `X-Total-Count` and
                         a `Link` header (`first`, `prev`, `next`, `last`: absolute URLs, made by
                         replacing `page=<n>` in the request's URL, as json-server does); with `_start`
                         and `_limit` (or `_end`) a slice, with `X-Total-Count`
    GET    /items/{id}   the record; 404 `{}` when absent
    POST   /items        create; the id from the body, else a generated one; 500 "Insert failed, duplicate
                         id" when a record has that id already; 201 with an absolute `Location`
    PUT    /items/{id}   replace (the id stays); 404 `{}` when absent: a PUT never creates
    PATCH  /items/{id}   merge; 404 `{}` when absent
    DELETE /items/{id}   200 `{}`; 404 `{}` when absent

`Idempotency-Key` is ignored, as json-server ignores it. Unlike json-server, records are scoped by the
`X-Tenant-ID` header (one collection per tenant). Ids compare as strings, as json-server's do.

`python -m tests.support.jsonlike_server PORT [SEED]` serves it on 127.0.0.1:PORT until terminated; SEED
is a JSON file `{tenant: [record, ...]}` loaded before the first request (json-server's db.json, per
tenant), so a test can start a backend that already holds many records without writing them one by one.
"""

from __future__ import annotations

import json
import secrets
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

Store = dict[str, dict[str, dict[str, Any]]]  # tenant → id (as a string) → record


def create_app(
    seen: list[tuple[str, str]] | None = None,
    headers: list[dict[str, str]] | None = None,
    store: Store | None = None,
) -> web.Application:
    """The app; with `seen` (and `headers`), every request's method and path (and headers) are appended
    to it, for tests in-process; with `store`, its records are those (a test seeds and reads them)."""
    store = {} if store is None else store

    def records(request: web.Request) -> dict[str, dict[str, Any]]:
        return store.setdefault(request.headers.get("X-Tenant-ID", ""), {})

    def absent() -> web.Response:
        return web.json_response({}, status=404)

    async def body_of(request: web.Request) -> dict[str, Any] | web.Response:
        try:
            body = await request.json()
        except ValueError:
            return web.Response(status=400, text="body is not JSON")
        return body if isinstance(body, dict) else web.Response(status=400, text="body is not an object")

    async def list_items(request: web.Request) -> web.Response:
        found = list(records(request).values())
        query = request.query
        page, limit, start, end = (query.get(name) for name in ("_page", "_limit", "_start", "_end"))
        if page is None and limit is None and end is None:
            return web.json_response(found)
        headers = {"X-Total-Count": str(len(found))}
        if page is not None:  # json-server 0.17: plural.js and utils.getPage
            current = max(_int(page, 1), 1)
            size = _int(limit, 10) or 10
            items = found[(current - 1) * size : current * size]
            numbers: dict[str, int] = {}
            if items and len(items) != len(found):
                numbers["first"] = 1
            if items and current > 1:
                numbers["prev"] = current - 1
            if items and current * size < len(found):
                numbers["next"] = current + 1
            if items and len(items) != len(found):
                numbers["last"] = (len(found) + size - 1) // size
            url = str(request.url)
            if numbers:
                headers["Link"] = ", ".join(
                    f'<{url.replace(f"page={page}", f"page={n}", 1)}>; rel="{rel}"'
                    for rel, n in numbers.items()
                )
            return web.json_response(items, headers=headers)
        first = _int(start, 0)
        stop = _int(end, len(found)) if end is not None else first + _int(limit, 0)
        return web.json_response(found[first:stop], headers=headers)

    async def show(request: web.Request) -> web.Response:
        record = records(request).get(request.match_info["id"])
        return absent() if record is None else web.json_response(record)

    async def create(request: web.Request) -> web.Response:
        body = await body_of(request)
        if isinstance(body, web.Response):
            return body
        items = records(request)
        if body.get("id") is None:
            body["id"] = secrets.token_urlsafe(5)[:7]  # json-server: nanoid(7)
        key = str(body["id"])
        if key in items:  # lodash-id's insert throws; express answers 500
            return web.Response(status=500, text="Error: Insert failed, duplicate id")
        items[key] = body
        location = f"http://{request.host}/items/{key}"
        return web.json_response(body, status=201, headers={"Location": location})

    async def update(request: web.Request) -> web.Response:
        items = records(request)
        key = request.match_info["id"]
        record = items.get(key)
        if record is None:
            return absent()
        body = await body_of(request)
        if isinstance(body, web.Response):
            return body
        if request.method == "PATCH":
            items[key] = {**record, **body, "id": record["id"]}
        else:
            items[key] = {**body, "id": record["id"]}
        return web.json_response(items[key])

    async def destroy(request: web.Request) -> web.Response:
        if records(request).pop(request.match_info["id"], None) is None:
            return absent()
        return web.json_response({})

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        if seen is not None:
            seen.append((request.method, request.path))
        if headers is not None:
            headers.append({name.lower(): value for name, value in request.headers.items()})
        response: web.StreamResponse = await handler(request)
        return response

    app = web.Application(middlewares=[record])
    app.router.add_get("/items", list_items)
    app.router.add_post("/items", create)
    app.router.add_get("/items/{id}", show)
    app.router.add_put("/items/{id}", update)
    app.router.add_patch("/items/{id}", update)
    app.router.add_delete("/items/{id}", destroy)
    return app


def load_seed(path: Path) -> Store:
    """`{tenant: [record, ...]}` as a store (records keyed by their id as a string, in file order)."""
    seeded: dict[str, list[dict[str, Any]]] = json.loads(path.read_text())
    return {tenant: {str(r["id"]): r for r in records} for tenant, records in seeded.items()}


def _int(text: str | None, default: int) -> int:
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default


if __name__ == "__main__":
    import uvloop

    uvloop.install()  # as cutover's own processes run: the backend is not the bottleneck of what it serves
    seed = load_seed(Path(sys.argv[2])) if len(sys.argv) > 2 else None
    web.run_app(create_app(store=seed), host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
