"""`GET /tenants/{tenant}/health` and `cutover tenant show`, against running proxies: traffic of two proxies
adds up per side, each move's blockers appear exactly while their condition holds (a dead letter in
Redis, verify reports missing, stale, failed or passing, an applier not configured), the buffer's backlog
is the tenant's own, and the CLI prints the same body as a table or as the API's JSON."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import signal
import sys
import uuid
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import redis.asyncio as aioredis
import yaml

from backfill import rest_checkpoint
from backfill.report import TableReport, VerifyRun, store
from backfill.rest_checkpoint import PageDone
from buffer_worker.intent import Intent
from buffer_worker.keys import dead_letter_key, partition_of
from proxy.cli.main import main
from routing.phases import Phase, Side
from tests.support.demo_backends import DemoBackend
from tests.support.http import loopback_client
from tests.support.proxies import Proxy, ProxyFactory, Tokens
from tests.support.redis_keys import PARTITIONS, REDIS_URL
from tests.support.servers import free_port
from tests.support.waits import wait_for

FAST = {"operator": {"health": {"flush_interval_s": 0.1}}}


def tenant_id() -> str:
    return f"th-{uuid.uuid4().hex[:10]}"


async def health(proxy: Proxy, tenant: str, **params: Any) -> dict[str, Any]:
    response = await proxy.admin.get(f"/tenants/{tenant}/health", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def blockers(body: dict[str, Any]) -> dict[str, list[str]]:
    return {m["to"]: [b["blocker"] for b in m["blockers"]] for m in body["moves"]}


async def test_traffic_of_two_proxies_adds_up_per_side(make_proxy: ProxyFactory, new: DemoBackend) -> None:
    first, second = await make_proxy(FAST), await make_proxy(FAST)
    tenant = tenant_id()
    headers = {"X-Tenant-ID": tenant}
    for proxy, n in ((first, 12), (second, 8)):
        for _ in range(n):
            assert (await proxy.client.get("/items", headers=headers)).status_code == 200
    await first.set_phase_api(tenant, Phase.LIVE)

    async def second_sees_live() -> bool:
        return second.runtime.cache.phase_of(tenant) is Phase.LIVE

    await wait_for(second_sees_live, timeout_s=5)
    for _ in range(5):
        response = await first.client.get("/items", headers=headers)
        assert response.headers["x-cutover-served-by"] == "new"
    new.faults.fail_reads = True  # new fails; nothing is pending toward old, so old serves (fallback)
    for _ in range(3):
        response = await second.client.get("/items", headers=headers)
        assert response.status_code == 200
        assert response.headers["x-cutover-served-by"] == "old"

    async def counted() -> bool:
        sides = (await health(first, tenant))["traffic"]["sides"]
        return (sides["old"]["requests"], sides["new"]["requests"]) == (20, 8)

    await wait_for(counted, timeout_s=10)
    body = await health(second, tenant)  # any proxy answers for the whole fleet
    old, new_side = body["traffic"]["sides"]["old"], body["traffic"]["sides"]["new"]
    assert (old["errors"], old["fallbacks"], old["error_rate"]) == (0, 0, 0.0)
    # The three reads new failed count against new (the side they were sent to), served or not.
    assert (new_side["errors"], new_side["fallbacks"], new_side["error_rate"]) == (3, 3, 0.375)
    for side in (old, new_side):
        assert side["p50_ms"] is not None
        assert side["p99_ms"] >= side["p50_ms"] > 0
        assert side["rate_per_s"] > 0
    assert "note" not in body["traffic"]
    assert body["phase"]["phase"] == "live"
    assert body["phase"]["changed_by"] == first.tokens.write_name
    assert 0 <= body["phase"]["in_phase_s"] < 60
    assert body["phase"]["from"] == "shadow"
    history = body["history"]
    assert sum(n or 0 for n in history["sides"]["old"]["requests"]) == 20
    assert len(history["t"]) == len(history["sides"]["new"]["rate_per_s"])


async def test_an_unknown_tenant_has_no_traffic_and_says_why(proxy: Proxy) -> None:
    body = await health(proxy, tenant_id())
    assert body["phase"]["default"]
    assert body["phase"]["version"] == 0
    assert all(side["requests"] == 0 for side in body["traffic"]["sides"].values())
    assert "operator.health.top_tenants" in body["traffic"]["note"]
    assert body["shadow"]["divergence_rate"] is None
    assert "answered" in body["shadow"]["definition"]
    assert [m["to"] for m in body["moves"]] == ["dual_write"]
    assert body["copy"]["state"] == "ok"
    assert "nothing to copy" in body["copy"]["detail"]


@pytest.fixture
async def gated_proxy(make_proxy: ProxyFactory, pg_url: str) -> Proxy:
    """A proxy whose worker applies toward new only (PostgreSQL applier, no `worker.postgres.old`) and
    whose `complete` gate needs a verify report of one table."""
    return await make_proxy(
        {
            **FAST,
            "worker": {
                "applier": "postgres",
                "postgres": {"new": {"url": pg_url, "resources": [{"path": "/items/{key}", "table": "x"}]}},
            },
            "data": {
                "old": {"postgres_url": pg_url},
                "new": {"postgres_url": pg_url},
                "tables": [{"name": "orders", "old": {"table": "o_old"}, "new": {"table": "o_new"}}],
            },
        }
    )


async def add_dead_letter(client: aioredis.Redis, proxy: Proxy, tenant: str) -> tuple[str, bytes]:
    prefix = proxy.runtime.settings.buffer.key_prefix
    key = dead_letter_key(prefix, partition_of(tenant, PARTITIONS))
    intent = Intent(
        tenant=tenant,
        target=Side.NEW,
        method="PUT",
        path="/items/1",
        query="",
        headers=(),
        body=b"{}",
        status=200,
        response_body=b"{}",
    )
    fields = {**intent.to_fields(), b"reason": b"test", b"source_id": b"0-1"}
    entry_id = await client.xadd(key, fields)  # type: ignore[arg-type]
    return key, cast(bytes, entry_id)


async def verify_report(proxy: Proxy, tenant: str, *, started_at: dt.datetime, different: int) -> int:
    run = VerifyRun(tenant, "rampdown", started_at)
    table = TableReport("orders")
    table.counts["different"] = different
    run.tables.append(table)
    async with proxy.runtime.pool.acquire() as conn:
        await store(conn, run)
    return run.report_ids["orders"]


async def test_each_blocker_appears_exactly_while_its_condition_holds(
    gated_proxy: Proxy, redis_client: aioredis.Redis
) -> None:
    proxy = gated_proxy
    tenant = tenant_id()
    await proxy.set_phase_api(tenant, Phase.SHADOW)
    body = await health(proxy, tenant)
    # live mirrors writes to old, which the worker cannot apply to here.
    assert blockers(body) == {"live": ["applier_not_configured"], "dual_write": [], "legacy": []}
    live = body["moves"][0]
    assert live["blockers"][0]["setting"] == "worker.postgres.old"
    assert live["copy"] == "unknown"
    assert [u["check"] for u in live["unknown"]] == ["copy"]
    assert "tables (orders)" in live["unknown"][0]["detail"]  # a table copy's progress cannot be read

    key, entry = await add_dead_letter(redis_client, proxy, tenant)
    try:
        body = await health(proxy, tenant)
        assert blockers(body)["live"] == ["dead_letters", "applier_not_configured"]
        assert body["buffer"]["dead_letters"] == 1
        # The API refuses the move for the same reason (its first check).
        refused = await proxy.admin.put(f"/tenants/{tenant}/phase", json={"phase": "live", "reason": "try"})
        assert refused.status_code == 422
        assert refused.json()["error"] == "dead_letters"
    finally:
        await redis_client.xdel(key, entry)
    body = await health(proxy, tenant)
    assert blockers(body)["live"] == ["applier_not_configured"]
    assert body["buffer"]["dead_letters"] == 0

    # In rampdown (set in the store: the rules would not let this configuration move into live).
    await proxy.set_phase_direct(tenant, Phase.RAMPDOWN)
    changed_at = (await proxy.runtime.store.get(tenant)).updated_at
    assert changed_at is not None
    body = await health(proxy, tenant)
    assert blockers(body) == {
        "complete": ["verify_required"],
        "live": ["applier_not_configured"],
        "shadow": [],
        "dual_write": [],
        "legacy": [],
    }
    assert [(r["table"], r["problem"]) for r in body["moves"][0]["blockers"][0]["reports"]] == [
        ("orders", "missing")
    ]
    assert body["verify"]["required"]
    assert body["verify"]["last"] is None

    stale = await verify_report(proxy, tenant, started_at=changed_at - dt.timedelta(minutes=1), different=0)
    body = await health(proxy, tenant)
    assert body["moves"][0]["blockers"][0]["reports"][0]["problem"] == "stale"
    assert body["verify"]["last"]["id"] == stale

    failed = await verify_report(proxy, tenant, started_at=dt.datetime.now(dt.UTC), different=2)
    body = await health(proxy, tenant)
    assert body["moves"][0]["blockers"][0]["reports"][0]["problem"] == "failed"
    assert body["verify"]["tables"] == [{"table": "orders", "report": body["verify"]["last"]}]
    assert body["verify"]["last"]["id"] == failed
    assert not body["verify"]["last"]["passed"]

    passed = await verify_report(proxy, tenant, started_at=dt.datetime.now(dt.UTC), different=0)
    body = await health(proxy, tenant)
    assert blockers(body)["complete"] == []
    assert body["verify"]["gate"] == {"passed": True, "problems": []}
    assert body["verify"]["last"]["id"] == passed

    await proxy.set_phase_direct(tenant, Phase.COMPLETE)
    body = await health(proxy, tenant)
    assert blockers(body) == {
        "rampdown": ["force_required", "applier_not_configured"],
        "live": ["force_required", "applier_not_configured"],
        "shadow": ["force_required"],
        "dual_write": ["force_required"],
        "legacy": ["force_required"],
    }


async def test_the_backlog_is_the_tenants_own(proxy: Proxy, redis_client: aioredis.Redis) -> None:
    """Intents of the tenant toward new wait (no worker runs here): pending and the oldest's age."""
    tenant = tenant_id()
    await proxy.set_phase_api(tenant, Phase.DUAL_WRITE)
    for n in range(3):
        response = await proxy.client.put(f"/items/b{n}", json={"n": n}, headers={"X-Tenant-ID": tenant})
        assert response.status_code == 200
    await asyncio.sleep(0.3)  # the subject: the oldest intent ages (oldest_s below)
    body = await health(proxy, tenant)
    toward = body["buffer"]["toward"]
    assert toward["new"]["pending"] == 3
    assert toward["new"]["exact"]
    assert 0.3 <= toward["new"]["oldest_s"] < 30
    assert toward["old"] == {"pending": 0, "oldest_s": None, "exact": True}
    shadow_move = body["moves"][0]
    assert shadow_move["to"] == "shadow"
    assert shadow_move["notes"] == []


async def test_cli_table_and_json(gated_proxy: Proxy, capsys: pytest.CaptureFixture[str]) -> None:
    proxy = gated_proxy
    tenant = tenant_id()
    await proxy.set_phase_api(tenant, Phase.SHADOW, reason="compare reads")
    for _ in range(4):
        await proxy.client.get("/items", headers={"X-Tenant-ID": tenant})

    async def counted() -> bool:
        return bool((await health(proxy, tenant))["traffic"]["sides"]["old"]["requests"] == 4)

    await wait_for(counted, timeout_s=10)
    options = ["--admin-url", proxy.admin_server.url, "--token", proxy.tokens.read]
    assert await asyncio.to_thread(main, ["tenant", "show", tenant, *options]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith(f"tenant {tenant}: shadow (version 2) for ")
    assert "from dual_write: 'compare reads'" in lines[0]
    moves = lines[lines.index("") + 1 :]
    assert moves[0].split() == ["NEXT", "MOVE", "BLOCKED", "WHY"]
    assert moves[1].startswith("-> live")
    assert " yes " in moves[1]
    assert "applier_not_configured" in moves[1]
    assert "copy unknown" in moves[1]
    assert moves[2].split()[:3] == ["<-", "dual_write", "no"]
    old_row = next(line for line in lines if line.startswith("old "))
    assert old_row.split()[2:5] == ["4", "0", "0.00%"]  # requests, errors, error rate
    assert any(line.startswith("shadow: compared ") for line in lines)
    assert any(
        line.startswith("buffer: toward old 0 pending; toward new 0 pending; dead letters 0")
        for line in lines
    )
    assert any(line.startswith("verify: the complete gate is blocked (orders missing)") for line in lines)
    assert lines[-1].startswith("copy: unknown")

    assert await asyncio.to_thread(main, ["tenant", "show", tenant, "--json", *options]) == 0
    printed = json.loads(capsys.readouterr().out)
    api = await health(proxy, tenant)
    volatile = ("generated_at", "history", "traffic", "shadow", "phase")
    assert {k: v for k, v in printed.items() if k not in volatile} == {
        k: v for k, v in api.items() if k not in volatile
    }
    assert printed["traffic"]["sides"]["old"]["requests"] == 4
    assert set(printed) == set(api)
    assert printed["phase"]["version"] == api["phase"]["version"]

    refused = await asyncio.to_thread(main, ["tenant", "show", "bad tenant", *options])
    assert refused == 1
    assert "invalid_tenant" in capsys.readouterr().err


async def test_bad_parameters_are_refused_with_the_field_named(proxy: Proxy) -> None:
    response = await proxy.admin.get("/tenants/x/health", params={"window_s": 7200})
    assert response.status_code == 422
    assert response.json()["problems"][0]["field"] == "query.window_s"
    response = await proxy.admin.get("/tenants/x/health", params={"step_s": 2})
    assert response.status_code == 422
    assert response.json()["problems"][0]["field"] == "query.step_s"
    assert (await proxy.anon_admin.get("/tenants/x/health")).status_code == 401


async def test_every_process_of_serve_workers_adds_to_the_history(
    old: DemoBackend, new: DemoBackend, pg_url: str, redis_prefix: str, tokens: Tokens, tmp_path: Path
) -> None:
    """`cutover serve --workers 2`: requests spread over both data-plane processes (SO_REUSEPORT); the
    health view (served by process 0) counts all of them, while process 0's own /stats sees only its share."""
    data_port, admin_port = free_port(), free_port()
    config = tmp_path / "cutover.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "backends": {"old": {"url": old.url}, "new": {"url": new.url}},
                "postgres_url": pg_url,
                "redis_url": REDIS_URL,
                "listen": f"127.0.0.1:{data_port}",
                "admin": {
                    "listen": f"127.0.0.1:{admin_port}",
                    "tokens": {tokens.read_name: {"token": tokens.read, "scope": "read"}},
                },
                "buffer": {"key_prefix": redis_prefix, "spool_path": str(tmp_path / "intents.spool")},
                "operator": {"health": {"flush_interval_s": 0.1}},
                "workers": 2,
                "log_level": "warning",
            }
        )
    )
    serve = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "proxy.cli.main", "serve", "--config", str(config)),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    admin = httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{admin_port}", headers={"Authorization": f"Bearer {tokens.read}"}
    )
    try:

        async def ready() -> bool:
            if serve.returncode is not None:
                errors = await serve.stderr.read() if serve.stderr else b""
                raise AssertionError(f"serve exited with {serve.returncode}: {errors.decode()}")
            try:
                return (await admin.get("/readyz")).status_code == 200
            except httpx.TransportError:
                return False

        await wait_for(ready, timeout_s=60, interval_s=0.2)
        tenant = tenant_id()
        sent = 0

        async def counted() -> bool:
            body = (await admin.get(f"/tenants/{tenant}/health")).json()
            return bool(body["traffic"]["sides"]["old"]["requests"] == sent)

        # Rounds of 20 until process 1 has served some: /readyz is process 0's, and process 1 may still
        # be starting (under load) while the first connections arrive.
        for _ in range(15):
            for _ in range(20):  # a connection each: the kernel spreads connections over the processes
                async with loopback_client(base_url=f"http://127.0.0.1:{data_port}") as client:
                    assert (await client.get("/items", headers={"X-Tenant-ID": tenant})).status_code == 200
                sent += 1
            await wait_for(counted, timeout_s=15)  # the history holds every process's requests
            stats = (await admin.get("/stats")).json()
            if sum(row["count"] for row in stats["requests"]) < sent:
                break
        else:
            raise AssertionError(f"process 0 served all {sent} requests: the test proved nothing")
    finally:
        await admin.aclose()
        if serve.returncode is None:
            serve.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(serve.wait(), 30)
        except TimeoutError:
            serve.kill()
            await serve.wait()


async def test_the_move_into_live_is_blocked_by_an_unfinished_rest_copy_as_the_gate_refuses_it(
    make_proxy: ProxyFactory,
) -> None:
    """The health view's copy check is the `live` gate's own verdict: blocked, naming the resource left,
    with the detail a dry run of the move is refused with; ok once the copy is done."""
    resources = [{"name": "items", "list_path": "/items", "create": "put"}]
    proxy = await make_proxy({**FAST, "data": {"rest": {"resources": resources}}})
    tenant = tenant_id()
    for phase in (Phase.DUAL_WRITE, Phase.SHADOW):
        await proxy.set_phase_api(tenant, phase)
    body = await health(proxy, tenant)
    live = body["moves"][0]
    assert (live["to"], live["copy"], body["copy"]["state"]) == ("live", "blocked", "blocked")
    [blocker] = live["blockers"]
    assert blocker["blocker"] == "copy_unfinished"
    assert "items: not copied" in blocker["detail"]
    assert [r["resource"] for r in blocker["resources"]] == ["items"]
    assert live["unknown"] == []
    dry_run = {"phase": "live", "reason": "check", "dry_run": True}
    refused = await proxy.admin.put(f"/tenants/{tenant}/phase", json=dry_run)
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"] == "copy_unfinished", refused.text
    assert refused.json()["detail"] == blocker["detail"]

    async with proxy.runtime.pool.acquire() as conn:
        await rest_checkpoint.ensure_schema(conn)
        await rest_checkpoint.start(conn, tenant, "items", intents=0)
        last_page = PageDone(
            None, listed=3, copied=3, skipped=0, without_id=0, total=3, seconds=0.1, end="done"
        )
        await rest_checkpoint.advance(conn, tenant, "items", last_page)
    body = await health(proxy, tenant)
    live = body["moves"][0]
    assert (live["copy"], live["blockers"], live["unknown"]) == ("ok", [], [])
    assert body["copy"]["state"] == "ok"
    assert body["copy"]["resources"] == []
    assert (await proxy.admin.put(f"/tenants/{tenant}/phase", json=dry_run)).status_code == 200
