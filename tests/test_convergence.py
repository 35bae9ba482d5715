"""End to end through proxies and a worker: concurrent writers of the same keys leave both sides equal."""

from __future__ import annotations

import asyncio
import random
import uuid
from typing import Any

import httpx

from buffer_worker.http_applier import HttpApplier
from buffer_worker.worker import Worker
from routing.phases import Phase, Side
from tests.conftest import DemoBackend, Proxy, ProxyFactory

CLIENTS = 50
WRITES_PER_CLIENT = 12
KEYS = 10


async def _drained(proxy: Proxy, tenant: str, timeout_s: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while await proxy.runtime.inspector.pending(tenant, Side.NEW):
        assert loop.time() < deadline, "the buffer did not drain"
        await asyncio.sleep(0.05)


async def _items(backend: DemoBackend, tenant: str) -> dict[str, Any]:
    async with httpx.AsyncClient() as client:
        dump = (await client.get(f"{backend.url}/_dump")).json()
    items: dict[str, Any] = dump["items"].get(tenant, {})
    return items


async def test_fifty_clients_writing_ten_keys_through_two_proxies_converge(
    make_proxy: ProxyFactory, demo_backends: dict[Side, DemoBackend], redis_prefix: str
) -> None:
    overrides = {
        "buffer": {"key_prefix": f"{redis_prefix}:conv-{uuid.uuid4().hex[:6]}"},
        "worker": {
            "state_transfer": ["/items/{id}"],
            "lease_ttl_s": 1,
            "block_ms": 50,
            "retry_initial_s": 0.01,
            "retry_max_s": 0.1,
        },
    }
    first = await make_proxy(overrides)
    second = await make_proxy(overrides)
    tenant = f"conv-{uuid.uuid4().hex[:8]}"
    await first.set_phase_api(tenant, Phase.DUAL_WRITE)
    for _ in range(100):
        if second.runtime.cache.phase_of(tenant) is Phase.DUAL_WRITE:
            break
        await asyncio.sleep(0.01)
    assert second.runtime.cache.phase_of(tenant) is Phase.DUAL_WRITE

    settings = first.runtime.settings
    stop = asyncio.Event()
    worker = asyncio.create_task(Worker(settings, HttpApplier(settings)).run(stop))
    statuses: list[int] = []

    async def client(number: int) -> None:
        rng = random.Random(number)
        proxies = (first, second)
        for write in range(WRITES_PER_CLIENT):
            key = f"k{rng.randrange(KEYS)}"
            proxy = proxies[(number + write) % 2]
            if rng.random() < 0.1:
                response = await proxy.client.delete(f"/items/{key}", headers={"X-Tenant-ID": tenant})
            else:
                body = {"writer": number, "write": write}
                response = await proxy.client.put(f"/items/{key}", json=body, headers={"X-Tenant-ID": tenant})
            statuses.append(response.status_code)

    try:
        await asyncio.gather(*(client(n) for n in range(CLIENTS)))
        await _drained(first, tenant)
    finally:
        stop.set()
        await worker

    assert len(statuses) == CLIENTS * WRITES_PER_CLIENT
    assert all(status in (200, 204, 404) for status in statuses), sorted(set(statuses))
    old_items = await _items(demo_backends[Side.OLD], tenant)
    new_items = await _items(demo_backends[Side.NEW], tenant)
    assert old_items, "nothing was written: the test would pass vacuously"
    assert new_items == old_items
