"""A tenant walked through every phase with REST and SQL writes in each: every intent is applied to the side
it names, whichever applier runs it, so old and new hold the same rows after the buffer drains.

Old and new are each a PostgreSQL database behind a small data service (`tests.support.pg_service`); a worker
runs in-process with the applier under test: PostgreSQL toward both sides (each reading the other's
database for state transfer), HTTP toward both, or PostgreSQL toward new and HTTP toward old (as when
old's database is not PostgreSQL; new's applier then reads old's rows over HTTP).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
import pytest

from buffer_worker.runner import build_applier
from buffer_worker.worker import Worker
from routing.phases import Phase, Side
from tests.support.pg_service import PgDataService, pg_sides
from tests.support.postgres import SessionDatabases
from tests.support.proxies import Proxy, ProxyFactory

pytestmark = pytest.mark.slow

OLD, NEW = Side.OLD, Side.NEW
RESOURCES = [{"path": "/items/{key}", "table": "items"}]
FAST_WORKER = {
    "lease_ttl_s": 1,
    "block_ms": 50,
    "retry_initial_s": 0.01,
    "retry_max_s": 0.1,
    "max_attempts": 3,
}


@pytest.fixture(scope="module")
async def sides(session_databases: SessionDatabases) -> AsyncIterator[dict[Side, PgDataService]]:
    async with pg_sides(databases=session_databases) as services:
        yield services


def worker_settings(appliers: str, sides: dict[Side, PgDataService]) -> dict[str, Any]:
    postgres = {side.value: {"url": sides[side].url, "resources": RESOURCES} for side in Side}
    if appliers == "http":
        return {**FAST_WORKER, "applier": "http"}
    if appliers == "postgres":
        return {**FAST_WORKER, "applier": "postgres", "postgres": postgres}
    # PostgreSQL toward new, HTTP toward old, as when old's database is MariaDB: no worker.postgres.old,
    # so state transfer toward new reads old's rows over HTTP.
    return {
        **FAST_WORKER,
        "applier": {"new": "postgres", "old": "http"},
        "postgres": {"new": postgres["new"]},
    }


async def proxy_for(
    make_proxy: ProxyFactory, sides: dict[Side, PgDataService], worker: dict[str, Any]
) -> Proxy:
    return await make_proxy(
        {
            "backends": {
                side.value: {"url": sides[side].base_url, "sql_dialect": "postgres"} for side in Side
            },
            "sql": {"endpoints": [{"path": "/query"}], "covered_tables": ["orders"]},
            "worker": worker,
        }
    )


async def write_round(proxy: Proxy, tenant: str, tag: str, previous: str | None) -> None:
    """REST (PUT, PATCH, POST, DELETE) and SQL writes (insert, increment, delete), some of keys written in
    earlier phases; every one must be acknowledged."""
    headers = {"X-Tenant-ID": tenant}
    client = proxy.client
    responses = [
        await client.put(f"/items/{tag}-a", json={"v": 1, "phase": tag}, headers=headers),
        await client.patch(f"/items/{tag}-a", json={"w": 2}, headers=headers),
        await client.post("/items", json={"name": f"created in {tag}"}, headers=headers),
        await client.put(f"/items/{tag}-b", json={"v": 1}, headers=headers),
        await client.delete(f"/items/{tag}-b", headers=headers),
        await client.patch("/items/shared", json={tag: True, "last": tag}, headers=headers),
    ]
    if previous is not None:
        responses.append(await client.delete(f"/items/{previous}-a", headers=headers))
    statements: list[tuple[str, list[Any]]] = [
        ("INSERT INTO orders (tenant_id, id, total) VALUES ($1, $2, 10)", [tenant, tag]),
        (
            "INSERT INTO orders (tenant_id, id, total) VALUES ($1, 'shared', 1)"
            " ON CONFLICT (tenant_id, id) DO UPDATE SET total = orders.total + 5",
            [tenant],
        ),
        ("UPDATE orders SET total = total * 2 WHERE tenant_id = $1 AND id = $2", [tenant, tag]),
    ]
    if previous is not None:
        statements.append(("DELETE FROM orders WHERE tenant_id = $1 AND id = $2", [tenant, previous]))
    for sql, params in statements:
        responses.append(await client.post("/query", json={"sql": sql, "params": params}, headers=headers))
    failed = [
        (r.request.method, r.request.url.path, r.status_code, r.text)
        for r in responses
        if r.status_code >= 300
    ]
    assert not failed, failed


async def drained(proxy: Proxy, tenant: str, phase: Phase, timeout_s: float = 15.0) -> None:
    """Every intent of `tenant` applied; none dead-lettered (that fails at once, naming it)."""
    inspector = proxy.runtime.inspector
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while any([await inspector.pending(tenant, side) for side in Side]):
        if await inspector.dead_letter_count(tenant):
            dead = await inspector.dead_letters(tenant, limit=3)
            raise AssertionError(f"intents dead-lettered in {phase.value}: {[d['reason'] for d in dead]}")
        assert loop.time() < deadline, f"the buffer did not drain in {phase.value}"
        await asyncio.sleep(0.02)


async def copy_rows(source: PgDataService, target: PgDataService, tenant: str) -> None:
    """What `cutover backfill` does before mirroring starts: the tenant's rows, copied old → new."""
    rows = await source.rows(tenant)
    conn = await asyncpg.connect(target.url)
    try:
        for item_id, doc in rows["items"].items():
            await conn.execute("INSERT INTO items VALUES ($1, $2, $3::jsonb)", tenant, item_id, _json(doc))
        for order_id, total in rows["orders"].items():
            await conn.execute("INSERT INTO orders VALUES ($1, $2, $3)", tenant, order_id, total)
    finally:
        await conn.close()


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


@pytest.mark.parametrize("appliers", ["postgres", "http", "mixed"])
async def test_a_tenant_walked_to_complete_keeps_old_and_new_equal_at_every_step(
    make_proxy: ProxyFactory, sides: dict[Side, PgDataService], appliers: str
) -> None:
    proxy = await proxy_for(make_proxy, sides, worker_settings(appliers, sides))
    settings = proxy.runtime.settings
    tenant = f"walk-{uuid.uuid4().hex[:8]}"
    stop = asyncio.Event()
    worker = asyncio.create_task(Worker(settings, build_applier(settings)).run(stop))
    previous: str | None = None
    try:
        for phase in Phase:
            if phase is not Phase.LEGACY:
                await proxy.set_phase_api(tenant, phase, reason=f"walk to {phase.value}")
            before = await sides[OLD].rows(tenant)
            await write_round(proxy, tenant, phase.value, previous)
            previous = phase.value
            await drained(proxy, tenant, phase)
            old, new = await sides[OLD].rows(tenant), await sides[NEW].rows(tenant)
            if phase is Phase.LEGACY:
                assert new == {"items": {}, "orders": {}}, "a legacy write reached new"
                await copy_rows(sides[OLD], sides[NEW], tenant)
                new = await sides[NEW].rows(tenant)
            if phase is Phase.COMPLETE:
                assert old == before, "a write in complete reached old"
                assert new != old, "the writes in complete changed nothing on new: the test proved nothing"
                continue
            assert new == old, f"old and new differ after the drain in {phase.value}"
            assert len(old["items"]) >= 3, "nothing was written"
            assert "shared" in old["orders"], "nothing was written"
    finally:
        stop.set()
        await worker
