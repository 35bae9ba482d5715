"""Shared fixtures: a fresh PostgreSQL database and Redis key prefix per session, real uvicorn servers.

Everything runs inside the session's event loop: the demo old/new backends, small raw-ASGI test backends,
and every proxy (data plane with `proxy.server._uvicorn_config`, so the absolute-form check is active, plus
its admin API). Tests talk to all of them over loopback HTTP with `httpx.AsyncClient`.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import redis.asyncio as aioredis
import uvicorn
from hypothesis import settings as hypothesis_settings
from hypothesis.database import DirectoryBasedExampleDatabase

from buffer_worker.intent import Intent
from buffer_worker.keys import partition_of, pending_field, pending_key, stream_key
from buffer_worker.producer import RedisIntentProducer
from buffer_worker.sink import BufferUnavailableError, Refusal
from config.settings import ListenAddress, Settings
from proxy.admin import create_admin_app
from proxy.demo.backend import Faults, create_backend_app
from proxy.runtime import Runtime
from proxy.server import _uvicorn_config, bind_socket
from routing.phases import Phase, Side
from tests.support.redis_server import redis_server

PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/0"
PARTITIONS = 4
PHASE_ORDER: tuple[Phase, ...] = tuple(Phase)

# Hypothesis replays the failing examples it found before (kept under the checkout's .hypothesis/, which
# git and the image leave out) wherever pytest is started from.
HYPOTHESIS_EXAMPLES = Path(__file__).resolve().parent.parent / ".hypothesis" / "examples"
hypothesis_settings.register_profile("cutover", database=DirectoryBasedExampleDatabase(HYPOTHESIS_EXAMPLES))
hypothesis_settings.load_profile("cutover")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


# -- servers ---------------------------------------------------------------------------------------------
class _Server(uvicorn.Server):
    """Several servers share the test process: none of them may take over the signal handlers."""

    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@dataclass
class RunningServer:
    server: _Server
    task: asyncio.Task[None]
    sock: socket.socket
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        self.server.should_exit = True
        try:
            await asyncio.wait_for(self.task, 15)
        finally:
            self.sock.close()


async def start_server(config: uvicorn.Config) -> RunningServer:
    sock = bind_socket(ListenAddress(host="127.0.0.1", port=0), reuse_port=False)
    port = sock.getsockname()[1]
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    for _ in range(500):
        if server.started:
            break
        if task.done():
            task.result()  # re-raise the start-up failure
            raise RuntimeError("server exited during start-up")
        await asyncio.sleep(0.01)
    else:
        raise RuntimeError("server did not start within 5 s")
    return RunningServer(server, task, sock, port)


def backend_config(app: Any) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        loop="none",
        lifespan="off",
        log_config=None,
        log_level="warning",
        access_log=False,
        ws="none",
        timeout_graceful_shutdown=2,
    )


def closed_port() -> int:
    """A loopback port nothing listens on (connecting to it is refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- backends --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    query: str
    headers: dict[str, str]

    @property
    def tenant(self) -> str | None:
        return self.headers.get("x-tenant-id")


class RecordingApp:
    """ASGI middleware that records every HTTP request reaching the wrapped backend."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.seen: list[Seen] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.seen.append(
                Seen(
                    scope["method"],
                    scope["raw_path"].decode("latin-1"),
                    scope["query_string"].decode("latin-1"),
                    {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]},
                )
            )
        await self.app(scope, receive, send)

    def requests_for(self, tenant: str, *, method: str | None = None, path: str | None = None) -> list[Seen]:
        return [
            s
            for s in self.seen
            if s.tenant == tenant
            and (method is None or s.method == method)
            and (path is None or s.path == path)
            and not s.path.startswith("/_")
        ]


@dataclass
class DemoBackend:
    name: str
    server: RunningServer
    app: Any  # the FastAPI app (its state holds faults and storage)
    recorder: RecordingApp

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def faults(self) -> Faults:
        return self.app.state.faults  # type: ignore[no-any-return]

    async def control(self, **faults: Any) -> None:
        async with httpx.AsyncClient(base_url=self.url) as client:
            response = await client.post("/_control", json=faults)
            assert response.status_code == 200, response.text

    async def dump(self) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=self.url) as client:
            response = await client.get("/_dump")
            assert response.status_code == 200
            return response.json()  # type: ignore[no-any-return]

    async def items_of(self, tenant: str) -> dict[str, Any]:
        return (await self.dump())["items"].get(tenant, {})  # type: ignore[no-any-return]

    async def seed(self, tenant: str, item_id: str, body: dict[str, Any]) -> None:
        """Write straight to this backend, bypassing the proxy."""
        async with httpx.AsyncClient(base_url=self.url) as client:
            response = await client.put(f"/items/{item_id}", json=body, headers={"X-Tenant-ID": tenant})
            assert response.status_code == 200, response.text


BIG_CHUNK = bytes(range(256)) * 1024  # 256 KiB


async def read_all(receive: Receive) -> bytes:
    """The whole request body of an ASGI request."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return body


async def echo_app(scope: Scope, receive: Receive, send: Send) -> None:
    """A raw ASGI backend for reverse-proxy checks.

    /status/<code>   answers <code> with a small JSON body
    /hop             answers 200 with hop-by-hop response headers (and one end-to-end header)
    /big?size=N      streams N bytes in 256 KiB chunks (Content-Length set)
    anything else    echoes method, raw path, query, headers and body (base64) as JSON
    """
    if scope["type"] != "http":
        return
    body = await read_all(receive)
    path: str = scope["path"]
    if path.startswith("/status/"):
        status = int(path.rsplit("/", 1)[1])
        payload = orjson.dumps({"status": status})
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
        return
    if path == "/hop":
        payload = b"hop"
        headers = [
            (b"content-length", str(len(payload)).encode()),
            (b"connection", b"x-private-hop"),
            (b"x-private-hop", b"secret"),
            (b"keep-alive", b"timeout=5, max=100"),
            (b"proxy-authenticate", b'Basic realm="backend"'),
            (b"trailer", b"x-checksum"),
            (b"proxy-connection", b"keep-alive"),
            (b"x-end-to-end", b"kept"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
        return
    if path == "/big":
        query = dict(part.split("=", 1) for part in scope["query_string"].decode().split("&") if part)
        size = int(query["size"])
        headers = [(b"content-type", b"application/octet-stream"), (b"content-length", str(size).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        sent = 0
        while sent < size:
            chunk = BIG_CHUNK if size - sent >= len(BIG_CHUNK) else BIG_CHUNK[: size - sent]
            sent += len(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": sent < size})
        return
    payload = orjson.dumps(
        {
            "method": scope["method"],
            "raw_path": scope["raw_path"].decode("latin-1"),
            "query": scope["query_string"].decode("latin-1"),
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
            "body_b64": base64.b64encode(body).decode(),
        }
    )
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


@pytest.fixture(scope="session")
async def demo_backends() -> AsyncIterator[dict[Side, DemoBackend]]:
    started: dict[Side, DemoBackend] = {}
    for side in Side:
        app = create_backend_app(side.value, id_prefix=f"{side.value}-")
        recorder = RecordingApp(app)
        server = await start_server(backend_config(recorder))
        started[side] = DemoBackend(side.value, server, app, recorder)
    yield started
    for backend in started.values():
        await backend.server.stop()


@pytest.fixture
def old(demo_backends: dict[Side, DemoBackend]) -> DemoBackend:
    return demo_backends[Side.OLD]


@pytest.fixture
def new(demo_backends: dict[Side, DemoBackend]) -> DemoBackend:
    return demo_backends[Side.NEW]


@pytest.fixture(autouse=True)
def _reset_backend_faults(request: pytest.FixtureRequest) -> Generator[None, None, None]:
    """Faults injected by one test never leak into the next."""
    yield
    if "demo_backends" in request.fixturenames:
        backends: dict[Side, DemoBackend] = request.getfixturevalue("demo_backends")
        for backend in backends.values():
            # in place: the backend's handlers hold this very object
            for name, value in vars(Faults()).items():
                setattr(backend.faults, name, value)


@pytest.fixture(scope="session")
async def echo_backend() -> AsyncIterator[RunningServer]:
    server = await start_server(backend_config(echo_app))
    yield server
    await server.stop()


# -- PostgreSQL and Redis --------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def private_redis(tmp_path: Path) -> AsyncIterator[tuple[str, asyncio.subprocess.Process]]:
    """A redis-server of this test only, so it can be paused (SIGSTOP) without touching anyone else."""
    port = free_port()
    async with redis_server(port, tmp_path) as process:
        yield f"redis://127.0.0.1:{port}/0", process


@pytest.fixture(scope="session")
async def pg_database() -> AsyncIterator[str]:
    """A fresh database for the session (dropped at the end); yields its name."""
    name = f"cutover_test_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    yield name
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_url(pg_database: str) -> str:
    return f"postgresql://postgres@127.0.0.1:5432/{pg_database}"


@pytest.fixture(scope="session")
async def redis_prefix() -> AsyncIterator[str]:
    """A key prefix unique to this session; every key under it is deleted at the end."""
    prefix = f"cutover_test_{uuid.uuid4().hex[:12]}"
    yield prefix
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
async def redis_client() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


@dataclass
class IntentBuffer:
    """Reads what the proxy appended to Redis under the session's prefix."""

    client: aioredis.Redis
    prefix: str
    partitions: int = PARTITIONS

    async def intents_for(self, tenant: str) -> list[Intent]:
        key = stream_key(self.prefix, partition_of(tenant, self.partitions))
        entries = await self.client.xrange(key)
        intents = [Intent.from_fields(fields) for _id, fields in entries]
        return [intent for intent in intents if intent.tenant == tenant]

    async def pending(self, tenant: str, side: Side) -> int:
        key = pending_key(self.prefix, partition_of(tenant, self.partitions))
        value = await self.client.hget(key, pending_field(tenant, side))
        return int(value or 0)


@pytest.fixture
def intent_buffer(redis_client: aioredis.Redis, redis_prefix: str) -> IntentBuffer:
    return IntentBuffer(redis_client, redis_prefix)


# -- an in-memory intent sink (only where a test needs to steer the buffer) ------------------------------
@dataclass
class MemorySink:
    """Implements `buffer_worker.sink.IntentSink` in memory, with switches for the buffer's answers."""

    intents: list[Intent] = field(default_factory=list)
    pending_counts: dict[tuple[str, Side], int] = field(default_factory=dict)
    fail_append: bool = False
    fail_pending: bool = False
    accepting: bool = True
    started: bool = False
    closed: bool = False

    async def start(self) -> None:
        self.started = True

    def refusal(self) -> Refusal | None:
        return None if self.accepting else Refusal("buffer_full", "the test's sink is not accepting")

    def status(self) -> dict[str, object]:
        return {"spooled": 0, "spool_bytes": 0, "accepting": self.accepting}

    def spooled(self, tenant: str) -> int:
        return 0

    async def append(self, intent: Intent) -> None:
        if self.fail_append:
            raise BufferUnavailableError(intent.tenant, "injected append failure")
        self.intents.append(intent)

    async def pending(self, tenant: str, target: Side) -> int:
        if self.fail_pending:
            raise BufferUnavailableError(tenant, "injected pending failure")
        return self.pending_counts.get((tenant, target), 0)

    async def close(self) -> None:
        self.closed = True


# -- proxies ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tokens:
    write: str
    read: str
    write_name: str = "ops-writer"
    read_name: str = "dash-reader"


@pytest.fixture(scope="session")
def tokens() -> Tokens:
    return Tokens(write=f"wtok-{secrets.token_hex(16)}", read=f"rtok-{secrets.token_hex(16)}")


@dataclass
class Proxy:
    runtime: Runtime
    data_server: RunningServer
    admin_server: RunningServer
    client: httpx.AsyncClient  # data plane
    admin: httpx.AsyncClient  # admin API, authenticated with the write token
    anon_admin: httpx.AsyncClient  # admin API, no credentials
    tokens: Tokens

    @property
    def url(self) -> str:
        return self.data_server.url

    @property
    def port(self) -> int:
        return self.data_server.port

    async def set_phase_api(self, tenant: str, target: Phase, *, reason: str = "test step") -> dict[str, Any]:
        """Walk `tenant` to `target` through the admin API, one allowed move at a time."""
        current = await self.admin.get(f"/tenants/{tenant}")
        assert current.status_code == 200, current.text
        state = current.json()
        rank = PHASE_ORDER.index(Phase(state["phase"]))
        goal = PHASE_ORDER.index(target)
        steps = PHASE_ORDER[rank + 1 : goal + 1] if goal > rank else (() if goal == rank else (target,))
        for phase in steps:
            response = await self.admin.put(
                f"/tenants/{tenant}/phase",
                json={"phase": phase.value, "reason": reason, "expected_version": state["version"]},
            )
            assert response.status_code == 200, response.text
            state = response.json()
            assert state["phase"] == phase.value
        return state

    async def set_phase_direct(self, tenant: str, target: Phase) -> None:
        """Walk `tenant` to `target` through the store, then apply it to this proxy's cache."""
        row = await self.runtime.store.get(tenant)
        rank, goal = PHASE_ORDER.index(row.phase), PHASE_ORDER.index(target)
        steps = PHASE_ORDER[rank + 1 : goal + 1] if goal > rank else (() if goal == rank else (target,))
        for phase in steps:
            row = await self.runtime.store.set_phase(tenant, phase, actor="tests", reason="direct step")
        self.runtime.cache.apply(tenant, row.phase, row.version)
        assert self.runtime.cache.phase_of(tenant) is target

    async def stats(self) -> dict[str, Any]:
        response = await self.admin.get("/stats")
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


ProxyFactory = Callable[..., Awaitable[Proxy]]
RUNTIME_DEFAULT_SINK = "runtime-default"


@dataclass
class ProxyBuilder:
    """Starts proxies (Runtime + data-plane server + admin server) and stops them all on `close`.

    The sink is the real `RedisIntentProducer` under the session's key prefix unless a test passes its
    own (or `RUNTIME_DEFAULT_SINK` for what `Runtime.create` builds by itself).
    """

    backends: dict[Side, DemoBackend]
    pg_url: str
    redis_prefix: str
    tokens: Tokens
    directory: Path
    started: list[Proxy] = field(default_factory=list)

    def settings(self, overrides: dict[str, Any] | None = None) -> Settings:
        base: dict[str, Any] = {
            "backends": {
                "old": {"url": self.backends[Side.OLD].url, "timeout_s": 5},
                "new": {"url": self.backends[Side.NEW].url, "timeout_s": 5},
            },
            "admin": {
                "tokens": {
                    self.tokens.write_name: {"token": self.tokens.write, "scope": "write"},
                    self.tokens.read_name: {"token": self.tokens.read, "scope": "read"},
                }
            },
            "postgres_url": self.pg_url,
            "redis_url": REDIS_URL,
            "max_body_bytes": 64 * 1024,
            # A long reload interval: a change seen quickly can only have come through LISTEN/NOTIFY.
            "phases": {"reload_interval_s": 60, "reconnect_interval_s": 0.2},
            "shadow": {"timeout_s": 5},
            "buffer": {
                "key_prefix": self.redis_prefix,
                "partitions": PARTITIONS,
                "spool_path": str(self.directory / f"spool-{uuid.uuid4().hex[:8]}"),
            },
            # Every runtime of this process needs its own identity for heartbeats and barrier acks.
            "proxy_id": f"test-proxy-{uuid.uuid4().hex[:10]}",
            "log_level": "warning",
        }
        return Settings.model_validate(_merge(base, overrides or {}))

    async def start(self, overrides: dict[str, Any] | None = None, *, sink: Any = None) -> Proxy:
        settings = self.settings(overrides)
        if sink == RUNTIME_DEFAULT_SINK:
            sink = None  # Runtime.create builds its own (Redis producer behind the local spool)
        elif sink is None:
            sink = RedisIntentProducer.from_url(
                settings.redis_url.get_secret_value(),
                prefix=settings.buffer.key_prefix,
                partitions=settings.buffer.partitions,
            )
        runtime = await Runtime.create(settings, sink=sink)
        try:
            data_server = await start_server(_uvicorn_config(runtime.data_plane, settings, data_plane=True))
            admin_server = await start_server(
                _uvicorn_config(create_admin_app(runtime), settings, data_plane=False)
            )
        except BaseException:
            await runtime.close()
            raise
        tokens = self.tokens
        proxy = Proxy(
            runtime=runtime,
            data_server=data_server,
            admin_server=admin_server,
            client=httpx.AsyncClient(base_url=data_server.url, timeout=20),
            admin=httpx.AsyncClient(
                base_url=admin_server.url, timeout=20, headers={"Authorization": f"Bearer {tokens.write}"}
            ),
            anon_admin=httpx.AsyncClient(base_url=admin_server.url, timeout=20),
            tokens=tokens,
        )
        self.started.append(proxy)
        return proxy

    async def close(self) -> None:
        while self.started:
            proxy = self.started.pop()
            for client in (proxy.client, proxy.admin, proxy.anon_admin):
                await client.aclose()
            for server in (proxy.data_server, proxy.admin_server):
                server.server.should_exit = True
            await asyncio.gather(proxy.data_server.stop(), proxy.admin_server.stop())
            await proxy.runtime.close()


@pytest.fixture(scope="session")
async def shared_builder(
    demo_backends: dict[Side, DemoBackend],
    pg_url: str,
    redis_prefix: str,
    tokens: Tokens,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[ProxyBuilder]:
    """Proxies shared by the whole session (starting one costs a shadow process); tests that use them
    work on their own tenants and compare counters before and after."""
    builder = ProxyBuilder(demo_backends, pg_url, redis_prefix, tokens, tmp_path_factory.mktemp("shared"))
    yield builder
    await builder.close()


@pytest.fixture
async def make_proxy(
    demo_backends: dict[Side, DemoBackend],
    pg_url: str,
    redis_prefix: str,
    tokens: Tokens,
    tmp_path: Path,
) -> AsyncIterator[ProxyFactory]:
    """Proxies of one test, with its own settings; stopped after the test."""
    builder = ProxyBuilder(demo_backends, pg_url, redis_prefix, tokens, tmp_path)
    yield builder.start
    await builder.close()


@pytest.fixture(scope="session")
async def proxy(shared_builder: ProxyBuilder) -> Proxy:
    """The default proxy: demo old/new backends, real Redis producer, default_phase legacy."""
    return await shared_builder.start()


@dataclass
class MemoryProxy:
    proxy: Proxy
    sink: MemorySink


@pytest.fixture(scope="session")
async def _memory_proxy(shared_builder: ProxyBuilder) -> MemoryProxy:
    sink = MemorySink()
    return MemoryProxy(await shared_builder.start(sink=sink), sink)


@pytest.fixture
def memory_proxy(_memory_proxy: MemoryProxy) -> MemoryProxy:
    """A shared proxy whose intent sink is an in-memory stand-in, reset for every test."""
    sink = _memory_proxy.sink
    sink.intents.clear()
    sink.pending_counts.clear()
    sink.fail_append = sink.fail_pending = False
    sink.accepting = True
    return _memory_proxy


@pytest.fixture
def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


async def wait_for(
    predicate: Callable[[], Awaitable[bool]], *, timeout_s: float = 3.0, interval_s: float = 0.02
) -> float:
    """Poll `predicate` until it holds; return the seconds it took (fail the test on timeout)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while True:
        if await predicate():
            return loop.time() - start
        if loop.time() - start > timeout_s:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(interval_s)


async def raw_request(
    port: int, data: bytes, *, timeout_s: float = 10.0
) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes over a fresh connection (the request must ask for `Connection: close`)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), timeout_s)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


# Fixtures that start servers, proxies or workers: a test using one is an integration test, which
# `make check` (the edit-test loop's fast tier) leaves to `make test`.
_INTEGRATION_FIXTURES = frozenset(
    {
        "proxy",
        "make_proxy",
        "memory_proxy",
        "shared_builder",
        "demo_backends",
        "old",
        "new",
        "echo_backend",
        "start_backend",
        "workers",
        "data_env",
        "private_redis",
    }
)


# A test that pauses or kills its own redis-server is an adversity test whether or not it says so.
_FAULT_FIXTURES = frozenset({"private_redis"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if _INTEGRATION_FIXTURES.intersection(fixtures):
            item.add_marker(pytest.mark.integration)
        if _FAULT_FIXTURES.intersection(fixtures):
            item.add_marker(pytest.mark.fault)
