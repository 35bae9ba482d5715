"""`cutover demo`: two data services, the proxy and a worker as real processes, tenants walked through
the phases under live traffic, and a closing check that both sides hold the same data.

Everything it creates is its own: a fresh PostgreSQL database, a fresh Redis key prefix, ephemeral ports;
all of it is removed at the end, even on failure or Ctrl-C.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import redis.asyncio as aioredis
import yaml

_TOKEN = secrets.token_urlsafe(24)
_READ_TOKEN = secrets.token_urlsafe(24)
_KEYS_PER_TENANT = 40


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Demo:
    def __init__(self, postgres_url: str, redis_url: str) -> None:
        suffix = secrets.token_hex(4)
        self.database = f"cutover_demo_{suffix}"
        self.prefix = f"cutover-demo-{suffix}"
        self.admin_postgres_url = postgres_url
        parts = urlsplit(postgres_url)
        self.postgres_url = urlunsplit(parts._replace(path=f"/{self.database}"))
        self.redis_url = redis_url
        self.ports = {name: _free_port() for name in ("old", "new", "proxy", "admin")}
        self.processes: list[subprocess.Popen[bytes]] = []
        self.started = time.monotonic()
        self.traffic: Counter[tuple[str, str, str, str]] = Counter()  # (tenant, phase, kind, served_by)
        self.errors: Counter[tuple[str, int]] = Counter()
        self.running = True

    # -- output -------------------------------------------------------------------------------------------
    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f}s] {text}", flush=True)

    # -- processes ----------------------------------------------------------------------------------------
    def spawn(self, name: str, *args: str, log_dir: Path) -> None:
        log = (log_dir / f"{name}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, *args], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.processes.append(process)

    def stop_processes(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)

    # -- admin --------------------------------------------------------------------------------------------
    async def move(self, admin: httpx.AsyncClient, tenant: str, phase: str, reason: str) -> None:
        started = time.monotonic()
        response = await admin.put(f"/tenants/{tenant}/phase", json={"phase": phase, "reason": reason})
        took_ms = (time.monotonic() - started) * 1000
        body = response.json()
        if response.status_code != 200:
            raise RuntimeError(f"phase change refused: {body}")
        self.say(f"{tenant:8} → {phase:10} (version {body['version']}: {reason}; took {took_ms:.0f} ms)")

    # -- traffic ------------------------------------------------------------------------------------------
    async def drive(self, client: httpx.AsyncClient, tenant: str) -> None:
        """A steady mix of reads and writes for one tenant, until the demo stops it."""
        rng = random.Random(tenant)
        while self.running:
            key = f"k{rng.randrange(_KEYS_PER_TENANT)}"
            headers = {"X-Tenant-ID": tenant}
            if rng.random() < 0.3:
                response = await client.put(
                    f"/items/{key}", json={"value": rng.randrange(10**6)}, headers=headers
                )
                kind = "write"
            else:
                response = await client.get(f"/items/{key}", headers=headers)
                kind = "read"
            served_by = response.headers.get("x-cutover-served-by", "?")
            phase = response.headers.get("x-cutover-phase", "?")
            self.traffic[(tenant, phase, kind, served_by)] += 1
            if response.status_code >= 500:
                self.errors[(tenant, response.status_code)] += 1
            await asyncio.sleep(0.01)

    def traffic_line(self, tenant: str, phase: str) -> str:
        parts = []
        for kind in ("read", "write"):
            for side in ("old", "new"):
                count = self.traffic.get((tenant, phase, kind, side), 0)
                if count:
                    parts.append(f"{kind}s→{side} {count}")
        return ", ".join(parts) or "no traffic"


async def _wait_http(url: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            try:
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} did not become ready within {timeout_s:.0f} s")


@asynccontextmanager
async def resources(demo: Demo) -> AsyncIterator[Path]:
    conn = await asyncpg.connect(demo.admin_postgres_url)
    await conn.execute(f'CREATE DATABASE "{demo.database}"')
    await conn.close()
    with tempfile.TemporaryDirectory(prefix="cutover-demo-") as tmp:
        try:
            yield Path(tmp)
        finally:
            demo.stop_processes()
            conn = await asyncpg.connect(demo.admin_postgres_url)
            await conn.execute(f'DROP DATABASE IF EXISTS "{demo.database}" WITH (FORCE)')
            await conn.close()
            redis = aioredis.Redis.from_url(demo.redis_url)
            keys = [key async for key in redis.scan_iter(match=f"{demo.prefix}:*")]
            if keys:
                await redis.delete(*keys)
            await redis.aclose()


# The demo services' collection, as `cutover backfill` and `cutover verify` page it.
DEMO_ITEMS = {"name": "items", "list_path": "/items", "page_size": 100}


def _config(demo: Demo, directory: Path, resources: list[dict[str, Any]] | None) -> Path:
    settings: dict[str, Any] = {
        "listen": f"127.0.0.1:{demo.ports['proxy']}",
        "admin": {
            "listen": f"127.0.0.1:{demo.ports['admin']}",
            "tokens": {
                "sre": {"token": _TOKEN, "scope": "write"},
                "viewer": {"token": _READ_TOKEN, "scope": "read"},
            },
        },
        "backends": {
            "old": {"url": f"http://127.0.0.1:{demo.ports['old']}", "timeout_s": 5},
            "new": {"url": f"http://127.0.0.1:{demo.ports['new']}", "timeout_s": 5},
        },
        "postgres_url": demo.postgres_url,
        "redis_url": demo.redis_url,
        "buffer": {
            "key_prefix": demo.prefix,
            "partitions": 4,
            "spool_path": str(directory / "intents.spool"),
        },
        "worker": {"lease_ttl_s": 2, "retry_initial_s": 0.05, "retry_max_s": 0.5},
        "log_level": "warning",
    }
    if resources:
        settings["data"] = {"rest": {"resources": resources}}
    path = directory / "cutover.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


async def _pending_intents(demo: Demo) -> int:
    redis = aioredis.Redis.from_url(demo.redis_url)
    try:
        total = 0
        async for key in redis.scan_iter(match=f"{demo.prefix}:*:pending"):
            total += sum(int(v) for v in (await redis.hgetall(key)).values())
        return total
    finally:
        await redis.aclose()


async def _drain(demo: Demo, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while (pending := await _pending_intents(demo)) > 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{pending} intents still pending after {timeout_s:.0f} s")
        await asyncio.sleep(0.1)


async def _dump(port: int) -> dict[str, Any]:
    async with httpx.AsyncClient() as client:
        items: dict[str, Any] = (await client.get(f"http://127.0.0.1:{port}/_dump")).json()["items"]
        return items


async def _control(port: int, **faults: Any) -> None:
    async with httpx.AsyncClient() as client:
        await client.post(f"http://127.0.0.1:{port}/_control", json=faults)


def demo_service(side: str, port: int) -> list[str]:
    """The interpreter's arguments that serve the demo data service `side` on `port`."""
    return ["-m", "proxy.demo.backend", side, str(port)]


async def start_stack(
    demo: Demo,
    directory: Path,
    *,
    resources: list[dict[str, Any]] | None = None,
    service: Callable[[str, int], list[str]] = demo_service,
) -> Path:
    """Spawn the old and new data services (`service` gives each one's interpreter arguments; both answer
    `GET /items`), the proxy and a worker; return once all answer, with the path of their settings file.
    The settings name `resources` (`data.rest.resources`): what `cutover backfill` copies and `cutover
    verify` checks; without them, neither has anything to do."""
    config = _config(demo, directory, resources)
    for side in ("old", "new"):
        demo.spawn(side, *service(side, demo.ports[side]), log_dir=directory)
    demo.spawn("proxy", "-m", "proxy.cli.main", "serve", "--config", str(config), log_dir=directory)
    demo.spawn("worker", "-m", "proxy.cli.main", "worker", "--config", str(config), log_dir=directory)
    for name in ("old", "new"):
        await _wait_http(f"http://127.0.0.1:{demo.ports[name]}/items")
    await _wait_http(f"http://127.0.0.1:{demo.ports['admin']}/readyz")
    demo.say(f"old and new data services, proxy on :{demo.ports['proxy']} and a worker are up")
    return config


async def _run(demo: Demo) -> int:
    async with resources(demo) as directory:
        await start_stack(demo, directory)

        proxy_url = f"http://127.0.0.1:{demo.ports['proxy']}"
        admin_url = f"http://127.0.0.1:{demo.ports['admin']}"
        tenants = ("acme", "globex", "initech")
        async with (
            httpx.AsyncClient(base_url=proxy_url, timeout=10) as client,
            httpx.AsyncClient(base_url=admin_url, headers={"Authorization": f"Bearer {_TOKEN}"}) as admin,
        ):
            drivers = [asyncio.create_task(demo.drive(client, tenant)) for tenant in tenants]

            async def hold(seconds: float, tenant: str, phase: str) -> None:
                await asyncio.sleep(seconds)
                demo.say(f"  {tenant:8} in {phase:10}: {demo.traffic_line(tenant, phase)}")

            demo.say("all tenants start in legacy: everything is served by old")
            await hold(3, "acme", "legacy")
            await demo.move(admin, "acme", "dual_write", "start mirroring writes to new")
            await demo.move(admin, "globex", "dual_write", "start mirroring writes to new")
            await hold(3, "acme", "dual_write")
            # Rows written before dual_write must be copied once; `cutover backfill` will do this for
            # database backends. The demo services expose a bulk copy for the same purpose.
            await _drain(demo)
            old_items = await _dump(demo.ports["old"])
            async with httpx.AsyncClient() as raw:
                for tenant in ("acme", "globex"):
                    await raw.post(
                        f"http://127.0.0.1:{demo.ports['new']}/_load",
                        json={tenant: old_items.get(tenant, {})},
                    )
            demo.say("backfilled acme and globex: rows written before dual_write copied old → new")
            await demo.move(admin, "acme", "shadow", "compare reads against new")
            await demo.move(admin, "globex", "shadow", "compare reads against new")
            await _control(demo.ports["new"], stamp=True)
            demo.say("new now adds a served_at timestamp to its answers: shadow reads diverge for it")
            await hold(3, "globex", "shadow")
            stats = (await admin.get("/stats")).json()["shadow"]
            divergences = (await admin.get("/tenants/globex/divergences", params={"limit": 1})).json()[
                "divergences"
            ]
            paths = sorted({d["path"] for d in divergences[0]["differences"]}) if divergences else []
            counts = f"equal {stats['equal']}, divergent {stats['divergent']}"
            differing = ", ".join(paths) or "-"
            demo.say(f"  shadow compared {stats['compared']}: {counts} (differing: {differing})")
            await demo.move(admin, "globex", "dual_write", "rollback: new side adds a field old lacks")
            await _control(demo.ports["new"], stamp=False)
            await demo.move(admin, "acme", "live", "new serves reads and takes writes first")
            await hold(3, "acme", "live")
            await _control(demo.ports["new"], fail_reads=True)
            demo.say("new starts failing reads (503): live reads fall back to old only when it is safe")
            await hold(2, "acme", "live")
            await _control(demo.ports["new"], fail_reads=False)
            stats = (await admin.get("/stats")).json()
            demo.say(
                f"  fallbacks served by old: {sum(stats['fallbacks'].values())}, "
                f"refused while intents to old were pending: {stats['fallback_refused']}"
            )
            await demo.move(admin, "acme", "rampdown", "no more comparisons; old still mirrored")
            await hold(3, "acme", "rampdown")

            demo.running = False
            await asyncio.gather(*drivers)
            demo.say("traffic stopped; waiting for the buffer to drain")
            await _drain(demo)
            old_items, new_items = await _dump(demo.ports["old"]), await _dump(demo.ports["new"])
            failures = 0
            for tenant in ("acme", "globex"):
                same = old_items.get(tenant) == new_items.get(tenant)
                failures += not same
                count = len(old_items.get(tenant, {}))
                demo.say(f"  {tenant:8} old and new {'AGREE' if same else 'DIFFER'} ({count} items)")
            await demo.move(admin, "acme", "complete", "sides verified equal; new is the only backend")
            client_errors = sum(demo.errors.values())
            demo.say(f"requests sent: {sum(demo.traffic.values())}, answered 5xx: {client_errors}")
            audit = (await admin.get("/audit", params={"limit": 100})).json()["entries"]
            demo.say(f"audit log holds {len(audit)} phase changes")
        if failures:
            demo.say("FAILED: the sides differ")
            return 1
        demo.say("done: both sides agree for every migrated tenant")
        return 0


def run_demo(*, postgres_url: str, redis_url: str) -> int:
    return asyncio.run(_run(Demo(postgres_url, redis_url)))
