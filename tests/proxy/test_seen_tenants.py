"""Tenants seen in traffic: only those a backend served with a 2xx are recorded, and what is kept is
bounded in memory, in the table and in time."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from config.operator import SeenTenantSettings
from proxy.cli.main import main
from proxy.control.seen_tenants import SeenTenants
from tests.support.proxies import Proxy, ProxyFactory, raw_request
from tests.support.waits import wait_for


@pytest.fixture
async def fast_flush_proxy(make_proxy: ProxyFactory) -> Proxy:
    return await make_proxy({"operator": {"seen_tenants": {"flush_interval_s": 0.05}}})


async def seen_rows(proxy: Proxy, prefix: str) -> set[str]:
    try:
        rows = await proxy.runtime.pool.fetch(
            "SELECT tenant FROM cutover_seen_tenant WHERE starts_with(tenant, $1)", prefix
        )
    except asyncpg.UndefinedTableError:  # nothing flushed yet in this database
        return set()
    return {row["tenant"] for row in rows}


async def test_made_up_tenants_that_never_get_a_2xx_leave_no_rows(
    fast_flush_proxy: Proxy, capsys: pytest.CaptureFixture[str]
) -> None:
    proxy = fast_flush_proxy
    prefix = f"mu{uuid.uuid4().hex[:8]}"
    made_up = [f"{prefix}-fake-{n}" for n in range(40)]
    for tenant in made_up[:30]:  # the backend does not know the item: 404
        response = await proxy.client.get(f"/items/{uuid.uuid4().hex}", headers={"X-Tenant-ID": tenant})
        assert response.status_code == 404
    for tenant in made_up[30:]:  # refused by the proxy before any backend: 400
        request = f"GET /a/../b HTTP/1.1\r\nHost: x\r\nX-Tenant-ID: {tenant}\r\nConnection: close\r\n\r\n"
        status, _, _ = await raw_request(proxy.port, request.encode())
        assert status == 400
    real = f"{prefix}-real"
    assert (await proxy.client.get("/items", headers={"X-Tenant-ID": real})).status_code == 200

    async def real_recorded() -> bool:
        return real in await seen_rows(proxy, prefix)

    await wait_for(real_recorded, timeout_s=5)  # flushed after every made-up request was answered
    assert await seen_rows(proxy, prefix) == {real}
    listed = (await proxy.admin.get("/tenants", params={"limit": 5000})).json()
    known = {row["tenant"] for row in listed["tenants"] + listed["seen_in_traffic"]}
    assert real in known
    assert known.isdisjoint(made_up)

    base = ["--admin-url", proxy.admin_server.url, "--token", proxy.tokens.write]
    argv = ["phase", "set", *base, "--match", f"{prefix}-*", "dual_write", "--reason", "r", "--dry-run"]
    code = await asyncio.to_thread(main, argv)
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"plan: 1 tenants selected by --match '{prefix}-*'" in out
    assert real in out
    assert not any(tenant in out for tenant in made_up)


# -- bounds, against PostgreSQL in a schema of its own (nothing else writes there) ----------------------
@pytest.fixture
async def seen_pool(pg_url: str) -> AsyncIterator[asyncpg.Pool]:
    schema = f"seen_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(pg_url)
    await admin.execute(f"CREATE SCHEMA {schema}")
    pool = await asyncpg.create_pool(pg_url, min_size=1, max_size=2, server_settings={"search_path": schema})
    try:
        yield pool
    finally:
        await pool.close()
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()


def settings(**overrides: float) -> SeenTenantSettings:
    return SeenTenantSettings.model_validate({"flush_interval_s": 60, **overrides})


async def table(pool: asyncpg.Pool) -> set[str]:
    return {row["tenant"] for row in await pool.fetch("SELECT tenant FROM cutover_seen_tenant")}


async def test_the_table_keeps_at_most_max_tenants(seen_pool: asyncpg.Pool) -> None:
    seen = SeenTenants(seen_pool, settings(max_tenants=5, max_pending=100))
    for n in range(8):
        seen.note(f"t{n}")
    assert await seen.flush() == 5
    kept = await table(seen_pool)
    assert len(kept) == 5
    assert seen.not_inserted == 3
    # A second process with more new names: still no room, and the names already there are touched.
    other = SeenTenants(seen_pool, settings(max_tenants=5, max_pending=100))
    for name in [*sorted(kept)[:2], "u1", "u2"]:
        other.note(name)
    assert await other.flush() == 2  # the two known ones, touched
    assert await table(seen_pool) == kept


async def test_memory_is_bounded_between_and_across_flushes(seen_pool: asyncpg.Pool) -> None:
    seen = SeenTenants(seen_pool, settings(max_tenants=10, max_pending=4))
    for n in range(50):
        seen.note(f"m{n}")
    assert len(seen._new) == 4
    assert len(seen._seen) == 4
    assert seen.dropped == 46
    sizes = []
    for round_ in range(6):
        await seen.flush()
        for n in range(4):
            seen.note(f"r{round_}-{n}")
        sizes.append(len(seen._seen))
    assert max(sizes) <= 10 + 4  # max_tenants, plus at most one batch noted since the last flush
    assert sizes != sorted(sizes), "the remembered names were never forgotten: the test proved nothing"


async def test_rows_not_seen_for_the_retention_are_pruned(seen_pool: asyncpg.Pool) -> None:
    seen = SeenTenants(seen_pool, settings(retention_s=3600))
    for name in ("old-1", "old-2", "fresh"):
        seen.note(name)
    await seen.flush()
    await seen_pool.execute(
        "UPDATE cutover_seen_tenant SET last_seen = now() - interval '2 hours' WHERE tenant LIKE 'old-%'"
    )
    assert await seen.prune() == 2
    assert await table(seen_pool) == {"fresh"}


async def test_a_known_tenant_queues_nothing(seen_pool: asyncpg.Pool) -> None:
    seen = SeenTenants(seen_pool, settings())
    seen.note("known")
    pending = list(seen._new)
    for _ in range(1000):
        seen.note("known")
    assert seen._new == pending
    assert seen.dropped == 0
