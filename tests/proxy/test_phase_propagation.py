"""Phase state across proxies: LISTEN/NOTIFY propagation, never-loaded proxies, losing the store later.

Every proxy here reloads phases only every 60 s, so a change seen within a second can only have arrived
through LISTEN/NOTIFY.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from proxy.control.phase_store import PhaseStore
from routing.phases import Phase
from tests.support.demo_backends import DemoBackend
from tests.support.postgres import PG_ADMIN_DSN
from tests.support.proxies import Proxy, ProxyFactory
from tests.support.servers import free_port
from tests.support.waits import wait_for

PHASES_AFTER_LEGACY = [Phase.DUAL_WRITE, Phase.SHADOW, Phase.LIVE, Phase.RAMPDOWN, Phase.COMPLETE]


async def phase_seen(proxy: Proxy, tenant: str) -> str | None:
    response = await proxy.client.get("/items", headers={"X-Tenant-ID": tenant})
    phase: str | None = response.headers.get("x-cutover-phase")
    return phase


async def test_change_through_one_proxy_is_in_force_on_another_within_1s(
    make_proxy: ProxyFactory, tenant: str
) -> None:
    first, second = await make_proxy(), await make_proxy()
    assert await phase_seen(second, tenant) == "legacy"
    for phase in PHASES_AFTER_LEGACY:
        started = time.monotonic()
        response = await first.admin.put(
            f"/tenants/{tenant}/phase", json={"phase": phase.value, "reason": "propagation"}
        )
        assert response.status_code == 200, response.text

        async def arrived(expected: str = phase.value) -> bool:
            return await phase_seen(second, tenant) == expected

        await wait_for(arrived, timeout_s=1.0, interval_s=0.01)
        assert time.monotonic() - started < 1.0
        assert second.runtime.cache.version_of(tenant) == response.json()["version"]
    # ... and back, a rollback propagates the same way.
    response = await second.admin.put(
        f"/tenants/{tenant}/phase", json={"phase": "legacy", "reason": "rollback"}
    )
    assert response.status_code == 422  # complete needs force
    response = await second.admin.put(
        f"/tenants/{tenant}/phase", json={"phase": "legacy", "reason": "rollback", "force": True}
    )
    assert response.status_code == 200

    async def rolled_back() -> bool:
        return await phase_seen(first, tenant) == "legacy"

    await wait_for(rolled_back, timeout_s=1.0, interval_s=0.01)


async def test_a_new_proxy_loads_existing_phases(make_proxy: ProxyFactory, tenant: str) -> None:
    first = await make_proxy()
    await first.set_phase_api(tenant, Phase.SHADOW)
    late = await make_proxy()
    assert late.runtime.cache.phase_of(tenant) is Phase.SHADOW
    assert await phase_seen(late, tenant) == "shadow"
    ready = (await late.anon_admin.get("/readyz")).json()
    assert ready["tenants_cached"] >= 1


# -- a store that cannot be reached ----------------------------------------------------------------------
class TcpForwarder:
    """A loopback TCP relay to PostgreSQL that can be started late: a store that comes up after the proxy."""

    def __init__(self, port: int, target: tuple[str, int] = ("127.0.0.1", 5432)) -> None:
        self.port = port
        self._target = target
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        sink.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()


@pytest.fixture
async def pg_forwarder() -> AsyncIterator[TcpForwarder]:
    # Requested before `make_proxy`, so it is torn down after the proxies that use it.
    forwarder = TcpForwarder(free_port())
    yield forwarder
    await forwarder.stop()


@pytest.mark.slow
async def test_proxy_that_never_loaded_phases_serves_nothing_until_it_does(
    pg_forwarder: TcpForwarder,
    make_proxy: ProxyFactory,
    pg_database: str,
    old: DemoBackend,
    tenant: str,
) -> None:
    # Nothing listens on the forwarder's port yet: connecting is refused, as on port 1 (Runtime.create
    # waits 5 s for a first load that cannot happen).
    proxy = await make_proxy(
        {"postgres_url": f"postgresql://postgres@127.0.0.1:{pg_forwarder.port}/{pg_database}"}
    )
    assert proxy.runtime.cache.loaded is False

    ready = await proxy.anon_admin.get("/readyz")
    assert ready.status_code == 503
    body = ready.json()
    assert (body["status"], body["phases_loaded"], body["phase_store_connected"]) == (
        "not_ready",
        False,
        False,
    )
    assert body["phase_store_error"]
    assert (await proxy.anon_admin.get("/healthz")).status_code == 200

    for method in ("GET", "PUT"):
        response = await proxy.client.request(method, "/items/x", json={}, headers={"X-Tenant-ID": tenant})
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/json"
        assert response.json()["error"] == "not_ready"
        assert response.headers["retry-after"].isdigit()
    no_tenant = await proxy.client.get("/items")
    assert no_tenant.status_code == 503
    assert no_tenant.json()["error"] == "not_ready"
    assert old.recorder.requests_for(tenant) == []

    store_down = await proxy.admin.get("/tenants")
    assert store_down.status_code == 503
    assert store_down.json()["error"] == "store_unavailable"

    # The store comes up: the proxy connects on its own and starts serving.
    await pg_forwarder.start()

    async def became_ready() -> bool:
        return (await proxy.anon_admin.get("/readyz")).status_code == 200

    await wait_for(became_ready, timeout_s=5)
    response = await proxy.client.get("/items", headers={"X-Tenant-ID": tenant})
    assert response.status_code == 200
    assert response.headers["x-cutover-phase"] == "legacy"


# -- losing the store later ------------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def store_outage(database: str) -> AsyncIterator[asyncpg.Connection]:
    """Refuse new connections to `database` and kill the existing ones; restore on exit."""
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        killed = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid()",
            database,
        )
        assert killed >= 1
        yield conn
    finally:
        await conn.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        await conn.close()


async def readyz(proxy: Proxy) -> tuple[int, dict[str, Any]]:
    response = await proxy.anon_admin.get("/readyz")
    return response.status_code, response.json()


async def test_store_lost_later_keeps_last_known_phases_then_recovers(
    make_proxy: ProxyFactory, pg_database: str, pg_url: str, old: DemoBackend, new: DemoBackend, tenant: str
) -> None:
    proxy = await make_proxy()
    await proxy.set_phase_api(tenant, Phase.LIVE)
    assert await phase_seen(proxy, tenant) == "live"

    async with store_outage(pg_database):

        async def disconnected() -> bool:
            status, body = await readyz(proxy)
            return status == 200 and body["phase_store_connected"] is False

        await wait_for(disconnected, timeout_s=3)
        await asyncio.sleep(0.3)  # long enough for a reconnect attempt to fail
        status, body = await readyz(proxy)
        assert status == 200
        assert body["status"] == "degraded"
        assert body["phases_loaded"] is True
        assert body["phase_store_connected"] is False
        assert body["phase_store_error"]
        assert body["phase_cache_stale_s"] > 0

        # The last known phases keep being served.
        read = await proxy.client.get("/items", headers={"X-Tenant-ID": tenant})
        assert read.status_code == 200
        assert (read.headers["x-cutover-served-by"], read.headers["x-cutover-phase"]) == ("new", "live")
        write = await proxy.client.put("/items/during-outage", json={"v": 1}, headers={"X-Tenant-ID": tenant})
        assert write.status_code == 200
        assert write.headers["x-cutover-served-by"] == "new"
        assert "during-outage" in await new.items_of(tenant)
        assert "during-outage" not in await old.items_of(tenant)
        # Phase changes cannot be made meanwhile, and say so.
        refused = await proxy.admin.put(f"/tenants/{tenant}/phase", json={"phase": "rampdown", "reason": "x"})
        assert refused.status_code == 503
        assert refused.json()["error"] == "store_unavailable"
        assert proxy.runtime.cache.phase_of(tenant) is Phase.LIVE

    async def reconnected() -> bool:
        status, body = await readyz(proxy)
        return status == 200 and body["phase_store_connected"] is True

    await wait_for(reconnected, timeout_s=5)
    status, body = await readyz(proxy)
    assert (body["status"], body["phase_cache_stale_s"], body["phase_store_error"]) == ("ready", 0.0, None)

    # LISTEN is back: a change made elsewhere (not through this proxy) arrives within 1 s.
    elsewhere = await PhaseStore.connect(pg_url, default_phase=Phase.LEGACY)
    try:
        await elsewhere.set_phase(tenant, Phase.RAMPDOWN, actor="other-proxy", reason="after recovery")
    finally:
        await elsewhere.close()

    async def arrived() -> bool:
        return await phase_seen(proxy, tenant) == "rampdown"

    await wait_for(arrived, timeout_s=1.0, interval_s=0.01)
