"""Proxies started in the test process (runtime, data plane and admin API on loopback ports), the
in-memory intent sink for tests that steer the buffer, and raw HTTP for what httpx will not send."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis

from buffer_worker.intent import Intent
from buffer_worker.keys import partition_of, pending_field, pending_key, stream_key
from buffer_worker.sink import BufferUnavailableError, Refusal
from config.settings import Settings
from proxy.admin.app import create_admin_app
from proxy.runtime import Runtime
from proxy.server import _uvicorn_config
from routing.phases import Phase, Side
from tests.support.demo_backends import DemoBackend
from tests.support.http import loopback_client
from tests.support.redis_keys import PARTITIONS, REDIS_URL
from tests.support.servers import RunningServer, start_server

PHASE_ORDER: tuple[Phase, ...] = tuple(Phase)


@dataclass
class IntentBuffer:
    """Reads what the proxy appended to Redis under the session's prefix."""

    client: aioredis.Redis
    prefix: str
    partitions: int = PARTITIONS

    @classmethod
    def of(cls, proxy: Proxy, client: aioredis.Redis) -> IntentBuffer:
        """The buffer `proxy` appends to."""
        return cls(client, proxy.runtime.settings.buffer.key_prefix, proxy.runtime.settings.buffer.partitions)

    async def intents_for(self, tenant: str) -> list[Intent]:
        key = stream_key(self.prefix, partition_of(tenant, self.partitions))
        entries: Any = await self.client.xrange(key)
        intents = [Intent.from_fields(fields) for _id, fields in entries]
        return [intent for intent in intents if intent.tenant == tenant]

    async def pending(self, tenant: str, side: Side) -> int:
        key = pending_key(self.prefix, partition_of(tenant, self.partitions))
        value = await self.client.hget(key, pending_field(tenant, side))
        return int(value or 0)


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


@dataclass(frozen=True)
class Tokens:
    write: str
    read: str
    write_name: str = "ops-writer"
    read_name: str = "dash-reader"


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
        state: dict[str, Any] = current.json()
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


@dataclass
class ProxyBuilder:
    """Starts proxies (Runtime + data-plane server + admin server) and stops them all on `close`.

    The sink is the production one, what `Runtime.create` builds (`SpoolingSink`: the Redis producer
    behind the local spool), unless a test passes its own (`MemorySink` to steer the buffer's answers).
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
            client=loopback_client(base_url=data_server.url, timeout=20),
            admin=loopback_client(
                base_url=admin_server.url, timeout=20, headers={"Authorization": f"Bearer {tokens.write}"}
            ),
            anon_admin=loopback_client(base_url=admin_server.url, timeout=20),
            tokens=tokens,
        )
        self.started.append(proxy)
        return proxy

    async def close(self) -> None:
        """Stop every proxy started, all at once: they share nothing, and each stop is mostly waiting."""
        proxies, self.started = self.started, []
        outcomes = await asyncio.gather(*(self._stop(proxy) for proxy in proxies), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    @staticmethod
    async def _stop(proxy: Proxy) -> None:
        for client in (proxy.client, proxy.admin, proxy.anon_admin):
            await client.aclose()
        for server in (proxy.data_server, proxy.admin_server):
            server.server.should_exit = True
        await asyncio.gather(proxy.data_server.stop(), proxy.admin_server.stop())
        await proxy.runtime.close()


@dataclass
class MemoryProxy:
    proxy: Proxy
    sink: MemorySink


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
