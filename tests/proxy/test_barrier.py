"""The authority-switch barrier (shadow ↔ live): writes are held, not failed; the switch waits for the
drain toward the new authority and for every live proxy; otherwise it aborts with 409 and nothing moves."""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
import httpx
import redis.asyncio as aioredis

from buffer_worker.keys import partition_of, pending_field, pending_key
from routing.phases import Phase, Side
from tests.support.proxies import Proxy, ProxyFactory
from tests.support.redis_keys import PARTITIONS
from tests.support.waits import wait_for


def _tenant() -> str:
    return f"barrier-{uuid.uuid4().hex[:8]}"


async def _set_pending(client: aioredis.Redis, prefix: str, tenant: str, side: Side, count: int) -> None:
    key = pending_key(prefix, partition_of(tenant, PARTITIONS))
    await client.hset(key, pending_field(tenant, side), count)


async def _switch(proxy: Proxy, tenant: str, phase: Phase, version: int) -> httpx.Response:
    return await proxy.admin.put(
        f"/tenants/{tenant}/phase",
        json={"phase": phase.value, "reason": "barrier test", "expected_version": version},
    )


async def test_switch_waits_for_the_drain_and_holds_writes_meanwhile(
    make_proxy: ProxyFactory, redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    proxy = await make_proxy({"barrier": {"hold_timeout_s": 3}})
    tenant = _tenant()
    state = await proxy.set_phase_api(tenant, Phase.SHADOW)
    await _set_pending(redis_client, redis_prefix, tenant, Side.NEW, 3)  # three intents toward new unapplied

    gate = proxy.runtime.gate
    holds, held_writes = gate.holds, gate.held_writes
    switch = asyncio.create_task(_switch(proxy, tenant, Phase.LIVE, state["version"]))
    await wait_for(lambda: gate.holds > holds, "the hold did not reach the proxy")
    started = time.monotonic()
    write = asyncio.create_task(
        proxy.client.put("/items/held", json={"v": 1}, headers={"X-Tenant-ID": tenant})
    )
    await wait_for(lambda: gate.held_writes > held_writes, "the write was not held")
    assert not write.done(), "a write of the tenant went through while its authority was being switched"
    assert not switch.done()

    await _set_pending(redis_client, redis_prefix, tenant, Side.NEW, 0)  # the worker drained them
    response = await switch
    assert response.status_code == 200, response.text
    assert response.json()["phase"] == "live"
    written = await write
    held_s = time.monotonic() - started
    # Held, not failed, and routed under the new phase: new is authoritative in live.
    assert written.status_code == 200, written.text
    assert written.headers["x-cutover-served-by"] == "new"
    assert written.headers["x-cutover-phase"] == "live"
    assert held_s < 3.0


async def test_switch_aborts_when_the_drain_does_not_finish_in_time(
    make_proxy: ProxyFactory, redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    proxy = await make_proxy({"barrier": {"hold_timeout_s": 0.5}})
    tenant = _tenant()
    state = await proxy.set_phase_api(tenant, Phase.SHADOW)
    await _set_pending(redis_client, redis_prefix, tenant, Side.NEW, 1)
    holds = proxy.runtime.gate.holds
    switch = asyncio.create_task(_switch(proxy, tenant, Phase.LIVE, state["version"]))
    await wait_for(lambda: proxy.runtime.gate.holds > holds, "the hold did not reach the proxy")
    write = await proxy.client.put("/items/during-abort", json={"v": 2}, headers={"X-Tenant-ID": tenant})
    response = await switch

    assert response.status_code == 409
    body = response.json()
    assert body["error"] == "barrier_aborted"
    assert "1 intents toward new were still pending" in body["reason"]
    # The tenant stayed where it was, and the held write went on under the old authority.
    assert (await proxy.admin.get(f"/tenants/{tenant}")).json()["phase"] == "shadow"
    assert write.status_code == 200
    assert write.headers["x-cutover-served-by"] == "old"
    assert proxy.runtime.cache.phase_of(tenant) is Phase.SHADOW
    await _set_pending(redis_client, redis_prefix, tenant, Side.NEW, 0)


async def test_switch_aborts_when_a_live_proxy_does_not_confirm(
    make_proxy: ProxyFactory, pg_url: str
) -> None:
    proxy = await make_proxy({"barrier": {"hold_timeout_s": 0.5}})
    tenant = _tenant()
    state = await proxy.set_phase_api(tenant, Phase.SHADOW)
    silent = f"silent-proxy-{uuid.uuid4().hex[:6]}"
    conn = await asyncpg.connect(pg_url)
    try:
        # A proxy that heartbeats but never acts on the hold (e.g. its LISTEN connection is stuck).
        await conn.execute("INSERT INTO cutover_proxy (proxy_id) VALUES ($1)", silent)
        response = await _switch(proxy, tenant, Phase.LIVE, state["version"])
    finally:
        await conn.execute("DELETE FROM cutover_proxy WHERE proxy_id = $1", silent)
        await conn.close()
    assert response.status_code == 409
    assert silent in response.json()["reason"]
    assert (await proxy.admin.get(f"/tenants/{tenant}")).json()["phase"] == "shadow"


async def test_every_proxy_confirms_and_the_switch_is_in_force_on_all(
    make_proxy: ProxyFactory, pg_url: str
) -> None:
    first = await make_proxy()
    second = await make_proxy()
    ids = [proxy.runtime.presence.proxy_id for proxy in (first, second)]
    conn = await asyncpg.connect(pg_url)
    try:

        async def both_beat() -> bool:
            query = "SELECT count(*) FROM cutover_proxy WHERE proxy_id = ANY($1::text[])"
            return bool(await conn.fetchval(query, ids) == 2)

        await wait_for(both_beat, "the two proxies' heartbeats are not in", timeout_s=10)
    finally:
        await conn.close()
    tenant = _tenant()
    state = await first.set_phase_api(tenant, Phase.SHADOW)
    response = await _switch(first, tenant, Phase.LIVE, state["version"])
    assert response.status_code == 200, response.text
    await wait_for(
        lambda: second.runtime.cache.phase_of(tenant) is Phase.LIVE,
        "the switch did not reach the second proxy",
        timeout_s=1,
    )
    # And back: live → shadow is a barrier too (old becomes authoritative again).
    back = await _switch(second, tenant, Phase.SHADOW, response.json()["version"])
    assert back.status_code == 200, back.text
    written = await first.client.put("/items/after", json={"v": 3}, headers={"X-Tenant-ID": tenant})
    assert written.headers["x-cutover-served-by"] == "old"
