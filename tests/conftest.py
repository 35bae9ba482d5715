"""Shared fixtures: a fresh PostgreSQL database and Redis key prefix per session, real uvicorn servers.

Everything runs inside the session's event loop: the demo old/new backends, small raw-ASGI test backends,
and every proxy (data plane with `proxy.server._uvicorn_config`, so the absolute-form check is active, plus
its admin API). Tests talk to all of them over loopback HTTP with `httpx.AsyncClient`.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import secrets
import uuid
from collections.abc import AsyncIterator, Generator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import settings as hypothesis_settings
from hypothesis.database import DirectoryBasedExampleDatabase

from proxy.demo.backend import Faults, create_backend_app
from routing.phases import Side
from tests.support.demo_backends import DemoBackend, RecordingApp, echo_app
from tests.support.postgres import SessionDatabases, database_url
from tests.support.proxies import (
    IntentBuffer,
    MemoryProxy,
    MemorySink,
    Proxy,
    ProxyBuilder,
    ProxyFactory,
    Tokens,
)
from tests.support.redis_keys import REDIS_URL, delete_prefix, new_prefix
from tests.support.redis_server import redis_server
from tests.support.servers import RunningServer, backend_config, free_port, start_server

# Hypothesis replays the failing examples it found before (kept under the checkout's .hypothesis/, which
# git and the image leave out) wherever pytest is started from.
HYPOTHESIS_EXAMPLES = Path(__file__).resolve().parent.parent / ".hypothesis" / "examples"
hypothesis_settings.register_profile("cutover", database=DirectoryBasedExampleDatabase(HYPOTHESIS_EXAMPLES))
hypothesis_settings.load_profile("cutover")


# -- backends --------------------------------------------------------------------------------------------
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
@pytest.fixture
async def private_redis(tmp_path: Path) -> AsyncIterator[tuple[str, asyncio.subprocess.Process]]:
    """A redis-server of this test only, so it can be paused (SIGSTOP) without touching anyone else."""
    port = free_port()
    async with redis_server(port, tmp_path) as process:
        yield f"redis://127.0.0.1:{port}/0", process


@pytest.fixture(scope="session")
async def session_databases() -> AsyncIterator[SessionDatabases]:
    """Where session- and module-scoped fixtures create their databases; all dropped at the end."""
    databases = SessionDatabases()
    yield databases
    await databases.drop_all()


@pytest.fixture(scope="session")
async def pg_database(session_databases: SessionDatabases) -> str:
    """A fresh database for the session (dropped at the end); its name."""
    return await session_databases.create("cutover_test")


@pytest.fixture(scope="session")
def pg_url(pg_database: str) -> str:
    return database_url(pg_database)


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    """A key prefix of this test only (its proxies' buffer, its workers); every key under it is deleted
    afterwards, so no intent, counter or lease of one test is seen by another."""
    prefix = new_prefix()
    yield prefix
    await delete_prefix(prefix)


@pytest.fixture(scope="module")
async def module_redis_prefix() -> AsyncIterator[str]:
    """`redis_prefix` for fixtures shared by one module's tests (its proxies cost seconds to start)."""
    prefix = new_prefix()
    yield prefix
    await delete_prefix(prefix)


@pytest.fixture(scope="session")
async def shared_redis_prefix() -> AsyncIterator[str]:
    """The prefix of the proxies shared by the whole session (`proxy`, `memory_proxy`, `shared_builder`),
    deleted at the end; each test on them works on tenants of its own."""
    prefix = new_prefix()
    yield prefix
    await delete_prefix(prefix)


@pytest.fixture(scope="session")
async def redis_client() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


@pytest.fixture
def intent_buffer(redis_client: aioredis.Redis, shared_redis_prefix: str) -> IntentBuffer:
    """The buffer of the shared proxies (a proxy of `make_proxy` has its own: `IntentBuffer.of`)."""
    return IntentBuffer(redis_client, shared_redis_prefix)


# -- proxies ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def tokens() -> Tokens:
    return Tokens(write=f"wtok-{secrets.token_hex(16)}", read=f"rtok-{secrets.token_hex(16)}")


@pytest.fixture(scope="session")
async def shared_builder(
    demo_backends: dict[Side, DemoBackend],
    pg_url: str,
    shared_redis_prefix: str,
    tokens: Tokens,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[ProxyBuilder]:
    """Proxies shared by the whole session (starting one costs a shadow process); tests that use them
    work on their own tenants and compare counters before and after."""
    builder = ProxyBuilder(
        demo_backends, pg_url, shared_redis_prefix, tokens, tmp_path_factory.mktemp("shared")
    )
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
        _cancel_at_deadline(config, item)


# pytest-timeout's alarm raises in whatever the event loop is running when it fires: often a server's or
# a worker's task, which keeps the exception to itself, and the test then waits on for ever (the run hangs
# instead of failing). So an async test is cancelled where it waits, this long before that alarm: it fails
# with the traceback of what it was waiting for, and the run goes on.
DEADLINE_MARGIN_S = 5.0


def _cancel_at_deadline(config: pytest.Config, item: pytest.Item) -> None:
    function = getattr(item, "obj", None)
    if not isinstance(item, pytest.Function) or not inspect.iscoroutinefunction(function):
        return  # sync tests, and async ones run through hypothesis: the alarm serves them as it is
    marker = item.get_closest_marker("timeout")
    timeout = marker.args[0] if marker is not None and marker.args else config.getini("timeout")
    seconds = float(timeout or 0) - DEADLINE_MARGIN_S
    if seconds <= 0:
        return

    @functools.wraps(function)
    async def within_deadline(*args: Any, **kwargs: Any) -> Any:
        deadline = asyncio.timeout(seconds)
        try:
            async with deadline:
                return await function(*args, **kwargs)
        except TimeoutError as exc:
            if not deadline.expired():
                raise  # the test's own
            raise TimeoutError(f"still waiting after {seconds:.0f} s, where the traceback shows") from exc

    item.obj = within_deadline
