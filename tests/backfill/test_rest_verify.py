"""REST verification against two in-process backends served by uvicorn: page numbers and cursors, the
tenant header, ignored noise fields, exact differing ids, pending intents, and the gate's stored report."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from fastapi import FastAPI, Header
from fastapi.responses import JSONResponse

from backfill.errors import DataError
from backfill.verify_run import VerifyOptions, run_verify
from buffer_worker.intent import Intent
from buffer_worker.producer import RedisIntentProducer
from config.settings import Settings
from routing.phases import Side
from tests.backfill.conftest import DataEnv
from tests.conftest import RunningServer, backend_config, start_server

Records = dict[str, dict[int, dict[str, Any]]]  # tenant -> id -> record


def paging_app(records: Records, *, seen: list[dict[str, str]]) -> FastAPI:
    app = FastAPI()

    @app.get("/things")
    async def things(page: int = 1, limit: int = 100, x_tenant_id: str = Header("")) -> JSONResponse:
        seen.append({"tenant": x_tenant_id, "page": str(page)})
        rows = [records.get(x_tenant_id, {})[k] for k in sorted(records.get(x_tenant_id, {}))]
        chunk = rows[(page - 1) * limit : page * limit]
        return JSONResponse({"items": [{**r, "served_at": random.random()} for r in chunk], "page": page})

    @app.get("/events")
    async def events(
        limit: int = 100, after: str | None = None, x_tenant_id: str = Header("")
    ) -> JSONResponse:
        keys = sorted(records.get(x_tenant_id, {}))
        start = 0 if after is None else keys.index(int(after)) + 1
        chunk = keys[start : start + limit]
        more = start + limit < len(keys)
        body = {
            "data": [{"event_id": k, "n": k * 2} for k in chunk],
            "next": str(chunk[-1]) if more else None,
        }
        return JSONResponse(body)

    @app.get("/broken")
    async def broken() -> JSONResponse:
        return JSONResponse({"error": "nope"}, status_code=500)

    return app


@pytest.fixture
async def backends() -> AsyncIterator[
    tuple[RunningServer, RunningServer, Records, Records, list[dict[str, str]]]
]:
    old: Records = {}
    new: Records = {}
    seen: list[dict[str, str]] = []
    servers = [await start_server(backend_config(paging_app(data, seen=seen))) for data in (old, new)]
    yield servers[0], servers[1], old, new, seen
    for server in servers:
        await server.stop()


def _settings(
    env: DataEnv, old: RunningServer, new: RunningServer, prefix: str, things_path: str = "/things"
) -> Settings:
    resources = [
        {"name": "things", "list_path": things_path, "page_size": 100, "ignore_fields": ["served_at"]},
        {
            "name": "events",
            "list_path": "/events",
            "id_field": "event_id",
            "items_field": "data",
            "next_field": "next",
            "cursor_param": "after",
            "page_size": 64,
        },
    ]
    return Settings.model_validate(
        {
            "backends": {"old": {"url": old.url}, "new": {"url": new.url}},
            "postgres_url": env.control_url,
            "buffer": {"key_prefix": prefix, "partitions": 4},
            "data": {
                "rest": {"resources": resources},
                "verify": {"drain_timeout_s": 0.5, "recheck_rounds": 1},
            },
        }
    )


async def test_pages_both_sides_and_names_exactly_the_differing_ids(
    data_env: DataEnv, backends: Any, tenant: str, prefix: str
) -> None:
    old_server, new_server, old, new, seen = backends
    old[tenant] = {i: {"id": i, "qty": i % 7, "name": f"thing {i}"} for i in range(1, 1235)}
    new[tenant] = {i: dict(r) for i, r in old[tenant].items()}
    del new[tenant][17]
    new[tenant][9999] = {"id": 9999, "qty": 1, "name": "extra"}
    new[tenant][500]["qty"] = 42
    old["someone-else"] = {1: {"id": 1, "qty": 1, "name": "other"}}  # never compared: another tenant

    run = await run_verify(_settings(data_env, old_server, new_server, prefix), VerifyOptions(tenant))
    things, events = run.tables
    assert things.kind == "rest" and things.rows_old == 1234 and things.rows_new == 1234
    assert things.keys["missing_on_new"] == [["17"]]
    assert things.keys["missing_on_old"] == [["9999"]]
    assert things.keys["different"] == [["500"]]
    assert things.ranges == 13  # 1234 records at 100 a page
    sample = next(s for s in things.samples if s["key"] == ["500"])
    assert sample["columns"] == {"qty": {"old": 500 % 7, "new": 42}}  # served_at is ignored
    # Events are derived from the same ids (cursor paging): only the ids differ there.
    assert events.rows_old == events.rows_new == 1234 and events.ranges == 20
    assert events.keys["missing_on_new"] == [["17"]] and events.keys["missing_on_old"] == [["9999"]]
    assert events.counts["different"] == 0
    assert not run.passed and run.report_ids.keys() == {"things", "events"}
    assert {s["tenant"] for s in seen} == {tenant}


async def test_ids_with_pending_intents_are_unsettled_and_errors_are_named(
    data_env: DataEnv, backends: Any, tenant: str, prefix: str
) -> None:
    old_server, new_server, old, new, _seen = backends
    old[tenant] = {i: {"id": i, "v": 1} for i in range(1, 50)}
    new[tenant] = {i: {"id": i, "v": 1} for i in range(1, 50)}
    new[tenant][7] = {"id": 7, "v": 0}  # its mirrored write is still in the buffer
    settings = _settings(data_env, old_server, new_server, prefix)
    producer = RedisIntentProducer.from_url(
        settings.redis_url.get_secret_value(), prefix=prefix, partitions=4
    )
    try:
        body = orjson.dumps({"id": 7, "v": 1})
        await producer.append(Intent(tenant, Side.NEW, "PUT", "/things/7", "", (), body, 200, b""))
    finally:
        await producer.close()
    report = (await run_verify(settings, VerifyOptions(tenant, ("things",), store=False))).tables[0]
    assert report.keys["unsettled"] == [["7"]] and report.counts["different"] == 0

    broken = _settings(data_env, old_server, new_server, prefix, things_path="/broken")
    with pytest.raises(DataError, match="things: the (old|new) side answered 500"):
        await run_verify(broken, VerifyOptions(tenant, store=False))
