"""`cutover backfill` of REST resources: every record of the tenant reaches new in the resource's create
style (PUT upsert, POST with the id, a request of its own) with its numbers as old wrote them; a run
SIGKILLed at any point resumes from its checkpoint with no record written twice into the count and none
missing; the throttle, the dry run, the phase rules, reruns and restarts."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import yaml
from aiohttp import web

from backfill import rest_checkpoint
from backfill.errors import DataError, PhaseRefusedError
from backfill.rest_pages import Page
from backfill.runner import BackfillOptions, run_backfill, selected
from config.settings import Settings
from routing.phases import Phase, Side
from tests.backfill.conftest import DataEnv
from tests.backfill.rest_sides import JsonSide, json_sides, rest_raw, rest_settings
from tests.support.servers import free_port


def raw_app(store: dict[str, dict[str, bytes]], seen: list[tuple[str, str]]) -> web.Application:
    """A backend that keeps each record's body as sent (to see numbers arrive verbatim) and whose PUT
    upserts, at /items/{id} and at /v2/items/{id}; GET /items is a bare array of every record."""

    async def listing(request: web.Request) -> web.Response:
        records = store.get(request.headers["X-Tenant-ID"], {})
        return web.Response(body=b"[" + b",".join(records.values()) + b"]", content_type="application/json")

    async def put(request: web.Request) -> web.Response:
        seen.append((request.method, request.raw_path))
        store.setdefault(request.headers["X-Tenant-ID"], {})[request.match_info["id"]] = await request.read()
        return web.json_response({}, status=200)

    app = web.Application()
    app.router.add_get("/items", listing)
    app.router.add_put("/items/{id}", put)
    app.router.add_put("/v2/items/{id}", put)
    return app


RAW_RECORDS = {
    "1": b'{"id": 1, "price": 1.50, "neg": -0.0, "exp": 1e5}',
    "a b": b'{"id": "a b", "big": 123456789012345678901234567890, "nested": {"x": [1.0, 2.00]}}',
}


@pytest.mark.parametrize(
    ("create", "writes"),
    [
        pytest.param("put", [("PUT", "/items/1"), ("PUT", "/items/a%20b")], id="put-upsert"),
        pytest.param(
            {"method": "PUT", "path": "/v2/items/{key}"},
            [("PUT", "/v2/items/1"), ("PUT", "/v2/items/a%20b")],
            id="a-request-of-its-own",
        ),
    ],
)
async def test_put_styles_write_each_record_with_its_numbers_as_old_wrote_them(
    data_env: DataEnv, prefix: str, tenant: str, create: Any, writes: list[tuple[str, str]]
) -> None:
    stores: list[dict[str, dict[str, bytes]]] = [{tenant: dict(RAW_RECORDS)}, {}]
    seen: list[tuple[str, str]] = []
    runners = []
    try:
        urls = {}
        for side, store in zip(Side, stores, strict=True):
            runner = web.AppRunner(raw_app(store, seen if side is Side.NEW else []), access_log=None)
            await runner.setup()
            runners.append(runner)
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            urls[side] = f"http://127.0.0.1:{runner.addresses[0][1]}"
        await data_env.set_phase(tenant, Phase.DUAL_WRITE)
        resource = {"name": "items", "list_path": "/items", "create": create}
        settings = rest_settings(
            data_env, {side: JsonSide(url) for side, url in urls.items()}, prefix, resources=[resource]
        )
        report = await run_backfill(settings, BackfillOptions(tenant))
    finally:
        for runner in runners:
            await runner.cleanup()
    assert sorted(seen) == writes
    assert report.resources[0].items_copied == 2
    assert report.resources[0].done
    new = stores[1][tenant]
    assert new["1"] == b'{"id":1,"price":1.50,"neg":-0.0,"exp":1e5}'  # not 1.5, 0.0, 100000.0
    assert b"123456789012345678901234567890" in new["a b"]
    assert b"[1.0,2.00]" in new["a b"]


async def test_json_server_gets_a_post_with_the_id_and_pages_follow_its_links(
    data_env: DataEnv, prefix: str, tenant: str
) -> None:
    async with json_sides() as sides:
        old, new = sides[Side.OLD], sides[Side.NEW]
        old.seed(tenant, 130)
        old.store[tenant]["x"] = {"name": "no id"}  # listed, counted, not copied
        old.seed(f"{tenant}-bystander", 5)
        await data_env.set_phase(tenant, Phase.SHADOW)
        settings = rest_settings(data_env, sides, prefix)
        report = await run_backfill(settings, BackfillOptions(tenant))
        assert new.records(tenant) == {k: v for k, v in old.records(tenant).items() if k != "x"}
        assert f"{tenant}-bystander" not in new.store
        assert {method for method, _ in new.writes()} == {"POST"}
        assert len(new.writes()) == 130
        run = report.resources[0]
        assert (run.run, run.items_listed, run.items_copied) == ("new", 131, 130)
        # Nothing was mirrored while it paged, so nothing can have moved across a page: no sweep.
        assert (run.pages, run.sweeps, run.items_swept) == (3, 0, 0)
        assert run.items_without_id == 1
        assert run.total == 131
        assert run.total_items_copied == 130
        assert report.as_json()["resources"][0]["items_skipped"] == 0

        # Done: a rerun copies nothing; --restart copies again, replacing what is there (POST, then PUT).
        again = await run_backfill(settings, BackfillOptions(tenant))
        assert again.resources[0].run == "done"
        assert again.resources[0].items_copied == 0
        new.seen.clear()
        restarted = await run_backfill(settings, BackfillOptions(tenant, restart=True, concurrency=3))
        assert restarted.resources[0].run == "new"
        assert restarted.resources[0].items_replaced == 130
        assert sorted({method for method, _ in new.writes()}) == ["POST", "PUT"]
        assert new.records(tenant) == {k: v for k, v in old.records(tenant).items() if k != "x"}


async def test_dry_run_lists_and_writes_nothing(data_env: DataEnv, prefix: str, tenant: str) -> None:
    async with json_sides() as sides:
        old, new = sides[Side.OLD], sides[Side.NEW]
        old.seed(tenant, 75)
        settings = rest_settings(data_env, sides, prefix)
        # In any phase (here: legacy, where a real run is refused).
        report = await run_backfill(settings, BackfillOptions(tenant, dry_run=True))
        assert report.dry_run
        assert report.phase == "legacy"
        run = report.resources[0]
        assert (run.run, run.pages, run.items_listed, run.items_copied, run.total) == (
            "dry run",
            2,
            75,
            0,
            75,
        )
        assert new.seen == []
        assert new.store == {}
        conn = await asyncpg.connect(data_env.control_url)
        try:
            assert await rest_checkpoint.load(conn, tenant, "items") is None  # no checkpoint either
        finally:
            await conn.close()
        with pytest.raises(PhaseRefusedError, match="legacy"):
            await run_backfill(settings, BackfillOptions(tenant))


async def test_throttle_spaces_the_writes(data_env: DataEnv, prefix: str, tenant: str) -> None:
    async with json_sides() as sides:
        sides[Side.OLD].seed(tenant, 30)
        await data_env.set_phase(tenant, Phase.DUAL_WRITE)
        settings = rest_settings(data_env, sides, prefix)
        started = time.monotonic()
        report = await run_backfill(settings, BackfillOptions(tenant, rows_per_s=50, concurrency=8))
        elapsed = time.monotonic() - started
        assert report.resources[0].items_copied == 30
        # 30 writes at 50/s take at least 29/50 s, however many are in flight (a lower bound only:
        # a busy machine makes it slower, never faster).
        assert elapsed >= 0.9 * 29 / 50
        unthrottled = await run_backfill(settings, BackfillOptions(tenant, restart=True))
        assert unthrottled.resources[0].items_copied == 30


async def test_a_tenant_moved_out_of_shadow_stops_the_copy(
    data_env: DataEnv, prefix: str, tenant: str
) -> None:
    async with json_sides() as sides:
        sides[Side.OLD].seed(tenant, 200)
        await data_env.set_phase(tenant, Phase.SHADOW)
        settings = rest_settings(data_env, sides, prefix)

        async def move_on(stage: str, page: Page) -> None:
            if stage == "claimed":
                await data_env.set_phase(tenant, Phase.LIVE)

        with pytest.raises(PhaseRefusedError, match="live"):
            await run_backfill(settings, BackfillOptions(tenant), hook=move_on)
        # Stopped before the third page: the phase is read again before each page is claimed.
        assert len(sides[Side.NEW].records(tenant)) <= 100


def test_tables_and_resources_are_selected_by_name_or_all_of_them(data_env: DataEnv) -> None:
    raw = data_env.raw_settings(
        [{"name": "orders", "old": {"table": "o"}, "new": {"table": "n"}}],
        rest={"resources": [{"name": "items", "list_path": "/items"}, {"name": "users", "list_path": "/u"}]},
    )
    settings = Settings.model_validate(raw)

    def names(**options: Any) -> tuple[list[str], list[str]]:
        tables, resources = selected(settings, BackfillOptions("t", **options))
        return [t.name for t in tables], [r.name for r in resources]

    assert names() == (["orders"], ["items", "users"])
    assert names(tables=("orders",)) == (["orders"], [])
    assert names(resources=("users",)) == ([], ["users"])
    assert names(tables=("orders",), resources=("items",)) == (["orders"], ["items"])


async def test_names_are_checked(data_env: DataEnv, prefix: str, tenant: str) -> None:
    async with json_sides() as sides:
        settings = rest_settings(data_env, sides, prefix)
        with pytest.raises(DataError, match="no resource 'orders' in data.rest.resources"):
            await run_backfill(settings, BackfillOptions(tenant, resources=("orders",)))
        with pytest.raises(DataError, match="no tables to copy"):
            await run_backfill(settings, BackfillOptions(tenant, tables=("orders",)))


# -- resume after SIGKILL, through the command line ------------------------------------------------------
RECORDS = 1200


def _cli_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CUTOVER_")}


@pytest.fixture
async def json_processes() -> AsyncIterator[dict[Side, str]]:
    """Old and new as json-server-like subprocesses."""
    ports = {side: free_port() for side in Side}
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.support.jsonlike_server", str(ports[side])
        )
        for side in Side
    ]
    urls = {side: f"http://127.0.0.1:{ports[side]}" for side in Side}
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            for url in urls.values():
                for _ in range(200):
                    try:
                        await client.get(f"{url}/items")
                        break
                    except httpx.TransportError:
                        await asyncio.sleep(0.02)
        yield urls
    finally:
        for process in processes:
            process.terminate()
            await process.wait()


async def _copied(control_url: str, tenant: str) -> int:
    conn = await asyncpg.connect(control_url)
    try:
        state = await rest_checkpoint.load(conn, tenant, "items")
    finally:
        await conn.close()
    return 0 if state is None else state.items_copied


@pytest.mark.fault
async def test_interrupted_then_sigkilled_then_resumed_copies_every_record_once(
    data_env: DataEnv, prefix: str, tenant: str, json_processes: dict[Side, str], tmp_path: Path
) -> None:
    async with httpx.AsyncClient(base_url=json_processes[Side.OLD], headers={"X-Tenant-ID": tenant}) as old:
        gate = asyncio.Semaphore(16)

        async def create(n: int) -> None:
            async with gate:
                assert (await old.post("/items", json={"id": n, "v": n * 1.5})).status_code == 201

        await asyncio.gather(*(create(n) for n in range(1, RECORDS + 1)))
    await data_env.set_phase(tenant, Phase.DUAL_WRITE)
    sides = {side: JsonSide(url) for side, url in json_processes.items()}
    config = tmp_path / "cutover.yaml"
    # Claims of a killed run hold until they lapse: the resumed run waits for them at most this long.
    raw = rest_raw(data_env, sides, prefix, data={"rest": {"copy": {"claim_ttl_s": 1}}})
    config.write_text(yaml.safe_dump(raw))
    command = [
        sys.executable,
        "-m",
        "proxy.cli.main",
        "backfill",
        "--config",
        str(config),
        "--tenant",
        tenant,
    ]
    command += ["--rows-per-s", "1500", "--parallel", "4"]
    previous = 0
    for threshold, stop in ((250, signal.SIGINT), (700, signal.SIGKILL)):
        process = await asyncio.create_subprocess_exec(
            *command, env=_cli_env(), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        while (copied := await _copied(data_env.control_url, tenant)) < threshold:
            assert process.returncode is None, "the copy finished before it could be stopped"
            await asyncio.sleep(0.01)
        process.send_signal(stop)
        await process.wait()
        assert process.returncode == (130 if stop == signal.SIGINT else -signal.SIGKILL)
        copied = await _copied(data_env.control_url, tenant)
        assert copied > previous
        previous = copied
    process = await asyncio.create_subprocess_exec(
        *command, "--json", env=_cli_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    report = json.loads(out)
    assert report["resources"][0]["run"] == "resumed"
    assert report["resources"][0]["done"]
    # Each page's checkpoint commits after its writes: the counts add up to every record, once.
    assert report["resources"][0]["total_items_copied"] == RECORDS
    assert await _copied(data_env.control_url, tenant) == RECORDS
    async with httpx.AsyncClient(headers={"X-Tenant-ID": tenant}) as client:
        old_records = (await client.get(f"{json_processes[Side.OLD]}/items")).json()
        new_records = (await client.get(f"{json_processes[Side.NEW]}/items")).json()
    new_ids = [r["id"] for r in new_records]
    assert len(new_ids) == len(set(new_ids)) == RECORDS  # none twice, none missing
    assert sorted(new_records, key=lambda r: r["id"]) == sorted(old_records, key=lambda r: r["id"])
