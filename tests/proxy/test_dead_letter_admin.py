"""Dead letters through the admin API and the CLI: resolve (state transfer from the authoritative side)
and discard, each audited and carried out by the partition's worker, which unblocks the tenant when its
last dead letter is gone; a re-drive that would fail the same way, and a resolution that cannot name its
record, are refused with the reason."""

from __future__ import annotations

import asyncio
import contextlib
import io
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from buffer_worker.http_applier import HttpApplier
from buffer_worker.intent import Intent
from buffer_worker.keys import blocked_key, dead_letter_key, partition_of
from buffer_worker.worker import Worker
from proxy.cli.main import main
from routing.phases import Phase, Side
from tests.support.demo_backends import DemoBackend
from tests.support.proxies import Proxy, ProxyFactory
from tests.support.redis_keys import PARTITIONS
from tests.support.waits import wait_for

OVERRIDES = {
    "worker": {
        "max_attempts": 1,
        "retry_initial_s": 0.01,
        "retry_max_s": 0.05,
        "lease_ttl_s": 1,
        "block_ms": 50,
    },
    "data": {"rest": {"resources": [{"name": "items", "list_path": "/items", "create": "put"}]}},
}


@pytest.fixture
async def proxy(make_proxy: ProxyFactory, redis_prefix: str) -> Proxy:
    overrides = {**OVERRIDES, "buffer": {"key_prefix": f"{redis_prefix}:dl-{uuid.uuid4().hex[:6]}"}}
    return await make_proxy(overrides)


@pytest.fixture
async def worker(proxy: Proxy) -> AsyncIterator[Worker]:
    settings = proxy.runtime.settings
    running = Worker(settings, HttpApplier(settings), worker_id=f"dl-{uuid.uuid4().hex[:6]}")
    stop = asyncio.Event()
    task = asyncio.create_task(running.run(stop))
    yield running
    stop.set()
    await task


async def letters(proxy: Proxy, tenant: str) -> list[dict[str, Any]]:
    response = await proxy.admin.get("/buffer/dead-letters", params={"tenant": tenant})
    assert response.status_code == 200, response.text
    return response.json()["dead_letters"]  # type: ignore[no-any-return]


async def blocked(proxy: Proxy, tenant: str) -> str | None:
    rows = (await proxy.admin.get("/buffer")).json()["tenants"]
    return next((row.get("blocked_behind") for row in rows if row["tenant"] == tenant), None)


async def audit(proxy: Proxy, tenant: str) -> list[dict[str, Any]]:
    response = await proxy.admin.get("/buffer/dead-letters/audit", params={"tenant": tenant})
    assert response.status_code == 200, response.text
    return response.json()["entries"]  # type: ignore[no-any-return]


async def cli(proxy: Proxy, *args: str) -> tuple[int, str]:
    """The CLI against this proxy's admin API (in a thread: the admin server runs on this loop)."""
    out = io.StringIO()

    def run() -> int:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            return main([*args, "--admin-url", proxy.admin_server.url, "--token", proxy.tokens.write])

    code = await asyncio.to_thread(run)
    return code, out.getvalue()


async def dead_lettered_tenant(proxy: Proxy, new: DemoBackend, count: int) -> str:
    """A tenant in dual_write whose first write the new side refused (dead-lettered, the tenant blocked)
    and whose later ones are parked behind it."""
    tenant = f"dl-{uuid.uuid4().hex[:8]}"
    await proxy.set_phase_api(tenant, Phase.DUAL_WRITE)
    new.faults.fail_writes = True
    for n in range(count):
        response = await proxy.client.put(f"/items/k{n}", json={"v": n}, headers={"X-Tenant-ID": tenant})
        assert response.status_code == 200, response.text

    async def all_dead() -> bool:
        return len(await letters(proxy, tenant)) == count

    await wait_for(all_dead, "the writes were not dead-lettered", timeout_s=10, interval_s=0.05)
    new.faults.fail_writes = False
    return tenant


async def test_resolve_sets_every_dead_letter_from_old_unblocks_and_is_audited(
    proxy: Proxy, worker: Worker, old: DemoBackend, new: DemoBackend
) -> None:
    tenant = await dead_lettered_tenant(proxy, new, 3)
    dead = await letters(proxy, tenant)
    assert [d["cause"] for d in dead] == ["apply", "parked", "parked"]
    assert dead[0]["reason"].startswith("apply failed: new answered 503 to PUT /items/k0")
    code, shown = await cli(proxy, "dead-letters", tenant)
    assert code == 0, shown
    assert "CAUSE" in shown, shown
    assert "new answered 503 to PUT /items/k0" in shown, shown
    assert await blocked(proxy, tenant) == dead[0]["intent_id"]

    code, shown = await cli(proxy, "dead-letters", "resolve", tenant, "--reason", "new side fixed")
    assert code == 0, shown

    async def resolved() -> bool:
        return not await letters(proxy, tenant)

    await wait_for(resolved, "the dead letters were not resolved", timeout_s=10, interval_s=0.05)
    assert await blocked(proxy, tenant) is None
    assert await new.items_of(tenant) == await old.items_of(tenant) != {}
    [entry] = await audit(proxy, tenant)
    assert (entry["action"], entry["actor"], entry["reason"]) == (
        "resolve",
        proxy.tokens.write_name,
        "new side fixed",
    )
    assert entry["intent_ids"] == [d["intent_id"] for d in dead]
    # The tenant flows again.
    await proxy.client.put("/items/later", json={"v": 9}, headers={"X-Tenant-ID": tenant})

    async def applied() -> bool:
        return "later" in await new.items_of(tenant)

    await wait_for(applied, "the tenant's next write was not applied", timeout_s=10, interval_s=0.05)


async def test_discard_drops_one_dead_letter_audited_and_unblocks_with_the_last(
    proxy: Proxy, worker: Worker, new: DemoBackend
) -> None:
    tenant = await dead_lettered_tenant(proxy, new, 2)
    first, second = await letters(proxy, tenant)
    missing = await proxy.admin.post(
        f"/buffer/dead-letters/{tenant}/discard", json={"intent_id": "nope", "reason": "typo"}
    )
    assert missing.status_code == 404
    assert missing.json()["error"] == "dead_letter_not_found"
    no_reason = await proxy.admin.post(f"/buffer/dead-letters/{tenant}/discard", json={"intent_id": "x"})
    assert no_reason.status_code == 422

    code, shown = await cli(
        proxy,
        "dead-letters",
        "discard",
        tenant,
        "--intent",
        first["intent_id"],
        "--reason",
        "written by hand",
    )
    assert code == 0, shown

    async def one_left() -> bool:
        return [d["intent_id"] for d in await letters(proxy, tenant)] == [second["intent_id"]]

    await wait_for(one_left, "the dead letter was not discarded", timeout_s=10, interval_s=0.05)
    assert await blocked(proxy, tenant) == second["intent_id"]  # still waits, behind the next one
    response = await proxy.admin.post(
        f"/buffer/dead-letters/{tenant}/discard", json={"intent_id": second["intent_id"], "reason": "same"}
    )
    assert response.status_code == 200, response.text

    async def none_left() -> bool:
        return not await letters(proxy, tenant) and await blocked(proxy, tenant) is None

    await wait_for(none_left, "the tenant was not unblocked", timeout_s=10, interval_s=0.05)
    assert "k0" not in await new.items_of(tenant)  # discarded: never applied
    entries = await audit(proxy, tenant)
    assert [(e["action"], e["intent_ids"], e["reason"]) for e in entries] == [
        ("discard", [second["intent_id"]], "same"),
        ("discard", [first["intent_id"]], "written by hand"),
    ]
    assert (await cli(proxy, "dead-letters", "audit", tenant))[1].count("discard") == 2


async def inject(
    client: aioredis.Redis, proxy: Proxy, tenant: str, intent: Intent, reason: str, cause: str
) -> None:
    """A dead letter as the worker writes it, blocking its tenant."""
    partition = partition_of(tenant, PARTITIONS)
    prefix = proxy.runtime.settings.buffer.key_prefix
    fields = {
        **intent.to_fields(),
        b"reason": reason.encode(),
        b"cause": cause.encode(),
        b"source_id": b"1-0",
    }
    await client.xadd(dead_letter_key(prefix, partition), fields)  # type: ignore[arg-type]
    await client.hset(blocked_key(prefix, partition), tenant, intent.intent_id)


def an_intent(tenant: str, method: str, path: str) -> Intent:
    return Intent(
        tenant=tenant,
        target=Side.NEW,
        method=method,
        path=path,
        query="",
        headers=(),
        body=b"{}",
        status=200,
        response_body=b"{}",
    )


async def test_a_redrive_that_would_fail_the_same_way_is_refused_with_the_reason(
    proxy: Proxy, redis_client: aioredis.Redis
) -> None:
    tenant = f"dl-{uuid.uuid4().hex[:8]}"
    broken = an_intent(tenant, "PUT", "/items/x")
    reason = "apply failed: request to backend new could not be built: invalid header value"
    await inject(redis_client, proxy, tenant, broken, reason, "intent")
    response = await proxy.admin.post(f"/buffer/dead-letters/{tenant}/redrive")
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "redrive_refused"
    assert body["intent_id"] == broken.intent_id
    assert "could not be built" in body["detail"]
    assert f"dead-letters resolve {tenant}" in body["detail"]
    code, shown = await cli(proxy, "redrive", tenant)
    assert code == 1
    assert "redrive_refused" in shown
    assert await audit(proxy, tenant) == []  # nothing was requested


async def test_a_redrive_is_requested_and_audited(proxy: Proxy, redis_client: aioredis.Redis) -> None:
    tenant = f"dl-{uuid.uuid4().hex[:8]}"
    letter = an_intent(tenant, "PUT", "/items/x")
    await inject(
        redis_client, proxy, tenant, letter, "apply failed: new answered 503 to PUT /items/x", "apply"
    )
    response = await proxy.admin.post(
        f"/buffer/dead-letters/{tenant}/redrive", json={"reason": "outage over"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["requested"] == 1, response.text
    [entry] = await audit(proxy, tenant)
    assert (entry["action"], entry["intent_ids"], entry["reason"]) == (
        "redrive",
        [letter.intent_id],
        "outage over",
    )


async def test_a_resolution_that_cannot_name_the_record_is_refused(
    proxy: Proxy, redis_client: aioredis.Redis
) -> None:
    """A create no resource describes: the record it made has no path to read on either side."""
    tenant = f"dl-{uuid.uuid4().hex[:8]}"
    create = an_intent(tenant, "POST", "/things")
    await inject(
        redis_client, proxy, tenant, create, "apply failed: new answered 400 to POST /things", "apply"
    )
    response = await proxy.admin.post(f"/buffer/dead-letters/{tenant}/resolve", json={"reason": "try"})
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "resolve_refused"
    assert "POST /things" in response.json()["detail"]
    none = await proxy.admin.post(f"/buffer/dead-letters/{tenant}-none/resolve", json={"reason": "try"})
    assert none.status_code == 404
    assert none.json()["error"] == "no_dead_letters"
    assert await audit(proxy, tenant) == []


def table_rows(text: str, header_word: str) -> list[dict[str, str]]:
    """The rows of a printed table (the one whose header starts with `header_word`), cut at the
    header's column starts."""
    lines = text.splitlines()
    top = next(i for i, line in enumerate(lines) if line.startswith(header_word + " "))
    header = lines[top]
    names = header.split("  ")
    names = [name.strip() for name in names if name.strip()]
    starts = [header.index(name) for name in names]
    rows = []
    for line in lines[top + 1 :]:
        if not line.strip() or line.startswith(("spool:", "PARTITION", "TENANT ")):
            break
        cells = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
        rows.append(dict(zip(names, cells, strict=True)))
    return rows


async def test_a_dead_letter_has_one_id_in_the_table_behind_parked_ones_and_for_discard(
    proxy: Proxy, worker: Worker, new: DemoBackend
) -> None:
    """The ID the list prints is what parked letters and the buffer's BLOCKED BEHIND name, and what
    discard takes; the list shows what failed and what the mirror answered."""
    tenant = await dead_lettered_tenant(proxy, new, 2)
    code, shown = await cli(proxy, "dead-letters", tenant)
    assert code == 0, shown
    first, parked = table_rows(shown, "ID")
    assert (first["STATUS"], first["CAUSE"], first["PARKED BEHIND"]) == ("503", "apply", "-")
    assert '"error":"injected_failure"' in first["ANSWER"], shown
    assert parked["PARKED BEHIND"] == first["ID"]
    assert parked["STATUS"] == "-"
    code, buffer_shown = await cli(proxy, "buffer")
    assert code == 0, buffer_shown
    assert first["ID"] in buffer_shown, buffer_shown  # BLOCKED BEHIND
    code, as_json = await cli(proxy, "dead-letters", tenant, "--json")
    listed = orjson.loads(as_json)["dead_letters"]
    assert [(d["intent_id"], d["status"], d["parked_behind"]) for d in listed] == [
        (first["ID"], "503", None),
        (parked["ID"], None, first["ID"]),
    ]
    assert "injected_failure" in listed[0]["excerpt"]

    code, out = await cli(proxy, "dead-letters", "discard", tenant, first["ID"], "--reason", "by hand")
    assert code == 0, out

    async def behind_the_next() -> bool:
        return await blocked(proxy, tenant) == parked["ID"]

    await wait_for(
        behind_the_next, "the dead letter the table named was not discarded", timeout_s=10, interval_s=0.05
    )


async def test_dead_letters_written_before_status_and_excerpt_still_display(
    proxy: Proxy, redis_client: aioredis.Redis
) -> None:
    tenant = f"dl-{uuid.uuid4().hex[:8]}"
    letter, later = an_intent(tenant, "PUT", "/items/x"), an_intent(tenant, "PUT", "/items/y")
    await inject(redis_client, proxy, tenant, letter, "apply failed: new answered 503 to PUT", "apply")
    await inject(redis_client, proxy, tenant, later, f"parked behind {letter.intent_id}", "parked")
    old_style = await letters(proxy, tenant)
    assert [(d["status"], d["excerpt"], d["parked_behind"]) for d in old_style] == [
        (None, None, None),
        (None, None, letter.intent_id),
    ]
    code, shown = await cli(proxy, "dead-letters", tenant)
    assert code == 0, shown
    rows = table_rows(shown, "ID")
    assert [(r["ID"], r["STATUS"], r["PARKED BEHIND"]) for r in rows] == [
        (letter.intent_id, "-", "-"),
        (later.intent_id, "-", letter.intent_id),
    ]
