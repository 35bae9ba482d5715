"""A tenant of an HTTP data API walked from legacy to complete with json-server-like backends as old and
new and steady traffic through a real proxy, with nothing but cutover's own commands: mirroring first,
then `cutover backfill` while clients write, verify, shadow, live (refused while the copy is unfinished),
rampdown, complete. The copy's facts are read back through the admin API, the CLI, the metrics and the
status page's data."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from backfill.runner import BackfillOptions, run_backfill
from backfill.verify_run import VerifyOptions, run_verify
from buffer_worker.http_applier import HttpApplier
from buffer_worker.worker import Worker
from proxy.cli.main import main as cli
from routing.phases import Phase, Side
from tests.backfill.rest_sides import JSON_SERVER_ITEMS, JsonSide, json_sides
from tests.support.proxies import Proxy, ProxyFactory
from tests.telemetry.scraping import scrape, value

FAST_WORKER = {"lease_ttl_s": 1, "block_ms": 50, "retry_initial_s": 0.01, "retry_max_s": 0.1}
SEEDED = 300


async def _proxy(make_proxy: ProxyFactory, sides: dict[Side, JsonSide], tenant: str) -> Proxy:
    return await make_proxy(
        {
            "backends": {side.value: {"url": sides[side].url} for side in Side},
            "worker": FAST_WORKER,
            "data": {"rest": {"resources": [JSON_SERVER_ITEMS]}, "verify": {"drain_timeout_s": 5}},
            "telemetry": {"tenant_labels": [tenant]},
        }
    )


@dataclass
class Client:
    """A client of the data API writing its own records through the proxy (ids ≡ number mod 3)."""

    number: int
    tenant: str
    live: set[int]
    acknowledged: int = 0
    refused: list[str] = field(default_factory=list)

    async def run(self, proxy: Proxy, stop: asyncio.Event) -> None:
        rng = random.Random(self.number)
        headers = {"X-Tenant-ID": self.tenant}
        mine = [n for n in range(1, 400) if n % 3 == self.number]
        while not stop.is_set():
            key = rng.choice(mine)
            if key not in self.live:
                response = await proxy.client.post("/items", json={"id": key, "v": 1}, headers=headers)
                self.live.add(key)
            elif rng.random() < 0.5:
                response = await proxy.client.patch(
                    f"/items/{key}", json={"v": rng.random()}, headers=headers
                )
            elif rng.random() < 0.7:
                response = await proxy.client.put(f"/items/{key}", json={"w": rng.random()}, headers=headers)
            else:
                response = await proxy.client.delete(f"/items/{key}", headers=headers)
                self.live.discard(key)
            if 200 <= response.status_code < 300:
                self.acknowledged += 1
            else:
                self.refused.append(f"{response.status_code} {response.text[:100]}")
            await asyncio.sleep(0.003)


async def _drained(proxy: Proxy, tenant: str) -> None:
    inspector = proxy.runtime.inspector
    for _ in range(500):
        if not await inspector.pending(tenant, Side.NEW) and not await inspector.pending(tenant, Side.OLD):
            return
        assert not await inspector.dead_letter_count(tenant), await inspector.dead_letters(tenant)
        await asyncio.sleep(0.02)
    raise AssertionError("the buffer did not drain")


async def _move(proxy: Proxy, tenant: str, phase: Phase, **extra: Any) -> httpx.Response:
    return await proxy.admin.put(
        f"/tenants/{tenant}/phase", json={"phase": phase.value, "reason": "rest migration", **extra}
    )


async def test_an_http_data_api_migrates_from_legacy_to_complete_under_traffic(
    make_proxy: ProxyFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    tenant = f"mig-{uuid.uuid4().hex[:8]}"
    async with json_sides() as sides:
        old, new = sides[Side.OLD], sides[Side.NEW]
        old.seed(tenant, SEEDED)  # written before cutover: only the copy brings them to new
        proxy = await _proxy(make_proxy, sides, tenant)
        settings = proxy.runtime.settings
        stop_worker = asyncio.Event()
        worker = asyncio.create_task(Worker(settings, HttpApplier(settings)).run(stop_worker))
        stop = asyncio.Event()
        clients = [Client(n, tenant, {k for k in range(1, SEEDED + 1) if k % 3 == n}) for n in range(3)]
        traffic = [asyncio.create_task(c.run(proxy, stop)) for c in clients]
        try:
            await asyncio.sleep(0.2)  # legacy: writes reach old only
            assert (await _move(proxy, tenant, Phase.DUAL_WRITE)).status_code == 200
            assert (await _move(proxy, tenant, Phase.SHADOW)).status_code == 200
            refused = await _move(proxy, tenant, Phase.LIVE)
            assert refused.status_code == 422, refused.text
            assert refused.json()["error"] == "copy_unfinished"
            assert refused.json()["resources"] == [
                {"resource": "items", "status": "not_started", "items_listed": 0, "total": None}
            ]
            assert "items: not copied" in refused.json()["detail"]

            report = await run_backfill(settings, BackfillOptions(tenant, rows_per_s=600, concurrency=4))
            copying = (await proxy.admin.get(f"/tenants/{tenant}/copy")).json()
            # On a loaded machine the copy may finish before the writers did much: let them reach the
            # traffic the guard below asks for (a count, not a duration) before stopping them.
            for _ in range(1500):
                if sum(c.acknowledged for c in clients) > 200:
                    break
                await asyncio.sleep(0.02)
            stop.set()
            await asyncio.gather(*traffic)
            await _drained(proxy, tenant)
            verified = await run_verify(settings, VerifyOptions(tenant))
            assert verified.passed, verified.as_json()
            assert old.records(tenant) == new.records(tenant)

            for phase in (Phase.LIVE, Phase.RAMPDOWN):
                moved = await _move(proxy, tenant, phase)
                assert moved.status_code == 200, moved.text
            assert (await run_verify(settings, VerifyOptions(tenant))).passed  # after the last change
            assert (await _move(proxy, tenant, Phase.COMPLETE)).status_code == 200
        finally:
            stop.set()
            await asyncio.gather(*traffic, return_exceptions=True)
            stop_worker.set()
            await worker
        assert sum(c.acknowledged for c in clients) > 200, "too little traffic: the test proved nothing"
        assert not [c.refused for c in clients if c.refused]

        # What the copy did and what mirroring did meanwhile.
        run = report.resources[0]
        assert run.done
        assert run.items_copied > 0
        items = copying["resources"][0]
        assert items["resource"] == "items"
        assert items["status"] == "done"
        assert not items["stale"]
        assert items["items_copied"] == run.items_copied
        assert items["items_skipped"] == run.items_skipped
        assert items["items_mirrored"] > 0, "no mirrored write during the copy: the test proved nothing"
        assert items["progress"] == 1.0
        assert items["eta_s"] == 0.0
        listing = (await proxy.admin.get("/copy", params={"limit": 1000})).json()
        assert tenant in [row["tenant"] for row in listing["copies"]]
        samples = await scrape(proxy.admin)
        for how, expected in (("copied", run.items_copied), ("mirrored", items["items_mirrored"])):
            assert (
                value(samples, "cutover_copy_items_total", tenant=tenant, resource="items", how=how)
                == expected
            )
        status = (await proxy.admin.get("/status/data")).json()
        assert tenant in [row["tenant"] for row in status["copies"]["tenants"]]
        argv = ["backfill", "status", tenant, "--admin-url", proxy.admin_server.url]
        argv += ["--token", proxy.tokens.read]
        assert await asyncio.to_thread(cli, argv) == 0
        out = capsys.readouterr().out
        assert "TENANT" in out
        assert [tenant, "items", "done"] in [line.split()[:3] for line in out.splitlines()]
        every = [
            "backfill",
            "status",
            "--json",
            "--admin-url",
            proxy.admin_server.url,
            "--token",
            proxy.tokens.read,
        ]
        assert await asyncio.to_thread(cli, every) == 0
        assert tenant in [row["tenant"] for row in json.loads(capsys.readouterr().out)["copies"]]


async def test_live_waits_for_a_copy_started_after_mirroring_began_unless_forced(
    make_proxy: ProxyFactory,
) -> None:
    tenant = f"gate-{uuid.uuid4().hex[:8]}"
    async with json_sides() as sides:
        sides[Side.OLD].seed(tenant, 10)
        proxy = await _proxy(make_proxy, sides, tenant)
        settings = proxy.runtime.settings
        assert (await _move(proxy, tenant, Phase.DUAL_WRITE)).status_code == 200
        await run_backfill(settings, BackfillOptions(tenant))
        # Rolled back: writes made in legacy were mirrored nowhere, and the copy came before them.
        assert (await _move(proxy, tenant, Phase.LEGACY)).status_code == 200
        assert (await _move(proxy, tenant, Phase.DUAL_WRITE)).status_code == 200
        assert (await _move(proxy, tenant, Phase.SHADOW)).status_code == 200
        stale = await _move(proxy, tenant, Phase.LIVE)
        assert stale.status_code == 422
        assert stale.json()["resources"][0]["status"] == "stale"
        assert "copy again with --restart" in stale.json()["detail"]
        row = (await proxy.admin.get(f"/tenants/{tenant}/copy")).json()["resources"][0]
        assert row["done"]
        assert row["stale"]

        forced = await _move(proxy, tenant, Phase.LIVE, force=True)
        assert forced.status_code == 200, forced.text
        assert (await _move(proxy, tenant, Phase.SHADOW)).status_code == 200
        await run_backfill(settings, BackfillOptions(tenant, restart=True))
        assert (await _move(proxy, tenant, Phase.LIVE)).status_code == 200
