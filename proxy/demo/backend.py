"""A small tenant-scoped JSON data service: the demo's old and new backends, and the tests' too.

    GET    /items                 list the tenant's items (sorted by id); with `limit` (and `page`, from 1)
                                  one page of them, with the total in `X-Total-Count`
    GET    /items/{id}            one item, 404 if absent
    POST   /items                 create; the service assigns `id` unless the body carries one
    PUT    /items/{id}            create or replace
    DELETE /items/{id}            delete (204; 404 if absent)
    POST   /_control              {"fail_reads": bool, "fail_writes": bool, "delay_ms": int, "stamp": bool}
    GET    /_dump                 every tenant's items (for convergence checks)
    POST   /_load                 bulk-load {tenant: {id: item}} (the demo's stand-in for a backfill)

The tenant comes from the `X-Tenant-ID` header. A request carrying `Idempotency-Key` that was seen before
gets the first answer again without applying twice, as a real service with idempotent writes would.
`stamp: true` adds a `served_at` field to reads: a timestamp-like field that differs between sides.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Header, Query, Request, Response
from fastapi.responses import JSONResponse


@dataclass
class Faults:
    fail_reads: bool = False
    fail_writes: bool = False
    delay_ms: int = 0
    stamp: bool = False


@dataclass
class Storage:
    items: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    answers: dict[str, tuple[int, Any]] = field(default_factory=dict)  # idempotency key → first answer
    writes_applied: int = 0


def create_backend_app(name: str, *, id_prefix: str = "") -> FastAPI:
    app = FastAPI(title=f"demo data service ({name})")
    storage = Storage()
    faults = Faults()
    ids = itertools.count(1)
    app.state.storage = storage
    app.state.faults = faults

    async def gate(write: bool) -> JSONResponse | None:
        if faults.delay_ms:
            await asyncio.sleep(faults.delay_ms / 1000)
        if faults.fail_writes if write else faults.fail_reads:
            return JSONResponse({"error": "injected_failure", "backend": name}, status_code=503)
        return None

    def remembered(key: str | None, status: int, body: Any) -> JSONResponse:
        if key is not None:
            storage.answers[key] = (status, body)
        return JSONResponse(body, status_code=status)

    @app.get("/items")
    async def list_items(
        x_tenant_id: str = Header(""), page: int = Query(1, ge=1), limit: int | None = Query(None, ge=1)
    ) -> Response:
        if failed := await gate(write=False):
            return failed
        items = [storage.items.get(x_tenant_id, {})[k] for k in sorted(storage.items.get(x_tenant_id, {}))]
        headers = {}
        if limit is not None:  # the page `cutover backfill` and `cutover verify` ask for
            headers["X-Total-Count"] = str(len(items))
            items = items[(page - 1) * limit : page * limit]
        body: dict[str, Any] = {"items": items, "count": len(items)}
        if faults.stamp:
            body["served_at"] = time.time()
        return JSONResponse(body, headers=headers)

    @app.get("/items/{item_id}")
    async def get_item(item_id: str, x_tenant_id: str = Header("")) -> Response:
        if failed := await gate(write=False):
            return failed
        item = storage.items.get(x_tenant_id, {}).get(item_id)
        if item is None:
            return JSONResponse({"error": "not_found", "id": item_id}, status_code=404)
        return JSONResponse({**item, "served_at": time.time()} if faults.stamp else item)

    @app.post("/items")
    async def create_item(
        request: Request, x_tenant_id: str = Header(""), idempotency_key: str | None = Header(None)
    ) -> Response:
        if idempotency_key in storage.answers:
            status, body = storage.answers[idempotency_key]
            return JSONResponse(body, status_code=status)
        if failed := await gate(write=True):
            return failed
        data = await request.json()
        item_id = str(data.get("id") or f"{id_prefix}{next(ids)}")
        item = {**data, "id": item_id}
        storage.items.setdefault(x_tenant_id, {})[item_id] = item
        storage.writes_applied += 1
        response = remembered(idempotency_key, 201, item)
        response.headers["Location"] = f"/items/{item_id}"
        return response

    @app.put("/items/{item_id}")
    async def put_item(
        item_id: str,
        request: Request,
        x_tenant_id: str = Header(""),
        idempotency_key: str | None = Header(None),
    ) -> Response:
        if idempotency_key in storage.answers:
            status, body = storage.answers[idempotency_key]
            return JSONResponse(body, status_code=status)
        if failed := await gate(write=True):
            return failed
        item = {**(await request.json()), "id": item_id}
        storage.items.setdefault(x_tenant_id, {})[item_id] = item
        storage.writes_applied += 1
        return remembered(idempotency_key, 200, item)

    @app.delete("/items/{item_id}")
    async def delete_item(
        item_id: str, x_tenant_id: str = Header(""), idempotency_key: str | None = Header(None)
    ) -> Response:
        if idempotency_key in storage.answers:
            return Response(status_code=storage.answers[idempotency_key][0])
        if failed := await gate(write=True):
            return failed
        if storage.items.get(x_tenant_id, {}).pop(item_id, None) is None:
            # Remembered too: a replay of this DELETE after a later PUT must not delete that PUT's item.
            return remembered(idempotency_key, 404, {"error": "not_found", "id": item_id})
        storage.writes_applied += 1
        if idempotency_key is not None:
            storage.answers[idempotency_key] = (204, None)
        return Response(status_code=204)

    @app.post("/_control")
    async def control(request: Request) -> dict[str, Any]:
        for key, value in (await request.json()).items():
            if hasattr(faults, key):
                setattr(faults, key, type(getattr(faults, key))(value))
        return faults.__dict__

    @app.post("/_load")
    async def load(request: Request) -> dict[str, int]:
        """Bulk-load items ({tenant: {id: item}}) without counting them as writes: the demo's backfill."""
        loaded = 0
        for tenant, items in (await request.json()).items():
            storage.items.setdefault(tenant, {}).update(items)
            loaded += len(items)
        return {"loaded": loaded}

    @app.get("/_dump")
    async def dump() -> dict[str, Any]:
        return {"items": storage.items, "writes_applied": storage.writes_applied}

    return app


def serve_backend(name: str, *, host: str, port: int) -> None:
    """Serve one demo data service until SIGINT/SIGTERM (`cutover demo-backend`)."""
    import uvicorn

    uvicorn.run(create_backend_app(name), host=host, port=port, log_level="warning", access_log=False)


def main() -> None:
    """`python -m proxy.demo.backend NAME PORT`: serve one demo data service on 127.0.0.1:PORT."""
    import sys

    serve_backend(sys.argv[1], host="127.0.0.1", port=int(sys.argv[2]))


if __name__ == "__main__":
    main()
