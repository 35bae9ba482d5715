"""Old and new as json-server-like backends in this process (`tests.support.jsonlike_server`: bare-array
lists, `_page` / `_start` / `_limit` paging with `X-Total-Count` and `Link`, PUT never creates, a POST with
an id that exists answers 500), settings for the REST copy against them, and a worker."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from aiohttp import web

from buffer_worker.http_applier import HttpApplier
from buffer_worker.worker import Worker
from config.settings import Settings
from routing.phases import Side
from tests.backfill.conftest import DataEnv
from tests.support.http import loopback_client
from tests.support.jsonlike_server import Store, create_app

REDIS_URL = "redis://127.0.0.1:6379/0"
PARTITIONS = 4
# json-server's own paging: `_page` and `_limit`, the next page in the `Link` header.
JSON_SERVER_ITEMS = {
    "name": "items",
    "list_path": "/items",
    "create": "post",
    "paging": "link",
    "page_param": "_page",
    "size_param": "_limit",
    "page_size": 50,
}


@dataclass
class JsonSide:
    url: str
    store: Store = field(default_factory=dict)
    seen: list[tuple[str, str]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)

    def records(self, tenant: str) -> dict[str, dict[str, Any]]:
        return self.store.get(tenant, {})

    def writes(self) -> list[tuple[str, str]]:
        return [(method, path) for method, path in self.seen if method not in ("GET", "HEAD")]

    def seed(self, tenant: str, count: int, *, start: int = 1) -> None:
        records = self.store.setdefault(tenant, {})
        for n in range(start, start + count):
            records[str(n)] = {"id": n, "name": f"item {n}", "v": 0}

    async def call(self, tenant: str, method: str, path: str, body: Any = None) -> httpx.Response:
        async with loopback_client(base_url=self.url, timeout=10) as client:
            return await client.request(method, path, json=body, headers={"X-Tenant-ID": tenant})


@asynccontextmanager
async def json_sides() -> AsyncIterator[dict[Side, JsonSide]]:
    runners: list[web.AppRunner] = []
    sides: dict[Side, JsonSide] = {}
    try:
        for side in Side:
            backend = JsonSide("")
            runner = web.AppRunner(create_app(backend.seen, backend.headers, backend.store), access_log=None)
            await runner.setup()
            runners.append(runner)
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            backend.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
            sides[side] = backend
        yield sides
    finally:
        for runner in runners:
            await runner.cleanup()


def rest_settings(
    env: DataEnv,
    sides: dict[Side, JsonSide],
    prefix: str,
    *,
    resources: list[dict[str, Any]] | None = None,
    **overrides: Any,
) -> Settings:
    return Settings.model_validate(rest_raw(env, sides, prefix, resources=resources, **overrides))


def rest_raw(
    env: DataEnv,
    sides: dict[Side, JsonSide],
    prefix: str,
    *,
    resources: list[dict[str, Any]] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """The settings as a configuration file holds them."""
    data = overrides.pop("data", {})
    rest = data.pop("rest", {})
    raw: dict[str, Any] = {
        "backends": {side.value: {"url": sides[side].url, "timeout_s": 10} for side in Side},
        "postgres_url": env.control_url,
        "redis_url": REDIS_URL,
        "buffer": {"key_prefix": prefix, "partitions": PARTITIONS},
        "worker": {"lease_ttl_s": 1, "retry_initial_s": 0.01, "retry_max_s": 0.05, "block_ms": 50},
        "data": {"rest": {"resources": resources or [JSON_SERVER_ITEMS], **rest}, **data},
        **overrides,
    }
    return raw


@dataclass
class RunningWorker:
    worker: Worker
    stop: asyncio.Event
    task: asyncio.Task[None]

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 10)


def start_worker(settings: Settings, applier: Any = None) -> RunningWorker:
    worker = Worker(settings, applier or HttpApplier(settings), worker_id=f"w-{uuid.uuid4().hex[:8]}")
    stop = asyncio.Event()
    return RunningWorker(worker, stop, asyncio.create_task(worker.run(stop)))
