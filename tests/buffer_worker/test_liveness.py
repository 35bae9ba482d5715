"""`cutover worker --check`: alive exactly when a worker of this host beat within one lease TTL, as the
fleet counts it (a real Worker beats here; stale and foreign beats are written by hand)."""

from __future__ import annotations

import asyncio
import socket
import time

import redis.asyncio as aioredis

from buffer_worker.http_applier import HttpApplier
from buffer_worker.keys import workers_key
from buffer_worker.liveness import check_worker
from buffer_worker.worker import Worker
from tests.buffer_worker.conftest import make_settings
from tests.support.servers import free_port


async def test_a_running_worker_is_alive_and_a_stopped_one_is_not(
    prefix: str, rclient: aioredis.Redis
) -> None:
    settings = make_settings(prefix, "http://127.0.0.1:9", "http://127.0.0.1:9")
    alive, why = check_worker(settings)
    assert not alive, why
    assert why.startswith(f"no worker of host {socket.gethostname()}"), why
    stop = asyncio.Event()
    worker = Worker(settings, HttpApplier(settings))
    running = asyncio.create_task(worker.run(stop))
    try:
        for _ in range(100):
            if await rclient.zscore(workers_key(prefix), worker.worker_id) is not None:
                break
            await asyncio.sleep(0.05)
        alive, why = await asyncio.to_thread(check_worker, settings)
        assert alive, why
        assert worker.worker_id in why, why
    finally:
        stop.set()
        await running
    alive, why = await asyncio.to_thread(check_worker, settings)
    assert not alive, why


async def test_a_stale_beat_or_another_host_is_not_alive(prefix: str, rclient: aioredis.Redis) -> None:
    settings = make_settings(prefix, "http://127.0.0.1:9", "http://127.0.0.1:9")  # lease_ttl_s 1
    now_ms = time.time() * 1000
    host = socket.gethostname()
    await rclient.zadd(workers_key(prefix), {f"{host}:1": now_ms - 5000, f"elsewhere-{host}:2": now_ms})
    alive, why = check_worker(settings)
    assert not alive, why
    assert f"worker {host}:1 last beat 5." in why, why
    await rclient.zadd(workers_key(prefix), {f"{host}:3": now_ms})
    alive, why = check_worker(settings)
    assert alive, why
    assert f"{host}:3" in why, why


def test_redis_unreachable_is_not_alive() -> None:
    unreachable = f"redis://127.0.0.1:{free_port()}/0"
    settings = make_settings("p", "http://127.0.0.1:9", "http://127.0.0.1:9", redis_url=unreachable)
    alive, why = check_worker(settings)
    assert not alive, why
    assert why.startswith("Redis is unreachable"), why
