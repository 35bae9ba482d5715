"""REST verification against two in-process backends served by uvicorn: page numbers and cursors, the
tenant header, ignored noise fields, exact differing ids, pending intents, and the gate's stored report;
and `--repair`, which transfers each differing record from the authoritative side (old in shadow, new in
live) to the other with a GET there and a PUT or DELETE here."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson
import pytest
from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse

from backfill.errors import DataError
from backfill.report import render
from backfill.rest_verify import _sample_values, compare
from backfill.verify_run import VerifyOptions, run_verify
from config.settings import Settings
from proxy.cli.support import format_table
from routing.phases import Phase
from tests.backfill.conftest import DataEnv
from tests.support.intents import append_mirrored_put
from tests.support.servers import RunningServer, backend_config, start_server

Records = dict[str, dict[int, dict[str, Any]]]  # tenant -> id -> record


@dataclass
class Writes:
    """The record writes one backend received, and the ids whose PUT it refuses."""

    seen: list[tuple[str, int, str, str]] = field(default_factory=list)  # method, id, tenant, idem. key
    refuse: set[int] = field(default_factory=set)


def paging_app(records: Records, *, seen: list[dict[str, str]], writes: Writes | None = None) -> FastAPI:
    app = FastAPI()
    writes = writes or Writes()

    @app.get("/things/{thing_id}")
    async def get_thing(thing_id: int, x_tenant_id: str = Header("")) -> JSONResponse:
        record = records.get(x_tenant_id, {}).get(thing_id)
        if record is None:
            return JSONResponse({"error": "not_found"}, status_code=404)
        return JSONResponse(record)

    @app.put("/things/{thing_id}")
    async def put_thing(
        thing_id: int, request: Request, x_tenant_id: str = Header(""), idempotency_key: str = Header("")
    ) -> JSONResponse:
        writes.seen.append(("PUT", thing_id, x_tenant_id, idempotency_key))
        if thing_id in writes.refuse:
            return JSONResponse({"error": "locked", "detail": "record is read-only"}, status_code=422)
        record = orjson.loads(await request.body())
        records.setdefault(x_tenant_id, {})[thing_id] = record
        return JSONResponse(record)

    @app.delete("/things/{thing_id}")
    async def delete_thing(
        thing_id: int, x_tenant_id: str = Header(""), idempotency_key: str = Header("")
    ) -> JSONResponse:
        writes.seen.append(("DELETE", thing_id, x_tenant_id, idempotency_key))
        if records.get(x_tenant_id, {}).pop(thing_id, None) is None:
            return JSONResponse({"error": "not_found"}, status_code=404)
        return JSONResponse({}, status_code=200)

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
        {
            "name": "things",
            "list_path": things_path,
            "item_path": "/things/{key}",
            "page_size": 100,
            "ignore_fields": ["served_at"],
        },
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
    assert things.kind == "rest"
    assert things.rows_old == 1234
    assert things.rows_new == 1234
    assert things.keys["missing_on_new"] == [["17"]]
    assert things.keys["missing_on_old"] == [["9999"]]
    assert things.keys["different"] == [["500"]]
    assert things.ranges == 13  # 1234 records at 100 a page
    sample = next(s for s in things.samples if s["key"] == ["500"])
    assert sample["columns"] == {"qty": {"old": 500 % 7, "new": 42}}  # served_at is ignored
    # Events are derived from the same ids (cursor paging): only the ids differ there.
    assert events.rows_old == events.rows_new == 1234
    assert events.ranges == 20
    assert events.keys["missing_on_new"] == [["17"]]
    assert events.keys["missing_on_old"] == [["9999"]]
    assert events.counts["different"] == 0
    assert not run.passed
    assert run.report_ids.keys() == {"things", "events"}
    assert {s["tenant"] for s in seen} == {tenant}


async def test_ids_with_pending_intents_are_unsettled_and_errors_are_named(
    data_env: DataEnv, backends: Any, tenant: str, prefix: str
) -> None:
    old_server, new_server, old, new, _seen = backends
    old[tenant] = {i: {"id": i, "v": 1} for i in range(1, 50)}
    new[tenant] = {i: {"id": i, "v": 1} for i in range(1, 50)}
    new[tenant][7] = {"id": 7, "v": 0}  # its mirrored write is still in the buffer
    settings = _settings(data_env, old_server, new_server, prefix)
    await append_mirrored_put(settings, tenant, "/things/7", orjson.dumps({"id": 7, "v": 1}))
    report = (await run_verify(settings, VerifyOptions(tenant, ("things",), store=False))).tables[0]
    assert report.keys["unsettled"] == [["7"]]
    assert report.counts["different"] == 0

    broken = _settings(data_env, old_server, new_server, prefix, things_path="/broken")
    with pytest.raises(DataError, match="things: the (old|new) side answered 500"):
        await run_verify(broken, VerifyOptions(tenant, store=False))


async def test_repair_names_the_records_it_skipped_and_why(
    data_env: DataEnv, backends: Any, tenant: str, prefix: str
) -> None:
    """A record whose mirrored write is still in the buffer is left to the worker; one that a write
    made equal while verification waited is left alone; both are named, in the JSON and the text."""
    old_server, new_server, old, new, seen = backends
    old[tenant] = {i: {"id": i, "v": 1} for i in range(1, 50)}
    new[tenant] = {i: {"id": i, "v": 0 if i in (7, 8, 9) else 1} for i in range(1, 50)}
    await data_env.set_phase(tenant, Phase.SHADOW)
    settings = _settings(data_env, old_server, new_server, prefix)
    await append_mirrored_put(settings, tenant, "/things/7", orjson.dumps({"id": 7, "v": 1}))
    verify = asyncio.create_task(run_verify(settings, VerifyOptions(tenant, ("things",), repair=True)))
    for _ in range(500):  # both sides listed: verification now waits for record 7's intent
        if sum(s["tenant"] == tenant for s in seen) >= 2:
            break
        await asyncio.sleep(0.01)
    new[tenant][9] = {"id": 9, "v": 1}  # a client's write, mirrored meanwhile
    run = await verify
    things = run.tables[0]
    assert things.repair is not None
    assert things.repair["copied"] == 1
    assert [(s["key"], s["reason"]) for s in things.repair["skipped"]] == [
        (["7"], "pending_intents"),
        (["9"], "changed_during_verify"),
    ]
    assert things.repair["skipped_counts"] == {"pending_intents": 1, "changed_during_verify": 1}
    text = render(run.as_json(), format_table)
    assert "things: not repaired (pending intents): 7: intents for it were still pending" in text, text
    assert "things: not repaired (changed during verify): 9: differed when first compared" in text
    assert new[tenant][8] == old[tenant][8]
    assert new[tenant][7] == {"id": 7, "v": 0}


@dataclass
class Repairable:
    old: RunningServer
    new: RunningServer
    old_records: Records
    new_records: Records
    old_writes: Writes
    new_writes: Writes


@pytest.fixture
async def repairable() -> AsyncIterator[Repairable]:
    records: tuple[Records, Records] = ({}, {})
    writes = (Writes(), Writes())
    servers = [
        await start_server(backend_config(paging_app(data, seen=[], writes=log)))
        for data, log in zip(records, writes, strict=True)
    ]
    yield Repairable(servers[0], servers[1], *records, *writes)
    for server in servers:
        await server.stop()


def _things(count: int) -> dict[int, dict[str, Any]]:
    return {i: {"id": i, "qty": i % 7, "name": f"thing {i}"} for i in range(1, count + 1)}


async def test_repair_in_shadow_transfers_the_differing_records_from_old_to_new(
    data_env: DataEnv, repairable: Repairable, tenant: str, prefix: str
) -> None:
    sides = repairable
    sides.old_records[tenant] = _things(300)
    sides.new_records[tenant] = {i: dict(r) for i, r in _things(300).items()}
    del sides.new_records[tenant][17]
    sides.new_records[tenant][9999] = {"id": 9999, "qty": 1, "name": "extra"}
    sides.new_records[tenant][200]["qty"] = 42
    await data_env.set_phase(tenant, Phase.SHADOW)
    settings = _settings(data_env, sides.old, sides.new, prefix)

    run = await run_verify(settings, VerifyOptions(tenant, ("things",), repair=True))
    things = run.tables[0]
    assert run.passed, things.as_json()
    assert things.repair is not None
    assert things.repair["from"] == "old"
    assert things.repair["keys"] == 3
    assert (things.repair["copied"], things.repair["deleted"], things.repair["failed"]) == (2, 1, 0)
    assert things.repair["before"]["different"] == 1
    assert things.repair["before"]["missing_on_new"] == 1
    assert sides.new_records[tenant] == sides.old_records[tenant] == _things(300)
    assert sides.old_writes.seen == []  # the authoritative side is only read
    assert sorted((m, i, t) for m, i, t, _ in sides.new_writes.seen) == [
        ("DELETE", 9999, tenant),
        ("PUT", 17, tenant),
        ("PUT", 200, tenant),
    ]
    keys = [k for *_, k in sides.new_writes.seen]
    assert all(k.startswith("repair-") for k in keys)
    assert len(set(keys)) == 3
    assert "things: repaired from old: 2 copied, 1 deleted" in render(run.as_json(), format_table)


async def test_repair_in_live_transfers_from_new_to_old_and_counts_what_old_refuses(
    data_env: DataEnv, repairable: Repairable, tenant: str, prefix: str
) -> None:
    sides = repairable
    sides.new_records[tenant] = _things(300)
    sides.old_records[tenant] = {i: dict(r) for i, r in _things(300).items()}
    del sides.old_records[tenant][1]
    sides.old_records[tenant][5000] = {"id": 5000, "qty": 0, "name": "ghost"}
    sides.old_records[tenant][250]["name"] = "renamed on old"
    sides.old_records[tenant][251]["qty"] = -1
    sides.old_writes.refuse.add(251)
    await data_env.set_phase(tenant, Phase.LIVE)
    settings = _settings(data_env, sides.old, sides.new, prefix)

    run = await run_verify(settings, VerifyOptions(tenant, ("things",), repair=True))
    things = run.tables[0]
    assert not run.passed
    assert things.repair is not None
    assert things.repair["from"] == "new"
    assert (things.repair["copied"], things.repair["deleted"], things.repair["failed"]) == (2, 1, 1)
    assert things.keys["different"] == [["251"]]  # the one old refused, found again
    # The record old refused is named with why: the status old answered and what it said.
    [skipped] = things.repair["skipped"]
    assert (skipped["key"], skipped["reason"]) == (["251"], "transfer_failed")
    assert "answered 422 to PUT /things/251" in skipped["detail"]
    assert "read-only" in skipped["detail"]
    assert things.repair["skipped_counts"] == {"transfer_failed": 1}
    text = render(run.as_json(), format_table)
    assert "things: not repaired (transfer failed): 251: old answered 422" in text
    assert sides.new_writes.seen == []
    assert sides.old_records[tenant][1] == _things(300)[1]
    assert 5000 not in sides.old_records[tenant]
    assert sides.old_records[tenant][250]["name"] == "thing 250"

    sides.old_writes.refuse.clear()
    again = await run_verify(settings, VerifyOptions(tenant, ("things",), repair=True))
    assert again.passed
    assert again.tables[0].repair is not None
    assert again.tables[0].repair["copied"] == 1
    assert sides.old_records[tenant] == sides.new_records[tenant] == _things(300)


async def test_a_resource_without_an_item_path_is_not_repaired_and_says_why(
    data_env: DataEnv, repairable: Repairable, tenant: str, prefix: str
) -> None:
    sides = repairable
    sides.new_records[tenant] = _things(100)
    sides.old_records[tenant] = {i: dict(r) for i, r in _things(99).items()}
    await data_env.set_phase(tenant, Phase.LIVE)
    settings = _settings(data_env, sides.old, sides.new, prefix)
    run = await run_verify(settings, VerifyOptions(tenant, ("events",), repair=True, store=False))
    events = run.tables[0]
    assert events.keys["missing_on_old"] == [["100"]]
    assert events.repair is not None
    assert "no item_path configured" in events.repair["refused"]
    assert "events: not repaired from new: no item_path configured" in render(run.as_json(), format_table)
    assert sides.old_writes.seen == []
    assert sides.new_writes.seen == []


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('{"v": 1}', '{"v": true}'),
        ('{"v": 0}', '{"v": false}'),
        ('{"v": 1}', '{"v": 1.0}'),
        ('{"v": 1.0}', '{"v": 1.00}'),
        ('{"v": 0.0}', '{"v": -0.0}'),
        ('{"v": 12.5}', '{"v": -12.5}'),
        ('{"v": {"a": [1, 2.50]}}', '{"v": {"a": [1, 2.5]}}'),
        ('{"v": ""}', '{"v": null}'),
        ('{"v": "null"}', '{"v": null}'),
        ('{"v": "a "}', '{"v": "a"}'),
        ('{"v": null}', "{}"),
    ],
)
def test_records_differ_when_their_json_reads_differently(old: str, new: str) -> None:
    parsed = [json.loads(body, parse_float=Decimal) for body in (old, new)]
    assert compare({"k": parsed[0]}, {"k": parsed[1]}) == {"k": "different"}
    assert compare({"k": parsed[0]}, {"k": json.loads(old, parse_float=Decimal)}) == {}


def test_a_sample_shows_numbers_that_look_alike_as_their_text() -> None:
    a, b = (
        json.loads(body, parse_float=Decimal)
        for body in ('{"v": 1.0, "w": [0.5]}', '{"v": 1.00, "w": [0.50]}')
    )
    assert _sample_values(a["v"], b["v"]) == {"old": "1.0", "new": "1.00"}
    assert _sample_values(a["w"], b["w"]) == {"old": '["0.5"]', "new": '["0.50"]'}
    assert _sample_values(Decimal("1.5"), Decimal("-1.5")) == {"old": 1.5, "new": -1.5}
