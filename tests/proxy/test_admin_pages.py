"""Every list of the admin API comes in pages: at most `limit` items, `next` while more follow, and
`after=<next>` continues exactly where the page ended; the CLI follows the pages."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
import redis.asyncio as aioredis

from buffer_worker.intent import Intent
from buffer_worker.keys import dead_letter_key, partition_of
from proxy.cli.admin_client import AdminClient
from proxy.cli.main import main
from proxy.control.seen_tenants import ensure_seen_schema
from proxy.shadow.divergences import Sample, insert_samples
from routing.phases import Phase, Side
from tests.support.proxies import Proxy, ProxyFactory
from tests.support.redis_keys import PARTITIONS


async def follow(proxy: Proxy, path: str, key: str, **params: Any) -> tuple[list[Any], list[int]]:
    """Every item of a list, page by page; and the size of each page."""
    items: list[Any] = []
    sizes: list[int] = []
    after = params.pop("after", None)
    while True:
        query = {**params, **({} if after is None else {"after": after})}
        response = await proxy.admin.get(path, params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        items.extend(body[key])
        sizes.append(len(body[key]))
        after = body["next"]
        if after is None:
            return items, sizes
        assert len(sizes) < 1000, "pages never end"


async def test_tenants_page_by_page_phase_rows_and_seen_only_together(proxy: Proxy) -> None:
    prefix = f"pg{uuid.uuid4().hex[:8]}"
    with_row = [f"{prefix}-{n:02d}" for n in range(0, 9, 2)]
    seen_only = [f"{prefix}-{n:02d}" for n in range(1, 9, 2)]
    for tenant in with_row:
        await proxy.set_phase_api(tenant, Phase.DUAL_WRITE)
    async with proxy.runtime.pool.acquire() as conn:
        await ensure_seen_schema(conn)
        await conn.execute(
            "INSERT INTO cutover_seen_tenant (tenant) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING",
            [*seen_only, with_row[0]],  # a tenant with a row is listed once, with its row
        )
    listed: list[tuple[str, str]] = []
    after: str | None = prefix  # sorts before every tenant of this test
    pages = 0
    while after is not None and (not listed or listed[-1][0].startswith(prefix)):
        body = (await proxy.admin.get("/tenants", params={"limit": 3, "after": after})).json()
        assert len(body["tenants"]) + len(body["seen_in_traffic"]) <= 3
        page = [(t["tenant"], "row") for t in body["tenants"]] + [
            (t["tenant"], "seen") for t in body["seen_in_traffic"]
        ]
        listed += sorted(page)
        after, pages = body["next"], pages + 1
    mine = [entry for entry in listed if entry[0].startswith(prefix)]
    assert mine == sorted([(t, "row") for t in with_row] + [(t, "seen") for t in seen_only])
    assert pages >= 3, "the list fitted in one page: the test proved nothing"


async def test_audit_pages_newest_first_without_gaps_or_repeats(proxy: Proxy, tenant: str) -> None:
    await proxy.set_phase_api(tenant, Phase.LIVE)
    await proxy.set_phase_api(tenant, Phase.LEGACY)
    await proxy.set_phase_api(tenant, Phase.COMPLETE)  # 3 + 1 + 5 changes
    entries, sizes = await follow(proxy, "/audit", "entries", tenant=tenant, limit=2)
    assert [e["version"] for e in entries] == list(range(9, 0, -1))
    assert sizes == [2, 2, 2, 2, 1]
    whole = (await proxy.admin.get("/audit", params={"tenant": tenant})).json()
    assert whole["entries"] == entries
    assert whole["next"] is None


def sample(tenant: str, n: int) -> Sample:
    return Sample(
        tenant=tenant,
        phase="shadow",
        resource="/r",
        verdict="divergent",
        method="GET",
        path=f"/r/{n}",
        query="",
        request_headers=[],
        serving_side="old",
        serving_status=200,
        shadow_status=200,
        serving_body=b"{}",
        shadow_body=b"{}",
        differences=[],
        fields=[],
    )


async def test_divergences_page_newest_first(proxy: Proxy, tenant: str) -> None:
    await insert_samples(proxy.runtime.pool, [sample(tenant, n) for n in range(7)])
    found, sizes = await follow(proxy, f"/tenants/{tenant}/divergences", "divergences", limit=3)
    assert [d["path"] for d in found] == [f"/r/{n}" for n in range(6, -1, -1)]
    assert sizes == [3, 3, 1]


def intent(tenant: str, n: int) -> Intent:
    return Intent(
        tenant=tenant,
        target=Side.NEW,
        method="PUT",
        path=f"/items/{n}",
        query="",
        headers=(),
        body=b"{}",
        status=200,
        response_body=b"{}",
    )


async def test_dead_letters_page_across_partitions(
    make_proxy: ProxyFactory, redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    # A prefix of its own: the ids below are chosen by hand, and another test's dead letters in a shared
    # stream would already be past them (XADD refuses an id below the stream's top).
    prefix = f"{redis_prefix}:pages-{uuid.uuid4().hex[:6]}"
    proxy = await make_proxy({"buffer": {"key_prefix": prefix}})
    tenants = [f"dl-{uuid.uuid4().hex[:8]}" for _ in range(8)]
    partitions = {partition_of(t, PARTITIONS) for t in tenants}
    assert len(partitions) > 1, "all in one partition: the test proved nothing"
    added: list[tuple[str, bytes]] = []
    sequence = dict.fromkeys(partitions, 0)
    for n, tenant in enumerate(tenants * 2):
        partition = partition_of(tenant, PARTITIONS)
        key = dead_letter_key(prefix, partition)
        fields = {**intent(tenant, n).to_fields(), b"reason": b"test", b"source_id": b"0-1"}
        # First round: ids 1-1, 1-2, ... in each partition, so that partitions share ids and the page
        # order (id, partition) is what keeps it total. Second round: ids Redis makes (all later).
        sequence[partition] += 1
        entry_id = f"1-{sequence[partition]}" if n < len(tenants) else "*"
        added.append((key, await redis_client.xadd(key, fields, id=entry_id)))  # type: ignore[arg-type]
    try:
        letters, sizes = await follow(proxy, "/buffer/dead-letters", "dead_letters", limit=3)
        mine = [letter for letter in letters if letter.get("tenant") in tenants]
        assert len(mine) == 16
        assert len({letter["cursor"] for letter in letters}) == len(letters)
        assert all(size <= 3 for size in sizes)
        assert len(sizes) >= 6
        one, _ = await follow(proxy, "/buffer/dead-letters", "dead_letters", tenant=tenants[0], limit=1)
        assert [letter["path"] for letter in one] == ["/items/0", "/items/8"]
    finally:
        for key, added_id in added:
            await redis_client.xdel(key, added_id)


@pytest.mark.parametrize(
    ("path", "limit"),
    [("/tenants", 5001), ("/audit", 1001), ("/tenants/t1/divergences", 501), ("/buffer/dead-letters", 1001)],
)
async def test_limits_have_a_maximum(proxy: Proxy, path: str, limit: int) -> None:
    response = await proxy.admin.get(path, params={"limit": limit})
    assert response.status_code == 422
    assert response.json()["problems"][0]["field"] == "query.limit"
    assert (await proxy.admin.get(path, params={"limit": limit - 1})).status_code == 200


async def test_the_cli_follows_pages(proxy: Proxy, tenant: str, capsys: pytest.CaptureFixture[str]) -> None:
    await proxy.set_phase_api(tenant, Phase.COMPLETE)  # 5 audit entries
    client = AdminClient(proxy.admin_server.url, proxy.tokens.read)
    try:
        taken = await asyncio.to_thread(client.take, "/audit", "entries", limit=4, page_size=1, tenant=tenant)
        assert [e["version"] for e in taken] == [5, 4, 3, 2]
        every = await asyncio.to_thread(
            client.take, "/audit", "entries", limit=None, page_size=2, tenant=tenant
        )
        assert [e["version"] for e in every] == [5, 4, 3, 2, 1]
    finally:
        client.close()
    base = ["--admin-url", proxy.admin_server.url, "--token", proxy.tokens.read]
    assert await asyncio.to_thread(main, ["audit", *base, tenant, "--limit", "3"]) == 0
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines()[1:]] == [str(e["id"]) for e in every[:3]]
    assert await asyncio.to_thread(main, ["tenants", *base, "--limit", "2", "--json"]) == 0
    listed = capsys.readouterr().out
    assert listed.count('"tenant":') == 2
