"""Reports: counts per tenant and resource, top divergent fields with example ids, noise fields, one
divergence side by side; through the admin API and the CLI."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import orjson
import pytest

from proxy.cli.main import main
from proxy.shadow.divergences import Sample, insert_samples
from proxy.shadow.job import Verdict
from proxy.shadow.report import side_by_side, tenant_report
from proxy.shadow.tally import Outcome, Tally, write_tally
from routing.phases import Phase
from tests.proxy.divergence.conftest import Answer, ScriptedPair
from tests.support.proxies import Proxy, ProxyFactory
from tests.support.waits import wait_for


def sample(tenant: str, resource: str, fields: list[str]) -> Sample:
    return Sample(
        tenant=tenant,
        phase="shadow",
        resource=resource,
        verdict="divergent",
        method="GET",
        path="/x",
        query="",
        request_headers=[],
        serving_side="old",
        serving_status=200,
        shadow_status=200,
        serving_body=b"{}",
        shadow_body=b"{}",
        differences=[],
        fields=fields,
    )


async def test_report_counts_rates_and_top_fields(pg_pool: asyncpg.Pool, tenant: str) -> None:
    tally = Tally()
    outcomes = [Verdict.EQUAL] * 5 + [Verdict.NOISE] * 2 + [Verdict.DIVERGENT] * 2 + [Verdict.FAILED]
    for n, verdict in enumerate(outcomes):
        tally.add(
            Outcome(
                tenant,
                "/items/*",
                "shadow",
                verdict,
                new_error=verdict is Verdict.FAILED,
                divergent_fields=("$.name",) if verdict is Verdict.DIVERGENT else (),
                noise_fields=("$.served_at",) if verdict in (Verdict.NOISE, Verdict.DIVERGENT) else (),
            )
        )
        if n < 3:
            tally.add(Outcome(tenant, "/orders/*", "shadow", Verdict.DIVERGENT, False, ("$.total",)))
    tally.add_skips(tenant, "/items/*", 4)
    await write_tally(pg_pool, tally.take())
    await write_tally(pg_pool, Tally(counts={(tenant, "/orders/*"): [1, 1, 0, 0, 0, 0, 0]}))  # increments add
    await insert_samples(pg_pool, [sample(tenant, "/items/*", ["$.name"]) for _ in range(4)])
    await insert_samples(pg_pool, [sample(tenant, "/orders/*", ["$.total"]), sample(tenant, "/orders/*", [])])
    ids = {}
    for resource in ("/items/*", "/orders/*"):
        rows = await pg_pool.fetch(
            "SELECT id FROM cutover_divergence WHERE tenant = $1 AND resource = $2 AND fields <> '{}'"
            " ORDER BY id DESC",
            tenant,
            resource,
        )
        ids[resource] = [row["id"] for row in rows]

    [entry] = await tenant_report(pg_pool, tenant, top=5)
    resources = {r["resource"]: r for r in entry["resources"]}
    items = resources["/items/*"]
    assert (items["compared"], items["equal"], items["noise"], items["divergent"], items["failed"]) == (
        10,
        5,
        2,
        2,
        1,
    )
    assert (items["new_errors"], items["skipped"]) == (1, 4)
    assert items["divergence_rate"] == round(2 / 9, 4)  # divergent / answered (failed ones excluded)
    assert items["new_error_rate"] == 0.1
    assert (resources["/orders/*"]["compared"], resources["/orders/*"]["equal"]) == (4, 1)
    assert entry["totals"]["compared"] == 14
    assert entry["totals"]["divergent"] == 5
    assert entry["top_fields"] == [
        {
            "resource": "/orders/*",
            "field": "$.total",
            "divergent": 3,
            "noise": 0,
            "example_ids": ids["/orders/*"],
        },
        {
            "resource": "/items/*",
            "field": "$.name",
            "divergent": 2,
            "noise": 0,
            "example_ids": ids["/items/*"][:3],
        },
    ]
    assert entry["noise_fields"] == [
        {"resource": "/items/*", "field": "$.served_at", "divergent": 0, "noise": 4}
    ]
    assert await tenant_report(pg_pool, tenant + "-none") == []


def test_side_by_side_aligns_equal_lines() -> None:
    rows = side_by_side('{"a": 1, "b": {"c": 2}, "d": 3}', '{"d": 3, "a": 1, "b": {"c": 5}}')
    assert [r["op"] for r in rows].count("replace") == 1
    changed = next(r for r in rows if r["op"] != "equal")
    assert (changed["serving"].strip(), changed["shadow"].strip()) == ('"c": 2', '"c": 5')
    assert all(r["serving"] == r["shadow"] for r in rows if r["op"] == "equal")
    assert side_by_side("not json", None) == [{"op": "delete", "serving": "not json", "shadow": None}]


@pytest.fixture
async def reported(make_proxy: ProxyFactory, scripted: ScriptedPair, tenant: str) -> Proxy:
    proxy = await make_proxy(
        {
            "backends": scripted.backends(),
            "divergence": {"policy": {"noise": {"sample_rate": 1, "min_copies": 2}}, "flush_interval_s": 0.2},
            "log_level": "error",
        }
    )
    await proxy.set_phase_direct(tenant, Phase.SHADOW)
    scripted.old.answers["/items/1"] = lambda: Answer(
        body=orjson.dumps({"id": 1, "name": "alpha", "tags": ["a"], "at": time.time()})
    )
    scripted.new.answers["/items/1"] = lambda: Answer(
        body=orjson.dumps({"id": 1, "name": "beta", "tags": ["a"], "at": time.time()})
    )
    scripted.old.set("/items/2", {"id": 2})
    scripted.new.set("/items/2", {"id": 2})
    for _ in range(5):
        for path in ("/items/1", "/items/2"):
            assert (await proxy.client.get(path, headers={"X-Tenant-ID": tenant})).status_code == 200

    async def flushed() -> bool:
        body = (await proxy.admin.get("/divergence/report", params={"tenant": tenant})).json()
        return bool(body["tenants"]) and body["tenants"][0]["totals"]["compared"] == 10

    await wait_for(flushed, timeout_s=10)
    return proxy


async def test_report_and_one_divergence_through_the_api(reported: Proxy, tenant: str) -> None:
    body = (await reported.admin.get("/divergence/report", params={"tenant": tenant})).json()
    [entry] = body["tenants"]
    assert entry["totals"]["equal"] == 5
    assert entry["totals"]["divergent"] == 5
    [top] = entry["top_fields"]
    assert (top["resource"], top["field"], top["divergent"]) == ("/items/*", "$.name", 5)
    assert len(top["example_ids"]) == 3
    assert {f["field"] for f in entry["noise_fields"]} == {"$.at"}

    one = await reported.admin.get(f"/tenants/{tenant}/divergences/{top['example_ids'][0]}")
    assert one.status_code == 200
    shown = one.json()
    changed = [r for r in shown["side_by_side"] if r["op"] != "equal"]
    assert any('"alpha"' in (r["serving"] or "") and '"beta"' in (r["shadow"] or "") for r in changed)
    assert {d["path"]: d["noise"] for d in shown["differences"]} == {"$.name": False, "$.at": True}

    missing = await reported.admin.get(f"/tenants/{tenant}/divergences/999999999")
    assert missing.status_code == 404
    assert missing.json()["error"] == "not_found"
    other = await reported.admin.get(f"/tenants/{tenant}-other/divergences/{top['example_ids'][0]}")
    assert other.status_code == 404  # another tenant's id is not found through this tenant
    assert (await reported.anon_admin.get("/divergence/report")).status_code == 401


async def test_cli_report_show_and_reset(
    reported: Proxy, tenant: str, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--admin-url", reported.admin_server.url, "--token", reported.tokens.write]

    async def cli(*argv: str) -> tuple[int, str]:
        code = await asyncio.to_thread(main, [*argv, *base])  # the CLI is synchronous; the API runs here
        return code, capsys.readouterr().out

    code, out = await cli("report", tenant)
    assert code == 0
    assert "/items/*" in out
    assert "$.name" in out
    assert "noise" in out
    assert f"{tenant}: divergence rate 50.0%" in out
    report: dict[str, Any] = (
        await reported.admin.get("/divergence/report", params={"tenant": tenant})
    ).json()
    example = report["tenants"][0]["top_fields"][0]["example_ids"][0]
    code, out = await cli("show-divergence", tenant, str(example), "--width", "120")
    assert code == 0
    assert "GET /items/1" in out
    assert "serving (old)" in out
    assert any('"alpha"' in line and "*" in line and '"beta"' in line for line in out.splitlines())
    code, out = await cli("reset-counters", tenant)
    assert code == 0
    assert "reset (1 resources)" in out
    assert (await reported.admin.get("/divergence/report", params={"tenant": tenant})).json() == {
        "tenants": []
    }
    code, _out = await cli("show-divergence", tenant, "999999999")
    assert code == 1
