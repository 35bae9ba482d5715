"""Fixtures for the buffer worker tests: a unique Redis key prefix per test, real uvicorn backends on
loopback ports (started inside the test event loop), settings and worker helpers.

The key prefix is tests/conftest.py's `redis_prefix`; servers, ASGI pieces and waits come from
`tests/support`.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from buffer_worker.http_applier import HttpApplier
from buffer_worker.intent import Intent
from buffer_worker.keys import partition_of, pending_key
from buffer_worker.worker import Worker
from config.settings import Settings
from routing.phases import Side
from tests.support.asgi import Receive, Scope, Send, read_body
from tests.support.http import loopback_client
from tests.support.redis_keys import PARTITIONS, REDIS_URL
from tests.support.servers import QuietServer, backend_config, bind_loopback, serve_on
from tests.support.waits import wait_for


# -- Redis -----------------------------------------------------------------------------------------------
@pytest.fixture
def prefix(redis_prefix: str) -> str:
    """The test's own key prefix (tests/conftest.py deletes its keys afterwards)."""
    return redis_prefix


@pytest.fixture
async def rclient() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


# -- servers ---------------------------------------------------------------------------------------------
@dataclass
class Backend:
    """A real uvicorn server serving `app` on a loopback port; can go down and come back on the same port."""

    app: Any
    sock: socket.socket
    port: int
    server: QuietServer | None = None
    task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.server is not None

    async def start(self) -> None:
        assert self.server is None
        server, task = await serve_on(backend_config(self.app), self.sock)
        self.server, self.task = server, task

    async def stop(self, *, hold_port: bool = False) -> None:
        """Stop serving; with `hold_port`, keep the port bound but not listening (connections are refused)."""
        if self.server is not None and self.task is not None:
            self.server.should_exit = True
            try:
                await asyncio.wait_for(self.task, 15)
            finally:
                self.server = self.task = None
        self.sock.close()
        if hold_port:
            self.sock = bind_loopback(self.port)

    async def get_json(self, path: str) -> Any:
        async with loopback_client(base_url=self.url, timeout=10) as client:
            response = await client.get(path)
            response.raise_for_status()
            return response.json()

    async def post_json(self, path: str, body: Any) -> Any:
        async with loopback_client(base_url=self.url, timeout=10) as client:
            response = await client.post(path, json=body)
            response.raise_for_status()
            return response.json()


BackendFactory = Callable[[Any], Awaitable[Backend]]


@pytest.fixture
async def start_backend() -> AsyncIterator[BackendFactory]:
    started: list[Backend] = []

    async def factory(app: Any) -> Backend:
        sock = bind_loopback()
        backend = Backend(app, sock, sock.getsockname()[1])
        started.append(backend)
        await backend.start()
        return backend

    yield factory
    for backend in started:
        await backend.stop()


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k == name.lower()]
        return values[0] if values else None

    @property
    def tenant(self) -> str | None:
        return self.header("x-tenant-id")

    @property
    def idempotency_key(self) -> str | None:
        return self.header("idempotency-key")


class RecordingApp:
    """ASGI middleware: records every HTTP request (with its body) before the wrapped app handles it."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.seen: list[Seen] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = await read_body(receive)
        self.seen.append(
            Seen(
                scope["method"],
                scope["raw_path"].decode("latin-1"),
                scope["query_string"].decode("latin-1"),
                tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]),
                body,
            )
        )
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return await receive()  # the body is read: the server's next message is the disconnect
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    def keys_for(self, tenant: str) -> list[str]:
        """Idempotency keys (intent ids) of the requests `tenant` sent, in arrival order."""
        return [s.idempotency_key or "" for s in self.seen if s.tenant == tenant and s.path != "/_dump"]


# -- settings, intents, workers --------------------------------------------------------------------------
def make_settings(prefix: str, old_url: str, new_url: str, **overrides: Any) -> Settings:
    worker = {"lease_ttl_s": 1, "retry_initial_s": 0.01, "retry_max_s": 0.05, "block_ms": 50}
    worker.update(overrides.pop("worker", {}))
    data: dict[str, Any] = {
        "backends": {"old": {"url": old_url}, "new": {"url": new_url}},
        "buffer": {"key_prefix": prefix, "partitions": PARTITIONS},
        "worker": worker,
        "redis_url": REDIS_URL,
    }
    data.update(overrides)
    return Settings.model_validate(data)


def put_intent(tenant: str, key: str, value: Any, *, target: Side = Side.NEW) -> Intent:
    return Intent(
        tenant=tenant,
        target=target,
        method="PUT",
        path=f"/items/{key}",
        query="",
        headers=(("content-type", "application/json"),),
        body=orjson.dumps({"v": value}),
        status=200,
        response_body=orjson.dumps({"v": value, "id": key}),
    )


def delete_intent(tenant: str, key: str, *, target: Side = Side.NEW) -> Intent:
    return Intent(
        tenant=tenant,
        target=target,
        method="DELETE",
        path=f"/items/{key}",
        query="",
        headers=(),
        body=b"",
        status=204,
        response_body=b"",
    )


def tenants_on_same_partition(count: int, *, partitions: int = PARTITIONS, label: str = "t") -> list[str]:
    """`count` fresh tenant names that all hash to one partition."""
    by_partition: dict[int, list[str]] = {}
    while True:
        name = f"{label}-{uuid.uuid4().hex[:10]}"
        group = by_partition.setdefault(partition_of(name, partitions), [])
        group.append(name)
        if len(group) == count:
            return group


def tenants_on_distinct_partitions(*, partitions: int = PARTITIONS, label: str = "t") -> list[str]:
    """One fresh tenant name per partition (index = partition)."""
    found: dict[int, str] = {}
    while len(found) < partitions:
        name = f"{label}-{uuid.uuid4().hex[:10]}"
        found.setdefault(partition_of(name, partitions), name)
    return [found[p] for p in range(partitions)]


@dataclass
class RunningWorker:
    worker: Worker
    stop_event: asyncio.Event
    task: asyncio.Task[None]

    async def stop(self) -> None:
        """Graceful stop; if the worker does not finish within a few seconds, cancel it until it does."""
        self.stop_event.set()
        done, _ = await asyncio.wait({self.task}, timeout=1.5)
        for _ in range(100):
            if done:
                break
            self.task.cancel()
            done, _ = await asyncio.wait({self.task}, timeout=0.05)
        if not done:
            raise AssertionError("worker did not stop")
        if not self.task.cancelled():
            self.task.result()

    async def kill(self) -> None:
        """Cancel the worker mid-batch: the batch in flight is not acknowledged.

        Cancelled again until it is done: on Python 3.11 a cancellation that meets the timeout of the
        worker's `asyncio.wait_for(stop.wait(), ...)` comes out as the TimeoutError the loop suppresses.
        """
        for _ in range(200):
            self.task.cancel()
            done, _ = await asyncio.wait({self.task}, timeout=0.05)
            if done:
                break
        if not self.task.done():
            raise AssertionError("worker did not stop")
        if not self.task.cancelled() and self.task.exception() is not None:
            raise self.task.exception()  # type: ignore[misc]

    def check_alive(self) -> None:
        if self.task.done():
            self.task.result()
            raise AssertionError("worker exited unexpectedly")


@dataclass
class WorkerPool:
    started: list[RunningWorker] = field(default_factory=list)

    def start(
        self, settings: Settings, *, worker_id: str | None = None, applier: Any = None
    ) -> RunningWorker:
        worker = Worker(
            settings,
            applier or HttpApplier(settings),
            worker_id=worker_id or f"w-{uuid.uuid4().hex[:8]}",
        )
        stop_event = asyncio.Event()
        running = RunningWorker(worker, stop_event, asyncio.create_task(worker.run(stop_event)))
        self.started.append(running)
        return running


@pytest.fixture
async def workers() -> AsyncIterator[WorkerPool]:
    pool = WorkerPool()
    yield pool
    for running in pool.started:
        if not running.task.done():
            await running.stop()


async def wait_until(
    predicate: Callable[[], Awaitable[bool]],
    *,
    timeout_s: float = 10.0,
    interval_s: float = 0.02,
    alive: Iterable[RunningWorker] = (),
) -> float:
    """Poll `predicate` until it holds; returns the seconds it took. Fails fast if a worker died."""

    def workers_alive() -> None:
        for running in alive:
            running.check_alive()

    return await wait_for(predicate, timeout_s=timeout_s, interval_s=interval_s, still_valid=workers_alive)


async def pending_counts(client: aioredis.Redis, prefix: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for partition in range(PARTITIONS):
        raw: Any = await client.hgetall(pending_key(prefix, partition))
        counts.update({k.decode(): int(v) for k, v in raw.items()})
    return counts
