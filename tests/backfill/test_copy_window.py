"""The copy window: mirroring runs (dual_write, shadow) while `cutover backfill` copies a REST resource.

A mirrored write that lands between the copy's read of old and its write to new is never undone (the
worker marks the record first, the copy skips it); a mirrored write of a record the copy has claimed
waits for the copy's write and lands on top; mirrored updates and deletes of records new does not hold
yet are settled from old (or found already gone), never dead-lettered, and counted. Each race is also
run against a worker that does not mark, which must lose it: the test exercises what it names.

The worker's marks are taken before a batch whatever applies it, so they hold for the PostgreSQL
applier as for the HTTP one (`test_the_postgresql_applier_is_covered_too`: new is a PostgreSQL-backed
service the copy writes through its API while the PostgreSQL applier writes its rows).
"""

from __future__ import annotations

import asyncio
import random
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from backfill.rest_copy import ResourceRun
from backfill.rest_pages import Page
from backfill.runner import BackfillOptions, BackfillReport, run_backfill
from buffer_worker.copy_marks import read_facts
from buffer_worker.inspect import BufferInspector
from buffer_worker.intent import Intent
from buffer_worker.producer import RedisIntentProducer
from buffer_worker.runner import build_applier
from config.settings import Settings
from routing.phases import Phase, Side
from tests.backfill.conftest import DataEnv
from tests.backfill.rest_sides import (
    JSON_SERVER_ITEMS,
    PARTITIONS,
    REDIS_URL,
    JsonSide,
    RunningWorker,
    json_sides,
    rest_settings,
    start_worker,
)
from tests.support.pg_service import pg_sides
from tests.support.real_json_server import json_server, records


@dataclass
class Buffer:
    """What the proxy does for a client's write in a mirroring phase: the write on old, then its intent."""

    producer: RedisIntentProducer
    inspector: BufferInspector
    prefix: str
    appended: int = 0

    async def write(self, old: JsonSide | Any, tenant: str, method: str, path: str, body: Any = None) -> int:
        response = await old.call(tenant, method, path, body)
        if not 200 <= response.status_code < 300:
            return response.status_code
        location = response.headers.get("location")
        await self.producer.append(
            Intent(
                tenant=tenant,
                target=Side.NEW,
                method=method,
                path=path,
                query="",
                headers=(("content-type", "application/json"),) if body is not None else (),
                body=b"" if body is None else orjson.dumps(body),
                status=response.status_code,
                response_body=response.content,
                response_headers=(("location", location),) if location else (),
            )
        )
        self.appended += 1
        return response.status_code

    async def drained(self, tenant: str, timeout_s: float = 15.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while await self.producer.pending(tenant, Side.NEW):
            assert not await self.inspector.dead_letter_count(tenant), await self.inspector.dead_letters(
                tenant
            )
            assert loop.time() < deadline, "the buffer did not drain"
            await asyncio.sleep(0.02)

    async def facts(self, tenant: str) -> dict[str, int]:
        found = await read_facts(
            self.inspector.client, prefix=self.prefix, partitions=PARTITIONS, copies=[(tenant, "items")]
        )
        return found[(tenant, "items")].counts


@pytest.fixture
async def buffer(prefix: str) -> Any:
    producer = RedisIntentProducer.from_url(REDIS_URL, prefix=prefix, partitions=PARTITIONS)
    inspector = BufferInspector(aioredis.Redis.from_url(REDIS_URL), prefix=prefix, partitions=PARTITIONS)
    yield Buffer(producer, inspector, prefix)
    await producer.close()
    await inspector.close()


def unmarked(running: RunningWorker) -> RunningWorker:
    """The control: a worker that does not mark records for the copy (as before the copy window was
    guarded). Its races must be lost, or the test did not race."""
    running.worker._copy_marks = None  # noqa: SLF001 - the one switch the control needs
    return running


async def _copy_with_writes_after_listing(
    data_env: DataEnv,
    sides: dict[Side, JsonSide],
    buffer: Buffer,
    settings: Settings,
    tenant: str,
    phase: Phase,
    *,
    mark: bool,
) -> BackfillReport:
    """Seed 100 records on old, start the copy; once it has read the first page of old, a client
    changes, replaces and deletes records of that page and the worker applies it to new (which does not
    hold them yet); then the copy writes what it read."""
    old = sides[Side.OLD]
    old.seed(tenant, 100)
    await data_env.set_phase(tenant, phase)
    worker = start_worker(settings)
    if not mark:
        unmarked(worker)

    raced: list[bool] = []

    async def race(stage: str, page: Page) -> None:
        if stage != "listed" or raced:
            return
        raced.append(True)
        assert await buffer.write(old, tenant, "PATCH", "/items/5", {"v": 1}) == 200
        assert await buffer.write(old, tenant, "PUT", "/items/7", {"name": "replaced", "v": 2}) == 200
        assert await buffer.write(old, tenant, "DELETE", "/items/6") == 200
        await buffer.drained(tenant)  # applied to new before the copy writes the page it read

    try:
        return await run_backfill(settings, BackfillOptions(tenant, concurrency=4), hook=race)
    finally:
        await worker.close()


@pytest.mark.parametrize("phase", [Phase.DUAL_WRITE, Phase.SHADOW])
async def test_a_mirrored_write_between_the_copys_read_and_write_is_never_undone(
    data_env: DataEnv, prefix: str, buffer: Buffer, phase: Phase
) -> None:
    tenant = f"win-{uuid.uuid4().hex[:8]}"
    async with json_sides() as sides:
        settings = rest_settings(data_env, sides, prefix)
        report = await _copy_with_writes_after_listing(
            data_env, sides, buffer, settings, tenant, phase, mark=True
        )
        old, new = sides[Side.OLD].records(tenant), sides[Side.NEW].records(tenant)
        assert new["5"] == {"id": 5, "name": "item 5", "v": 1}
        assert new["7"] == {"name": "replaced", "v": 2, "id": 7}
        assert "6" not in new
        assert new == old
        assert len(new) == 99
        run = report.resources[0]
        assert run.items_skipped == 3
        assert run.items_copied == 97
        # New lacked 5 and 7 (PATCH and PUT answered 404): settled from old, not dead-lettered; the
        # delete of 6 found nothing to delete.
        assert await buffer.facts(tenant) == {
            "mirrored": 3,
            "intents": 3,
            "transferred": 2,
            "delete_absent": 1,
        }
        assert not await buffer.inspector.dead_letter_count(tenant)

        # The control: the same race against a worker that does not mark is lost.
        control = f"ctl-{uuid.uuid4().hex[:8]}"
        await _copy_with_writes_after_listing(data_env, sides, buffer, settings, control, phase, mark=False)
        lost = sides[Side.NEW].records(control)
        assert lost["5"]["v"] == 0, "the copy did not race the worker: the test proved nothing"
        assert "6" in lost, "the copy did not race the worker: the test proved nothing"


async def test_a_mirrored_write_of_a_claimed_record_waits_for_the_copy_and_lands_on_top(
    data_env: DataEnv, prefix: str, buffer: Buffer, tenant: str
) -> None:
    async with json_sides() as sides:
        old, new = sides[Side.OLD], sides[Side.NEW]
        old.seed(tenant, 60)
        await data_env.set_phase(tenant, Phase.DUAL_WRITE)
        settings = rest_settings(data_env, sides, prefix)
        worker = start_worker(settings)
        held: list[int] = []

        async def race(stage: str, page: Page) -> None:
            if stage != "claimed" or held:
                return
            # The copy holds its claim on the page and has not written record 3: the mirrored write
            # of 3 must wait for it.
            assert await buffer.write(old, tenant, "PUT", "/items/3", {"v": 9}) == 200
            await asyncio.sleep(0.3)
            held.append(await buffer.producer.pending(tenant, Side.NEW))
            assert "3" not in new.records(tenant)

        try:
            report = await run_backfill(settings, BackfillOptions(tenant), hook=race)
            await buffer.drained(tenant)
        finally:
            await worker.close()
        assert held == [1], "the worker did not wait for the claimed record"
        assert new.records(tenant)["3"] == {"v": 9, "id": 3}
        assert new.records(tenant) == old.records(tenant)
        assert report.resources[0].items_copied == 60
        assert report.resources[0].items_skipped == 0
        # The copy created 3 first (POST), the worker's replayed PUT then found it and replaced it.
        creates = [i for i, (method, path) in enumerate(new.seen) if (method, path) == ("POST", "/items")]
        replay = new.seen.index(("PUT", "/items/3"))
        assert creates
        assert replay > creates[-1]
        assert (await buffer.facts(tenant))["transferred"] == 0  # nothing to settle: it landed on top


async def test_a_copy_killed_with_its_claims_holds_the_worker_only_until_they_lapse(
    data_env: DataEnv, prefix: str, buffer: Buffer, tenant: str
) -> None:
    from buffer_worker.copy_marks import CopyClaims

    async with json_sides() as sides:
        old = sides[Side.OLD]
        old.seed(tenant, 5)
        await data_env.set_phase(tenant, Phase.DUAL_WRITE)
        settings = rest_settings(data_env, sides, prefix)
        dead = CopyClaims(
            buffer.inspector.client,
            prefix=prefix,
            partitions=PARTITIONS,
            tenant=tenant,
            resource="items",
            ttl_s=1.5,
        )
        await dead.open()
        assert (await dead.claim(["2"])).claimed == ["2"]  # ... and the copy is killed here
        worker = start_worker(settings)
        try:
            assert await buffer.write(old, tenant, "PATCH", "/items/2", {"v": 5}) == 200
            await asyncio.sleep(0.5)
            assert await buffer.producer.pending(tenant, Side.NEW) == 1, "the claim did not hold the worker"
            await buffer.drained(tenant, timeout_s=10)
        finally:
            await worker.close()
        assert sides[Side.NEW].records(tenant)["2"] == {"id": 2, "name": "item 2", "v": 5}


@dataclass
class Writer:
    """A client writing its own records (ids ≡ number mod WRITERS) through the buffer, one at a time."""

    number: int
    tenant: str
    live: set[int]
    done: list[str] = field(default_factory=list)

    async def run(self, old: JsonSide, buffer: Buffer, stop: asyncio.Event) -> None:
        rng = random.Random(self.number)
        mine = [n for n in range(1, 241) if n % WRITERS == self.number]
        while not stop.is_set():
            key = rng.choice(mine)
            roll = rng.random()
            if key not in self.live:
                status = await buffer.write(
                    old, self.tenant, "POST", "/items", {"id": key, "v": rng.random()}
                )
                self.live.add(key)
            elif roll < 0.4:
                status = await buffer.write(old, self.tenant, "PATCH", f"/items/{key}", {"v": rng.random()})
            elif roll < 0.7:
                status = await buffer.write(old, self.tenant, "PUT", f"/items/{key}", {"w": rng.random()})
            else:
                status = await buffer.write(old, self.tenant, "DELETE", f"/items/{key}")
                self.live.discard(key)
            assert 200 <= status < 300, status
            self.done.append(str(key))
            await asyncio.sleep(0.002)


WRITERS = 4
SEEDED = 200  # records of old before the copy; writers write ids 1-240 (re-creating deleted ones)


async def copy_under_writers(
    settings: Settings, old: JsonSide, buffer: Buffer, tenant: str
) -> tuple[ResourceRun, list[Writer]]:
    """Copy the tenant's records (10 a page) while `WRITERS` clients update, create and delete through
    the buffer, mirroring since before the copy began; then stop the writers and drain."""
    worker = start_worker(settings)
    stop = asyncio.Event()
    writers = [
        Writer(n, tenant, {k for k in range(1, SEEDED + 1) if k % WRITERS == n}) for n in range(WRITERS)
    ]
    tasks = [asyncio.create_task(w.run(old, buffer, stop)) for w in writers]
    try:
        await asyncio.sleep(0.2)  # mirroring before the copy, as the runbook orders it
        report = await run_backfill(settings, BackfillOptions(tenant, rows_per_s=400, concurrency=4))
        stop.set()
        await asyncio.gather(*tasks)
        await buffer.drained(tenant)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await worker.close()
    run = report.resources[0]
    assert (await buffer.facts(tenant))["mirrored"], "nothing raced the copy: the test proved nothing"
    # Deletes moved records across page boundaries the copy had passed: the checks read back.
    assert run.pages_again, "no delete moved a record onto a page read already: the test proved nothing"
    assert sum(len(w.done) for w in writers) > 40  # some 100-300 on this machine, fewer when loaded
    assert not await buffer.inspector.dead_letter_count(tenant)
    return run, writers


async def test_writers_racing_the_copy_leave_old_and_new_equal(
    data_env: DataEnv, prefix: str, buffer: Buffer, tenant: str
) -> None:
    async with json_sides() as sides:
        old, new = sides[Side.OLD], sides[Side.NEW]
        old.seed(tenant, SEEDED)
        await data_env.set_phase(tenant, Phase.DUAL_WRITE)
        settings = rest_settings(data_env, sides, prefix, resources=[{**JSON_SERVER_ITEMS, "page_size": 10}])
        run, _writers = await copy_under_writers(settings, old, buffer, tenant)
        assert new.records(tenant) == old.records(tenant)
        assert run.items_skipped, "nothing raced the copy: the test proved nothing"


async def test_writers_racing_the_copy_between_two_real_json_servers_leave_them_equal(
    data_env: DataEnv, prefix: str, buffer: Buffer, tenant: str, tmp_path: Path
) -> None:
    """The same race between json-server 0.17 processes: its PUT does not create (the copy and the
    settling worker create by POST with the id), its list is a bare array paged by `_page`/`_limit` with
    `Link` headers, and the one-record reads of the boundary checks are `_page=N&_limit=1`."""
    seeded = [{"id": n, "name": f"item {n}", "v": 0} for n in range(1, SEEDED + 1)]
    async with json_server(tmp_path, seeded) as old_url, json_server(tmp_path, []) as new_url:
        old, new = JsonSide(old_url), JsonSide(new_url)
        await data_env.set_phase(tenant, Phase.DUAL_WRITE)
        items = {**JSON_SERVER_ITEMS, "page_size": 10}
        settings = rest_settings(data_env, {Side.OLD: old, Side.NEW: new}, prefix, resources=[items])
        await copy_under_writers(settings, old, buffer, tenant)
        assert await records(new_url) == await records(old_url)


# -- the PostgreSQL applier ------------------------------------------------------------------------------
async def test_the_postgresql_applier_is_covered_too(data_env: DataEnv, prefix: str, buffer: Buffer) -> None:
    """New is a PostgreSQL-backed service: the copy writes through its API (PUT upserts), the
    PostgreSQL applier writes its rows (state transfer from old, read over HTTP). A mirrored write
    between the copy's read and its write is kept; against a worker that does not mark, it is lost."""
    async with json_sides() as sides, pg_sides() as pg:
        results: dict[bool, dict[str, Any]] = {}
        for mark in (True, False):
            tenant = f"pg-{uuid.uuid4().hex[:8]}"
            old = sides[Side.OLD]
            for n in range(1, 31):
                old.store.setdefault(tenant, {})[f"k{n}"] = {"id": f"k{n}", "v": 0}
            await data_env.set_phase(tenant, Phase.DUAL_WRITE)
            resources = [{**JSON_SERVER_ITEMS, "create": "put"}]
            settings = rest_settings(
                data_env,
                {Side.OLD: old, Side.NEW: JsonSide(pg[Side.NEW].base_url)},
                prefix,
                resources=resources,
                worker={
                    "lease_ttl_s": 1,
                    "block_ms": 50,
                    "retry_initial_s": 0.01,
                    "retry_max_s": 0.05,
                    "applier": {"new": "postgres", "old": "http"},
                    "postgres": {
                        "new": {
                            "url": pg[Side.NEW].url,
                            "resources": [{"path": "/items/{key}", "table": "items"}],
                        }
                    },
                },
            )
            worker = start_worker(settings, build_applier(settings))
            if not mark:
                unmarked(worker)

            raced: list[bool] = []

            async def race(
                stage: str, page: Page, tenant: str = tenant, old: JsonSide = old, raced: list[bool] = raced
            ) -> None:
                if stage == "listed" and not raced:
                    raced.append(True)
                    assert await buffer.write(old, tenant, "PATCH", "/items/k4", {"v": 4}) == 200
                    await buffer.drained(tenant)

            try:
                await run_backfill(settings, BackfillOptions(tenant), hook=race)
            finally:
                await worker.close()
            results[mark] = (await pg[Side.NEW].rows(tenant))["items"]
        assert results[True]["k4"]["v"] == 4
        assert results[False]["k4"]["v"] == 0, "the copy did not race the applier: the test proved nothing"


@pytest.mark.parametrize("guard", ["boundary check", "sweep", "none"])
async def test_a_record_a_delete_moves_across_a_page_boundary_is_still_copied(
    data_env: DataEnv, prefix: str, buffer: Buffer, guard: str
) -> None:
    """json-server pages by position: a record deleted on page 1 after the copy read it moves every
    later record one place forward, so the first record of the next page not listed yet lands on the
    page before, which was listed already. The boundary check sees that the record listed last is no
    longer where the next page begins and reads page 1 again; a sweep lists the whole collection again;
    without either, the record is missing on new (the control)."""
    tenant = f"shift-{uuid.uuid4().hex[:8]}"
    async with json_sides() as sides:
        old, new = sides[Side.OLD], sides[Side.NEW]
        old.seed(tenant, 120)
        await data_env.set_phase(tenant, Phase.DUAL_WRITE)
        items = {
            **JSON_SERVER_ITEMS,
            "check_boundaries": guard == "boundary check",
            "sweep": guard == "sweep",
        }
        settings = rest_settings(data_env, sides, prefix, resources=[items])
        worker = start_worker(settings)
        raced: list[bool] = []

        async def race(stage: str, page: Page) -> None:
            if stage == "claimed" and not raced:
                raced.append(True)
                assert await buffer.write(old, tenant, "DELETE", "/items/2") == 200

        try:
            report = await run_backfill(settings, BackfillOptions(tenant), hook=race)
            await buffer.drained(tenant)
        finally:
            await worker.close()
        run = report.resources[0]
        if guard == "none":
            missing = old.records(tenant).keys() - new.records(tenant).keys()
            assert len(missing) == 1, "the delete moved nothing: the test proved nothing"
            return
        assert new.records(tenant) == old.records(tenant)
        assert len(old.records(tenant)) == 119
        # Each record written once: the 119 and the one deleted after it was copied.
        assert run.items_copied == 120
        if guard == "sweep":
            # One sweep found it; nothing was mirrored while it ran, so nothing moved: the copy is done.
            assert (run.sweeps, run.items_swept, run.pages_again) == (1, 1, 0)
        else:
            assert (run.sweeps, run.pages_again) == (0, 1)


async def test_a_sweep_waits_for_the_worker_to_apply_what_the_pass_buffered(
    data_env: DataEnv, prefix: str, buffer: Buffer
) -> None:
    """The worker counts a mirrored write when it applies it, not when it lands on old: a delete that
    moved a record across a boundary, still in the buffer when the pass ends, must still bring a sweep.
    Here the worker starts only after the pass has ended (a worker some batches behind)."""
    tenant = f"lag-{uuid.uuid4().hex[:8]}"
    async with json_sides() as sides:
        old, new = sides[Side.OLD], sides[Side.NEW]
        old.seed(tenant, 120)
        await data_env.set_phase(tenant, Phase.DUAL_WRITE)
        items = {**JSON_SERVER_ITEMS, "check_boundaries": False, "sweep": True}
        settings = rest_settings(data_env, sides, prefix, resources=[items])
        workers: list[RunningWorker] = []
        raced: list[bool] = []

        async def race(stage: str, page: Page) -> None:
            if stage == "claimed" and not raced:
                raced.append(True)
                assert await buffer.write(old, tenant, "DELETE", "/items/2") == 200
                # The worker comes once the copy has listed its last page.
                asyncio.get_running_loop().call_later(0.5, lambda: workers.append(start_worker(settings)))

        try:
            report = await run_backfill(settings, BackfillOptions(tenant), hook=race)
            await buffer.drained(tenant)
        finally:
            for worker in workers:
                await worker.close()
        assert workers, "the race never ran"
        assert new.records(tenant) == old.records(tenant)
        assert report.resources[0].sweeps == 1


def patch_creates_app(store: dict[str, dict[str, Any]]) -> Any:
    """A new side whose PATCH creates a record it lacks from the patch alone (as some services' merge
    does), whose PUT upserts, and whose list is a bare array."""
    from aiohttp import web

    async def listing(request: web.Request) -> web.Response:
        return web.json_response(list(store.values()))

    async def show(request: web.Request) -> web.Response:
        record = store.get(request.match_info["id"])
        return web.json_response({}, status=404) if record is None else web.json_response(record)

    async def write(request: web.Request) -> web.Response:
        key = request.match_info["id"]
        body = await request.json()
        merged = {**store.get(key, {}), **body} if request.method == "PATCH" else body
        store[key] = merged
        return web.json_response(merged)

    app = web.Application()
    app.router.add_get("/items", listing)
    app.router.add_get("/items/{id}", show)
    app.router.add_put("/items/{id}", write)
    app.router.add_patch("/items/{id}", write)
    return app


async def test_the_first_mirrored_write_of_a_record_not_copied_yet_is_settled_not_replayed(
    data_env: DataEnv, prefix: str, buffer: Buffer, tenant: str
) -> None:
    """New's PATCH creates what it lacks: replayed, a PATCH of a record the copy has not written yet
    would leave new a partial record, which the copy then skips as mirroring's. The worker settles the
    first intent of such a record from old instead (the whole record)."""
    from aiohttp import web

    store: dict[str, dict[str, Any]] = {}
    runner = web.AppRunner(patch_creates_app(store), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        async with json_sides() as sides:
            old = sides[Side.OLD]
            old.seed(tenant, 60)
            await data_env.set_phase(tenant, Phase.DUAL_WRITE)
            new = JsonSide(f"http://127.0.0.1:{runner.addresses[0][1]}")
            resources = [{"name": "items", "list_path": "/items", "page_size": 1000}]
            settings = rest_settings(data_env, {Side.OLD: old, Side.NEW: new}, prefix, resources=resources)
            worker = start_worker(settings)
            raced: list[bool] = []

            async def race(stage: str, page: Page) -> None:
                if stage == "listed" and not raced:
                    raced.append(True)
                    assert await buffer.write(old, tenant, "PATCH", "/items/5", {"v": 1}) == 200
                    await buffer.drained(tenant)

            try:
                report = await run_backfill(settings, BackfillOptions(tenant), hook=race)
            finally:
                await worker.close()
            assert raced
            assert report.resources[0].items_skipped == 1
            assert store["5"] == {"id": 5, "name": "item 5", "v": 1}  # not {"v": 1}
            assert (await buffer.facts(tenant))["transferred"] == 1
    finally:
        await runner.cleanup()
