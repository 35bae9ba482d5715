"""Fleet moves end to end: `cutover phase set --tenants/--match/--percent` through a running admin API,
including tenants known only from traffic (recorded by the data plane and flushed to PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
import redis.asyncio as aioredis

from proxy.cli.main import main
from proxy.control.fleet import bucket_of
from routing.phases import Phase
from tests.proxy.test_tenant_health import add_dead_letter
from tests.support.proxies import Proxy, ProxyFactory
from tests.support.waits import wait_for


@pytest.fixture
async def fleet_proxy(make_proxy: ProxyFactory) -> Proxy:
    return await make_proxy({"operator": {"seen_tenants": {"flush_interval_s": 0.1}}})


@pytest.fixture
def prefix() -> str:
    return f"fl{uuid.uuid4().hex[:8]}"


async def cutover(proxy: Proxy, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the real CLI (in a thread: its HTTP client is synchronous, the servers share this loop)."""
    base = ["--admin-url", proxy.admin_server.url, "--token", proxy.tokens.write]
    code = await asyncio.to_thread(main, [*argv[:2], *base, *argv[2:]])
    out, err = capsys.readouterr()
    return code, out, err


async def phases(proxy: Proxy, tenants: list[str]) -> dict[str, str]:
    result = {}
    for tenant in tenants:
        result[tenant] = (await proxy.admin.get(f"/tenants/{tenant}")).json()["phase"]
    return result


async def audit_count(proxy: Proxy) -> int:
    return len((await proxy.admin.get("/audit", params={"limit": 1000})).json()["entries"])


async def test_tenants_seen_in_traffic_are_listed_and_moved_by_pattern(
    fleet_proxy: Proxy, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    proxy = fleet_proxy
    seen_only = [f"{prefix}-eu-{n}" for n in range(3)]
    for tenant in [*seen_only, f"{prefix}-us-0"]:
        response = await proxy.client.get("/items", headers={"X-Tenant-ID": tenant})
        assert response.status_code == 200
    await proxy.set_phase_api(f"{prefix}-eu-row", Phase.DUAL_WRITE)

    async def recorded() -> bool:
        listed = (await proxy.admin.get("/tenants")).json()
        return {t["tenant"] for t in listed["seen_in_traffic"]} >= {*seen_only, f"{prefix}-us-0"}

    await wait_for(recorded, timeout_s=5)
    listed = (await proxy.admin.get("/tenants")).json()
    seen_names = {t["tenant"] for t in listed["seen_in_traffic"]}
    assert f"{prefix}-eu-row" not in seen_names  # it has a phase row: listed under "tenants"
    assert all(t["first_seen"] and t["last_seen"] for t in listed["seen_in_traffic"])

    before = await audit_count(proxy)
    code, out, _ = await cutover(
        proxy,
        capsys,
        "phase",
        "set",
        "--match",
        f"{prefix}-eu-*",
        "dual_write",
        "--reason",
        "wave 1",
        "--dry-run",
    )
    assert code == 0
    assert f"plan: 4 tenants selected by --match '{prefix}-eu-*'" in out
    assert "3 to move, 1 already there, 0 not allowed" in out
    assert await audit_count(proxy) == before  # a dry run changes nothing
    assert set((await phases(proxy, seen_only)).values()) == {"legacy"}

    code, out, _ = await cutover(
        proxy, capsys, "phase", "set", "--match", f"{prefix}-eu-*", "dual_write", "--reason", "wave 1"
    )
    assert code == 0, out
    assert out.strip().endswith("moved 3 of 3")
    assert [
        line.split()[1].rstrip(":") for line in out.splitlines() if line.startswith("moved   ")
    ] == sorted(seen_only)
    assert set((await phases(proxy, [*seen_only, f"{prefix}-us-0"])).values()) == {"dual_write", "legacy"}
    assert (await phases(proxy, [f"{prefix}-us-0"]))[f"{prefix}-us-0"] == "legacy"
    entries = (await proxy.admin.get("/audit", params={"tenant": seen_only[1]})).json()["entries"]
    assert len(entries) == 1
    assert entries[0]["actor"] == proxy.tokens.write_name
    assert entries[0]["reason"] == f"wave 1 [fleet move 2/3: --match '{prefix}-eu-*']"


async def test_every_move_is_checked_first_and_nothing_moves_when_one_would_be_refused(
    proxy: Proxy, prefix: str, capsys: pytest.CaptureFixture[str], redis_client: aioredis.Redis
) -> None:
    """The whole plan is checked against the single move's guards before anything moves: one tenant with
    dead letters and one a step behind stop the wave, every refusal is listed, and nothing is audited."""
    a, b, c, d = (f"{prefix}-{n}" for n in "abcd")
    for tenant in (a, b, d):
        await proxy.set_phase_api(tenant, Phase.DUAL_WRITE)
    await proxy.set_phase_api(c, Phase.DUAL_WRITE)
    await proxy.set_phase_api(c, Phase.LEGACY)  # a row, back in legacy: legacy -> shadow skips a step
    key, entry = await add_dead_letter(redis_client, proxy, b)
    try:
        before = await audit_count(proxy)
        code, out, _ = await cutover(
            proxy,
            capsys,
            "phase",
            "set",
            "--tenants",
            f"{a},{b},{c},{d}",
            "shadow",
            "--reason",
            "w2",
            "--json",
        )
        assert code == 1
        report: dict[str, Any] = json.loads(out)
        assert report["moved"] == []
        assert [(r["tenant"], r["stage"], r["status"], r["error"]) for r in report["refusals"]] == [
            (b, "check", 422, "dead_letters"),
            (c, "check", 422, "phase_move_not_allowed"),
        ]
        assert report["refusals"][1]["allowed"] == ["dual_write"]
        assert report["refused"] == report["refusals"][0]
        assert report["not_attempted"] == [a, b, c, d]
        assert await audit_count(proxy) == before, "a check moved something"
        assert await phases(proxy, [a, b, c, d]) == {
            a: "dual_write",
            b: "dual_write",
            c: "legacy",
            d: "dual_write",
        }

        # In words: the plan marks each refusal, and the summary says nothing moved and why.
        code, out, _ = await cutover(
            proxy, capsys, "phase", "set", "--tenants", f"{a},{b},{c},{d}", "shadow", "--reason", "w2"
        )
        assert code == 1
        assert f"{b}  dual_write -> shadow  (REFUSED: dead_letters:" in out
        assert "checked 4 moves with the admin API: 2 would be refused; nothing was moved" in out
        assert f"REFUSED {c}: phase_move_not_allowed:" in out
        assert "(allowed: dual_write)" in out

        # --continue-on-refusal moves the others, and still exits 1: not everything moved.
        code, out, _ = await cutover(
            proxy,
            capsys,
            "phase",
            "set",
            "--tenants",
            f"{a},{b},{c},{d}",
            "shadow",
            "--reason",
            "w2",
            "--continue-on-refusal",
        )
        assert code == 1
        assert f"moved 2 of 4; refused {b} (dead_letters); refused {c} (phase_move_not_allowed)" in out
        assert await phases(proxy, [a, b, c, d]) == {a: "shadow", b: "dual_write", c: "legacy", d: "shadow"}
    finally:
        await redis_client.xdel(key, entry)


async def test_a_tenant_named_by_mistake_is_flagged_before_anything_is_created(
    proxy: Proxy, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    known, typo = f"{prefix}-acme", f"{prefix}-amce"
    await proxy.set_phase_api(known, Phase.DUAL_WRITE)
    before = await audit_count(proxy)
    code, out, _ = await cutover(
        proxy, capsys, "phase", "set", "--tenants", f"{known},{typo}", "shadow", "--reason", "w", "--json"
    )
    assert code == 1
    report = json.loads(out)
    assert report["error"] == "unknown_tenants"
    assert report["unknown"] == [typo]
    assert typo in report["detail"]
    assert "--create" in report["detail"]
    assert report["moved"] == []
    assert await audit_count(proxy) == before
    assert (await proxy.admin.get(f"/tenants/{typo}")).json()["version"] == 0  # no row was made
    code, out, _ = await cutover(
        proxy, capsys, "phase", "set", "--tenants", f"{known},{typo}", "shadow", "--reason", "w"
    )
    assert code == 1
    assert "(UNKNOWN: no phase row, not seen in traffic)" in out
    assert "REFUSED: unknown_tenants" in out
    # --create: the operator means it. The typo is a step behind (legacy), so it needs dual_write first.
    code, out, _ = await cutover(
        proxy,
        capsys,
        "phase",
        "set",
        "--tenants",
        f"{known},{typo}",
        "dual_write",
        "--reason",
        "w",
        "--create",
    )
    assert code == 0, out
    assert await phases(proxy, [known, typo]) == {known: "dual_write", typo: "dual_write"}


async def test_a_dry_run_change_is_checked_like_a_move_and_changes_nothing(proxy: Proxy, prefix: str) -> None:
    tenant = f"{prefix}-dry"
    await proxy.set_phase_api(tenant, Phase.DUAL_WRITE)
    before = await audit_count(proxy)
    body = {"phase": "shadow", "reason": "check", "dry_run": True}
    answer = await proxy.admin.put(f"/tenants/{tenant}/phase", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        **answer.json(),
        "tenant": tenant,
        "phase": "dual_write",
        "to": "shadow",
        "dry_run": True,
    }
    conflict = await proxy.admin.put(f"/tenants/{tenant}/phase", json={**body, "expected_version": 7})
    assert conflict.status_code == 409
    assert conflict.json()["error"] == "version_conflict"
    skip = await proxy.admin.put(f"/tenants/{tenant}/phase", json={**body, "phase": "live"})
    assert skip.status_code == 422
    assert skip.json()["error"] == "phase_move_not_allowed"
    read_only = await proxy.anon_admin.put(
        f"/tenants/{tenant}/phase", json=body, headers={"Authorization": f"Bearer {proxy.tokens.read}"}
    )
    assert read_only.status_code == 403  # a check is a write route like the move
    assert await audit_count(proxy) == before
    assert (await phases(proxy, [tenant]))[tenant] == "dual_write"


async def test_a_larger_percentage_only_adds(
    proxy: Proxy, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fleet = [f"{prefix}-{n:02d}" for n in range(24)]
    for tenant in fleet:  # known through phase rows: dual_write, to be moved on to shadow
        await proxy.set_phase_api(tenant, Phase.DUAL_WRITE)
    runs = []
    for percent in ("30", "70"):
        code, out, _ = await cutover(
            proxy,
            capsys,
            "phase",
            "set",
            "--match",
            f"{prefix}-*",
            "--percent",
            percent,
            "shadow",
            "--reason",
            f"{percent} %",
            "--json",
        )
        assert code == 0, out
        runs.append(json.loads(out))
    first = {m["tenant"] for m in runs[0]["moved"]}
    second_plan = {step["tenant"]: step["plan"] for step in runs[1]["plan"]}
    assert first == {t for t in fleet if bucket_of(t) < 30}
    assert first
    assert first < set(second_plan)
    assert {t for t, kind in second_plan.items() if kind == "already_there"} == first
    assert {m["tenant"] for m in runs[1]["moved"]} == set(second_plan) - first
    current = await phases(proxy, fleet)
    assert {t for t, p in current.items() if p == "shadow"} == set(second_plan)


async def test_usage_errors(proxy: Proxy, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = await cutover(proxy, capsys, "phase", "set", "dual_write", "--reason", "x")
    assert code == 2
    assert "name a TENANT, or select tenants" in err
    code, _, err = await cutover(
        proxy, capsys, "phase", "set", "a", "dual_write", "--tenants", "b", "--reason", "x"
    )
    assert code == 2
    assert "either TENANT or --tenants" in err
    code, _, err = await cutover(
        proxy, capsys, "phase", "set", "--match", "x*", "--percent", "0", "dual_write", "--reason", "x"
    )
    assert code == 2
    assert "percent must be in (0, 100]" in err


async def test_a_fleet_move_stops_where_the_worker_cannot_apply(
    make_proxy: ProxyFactory, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each tenant of a fleet move is checked with the admin API's guard: with no applier toward old,
    every move to live is refused and none is attempted."""
    resources = [{"path": "/items/{key}", "table": "items"}]
    proxy = await make_proxy(
        {
            "worker": {
                "applier": "postgres",
                "postgres": {"new": {"url": "postgresql://x@db/n", "resources": resources}},
            }
        }
    )
    a, b = f"{prefix}-a", f"{prefix}-b"
    for tenant in (a, b):
        await proxy.set_phase_api(tenant, Phase.SHADOW)
    code, out, _ = await cutover(
        proxy, capsys, "phase", "set", "--tenants", f"{a},{b}", "live", "--reason", "wave 3", "--json"
    )
    assert code == 1
    report: dict[str, Any] = json.loads(out)
    assert report["moved"] == []
    assert (report["refused"]["tenant"], report["refused"]["status"]) == (a, 422)
    assert [r["error"] for r in report["refusals"]] == ["applier_not_configured"] * 2
    assert "worker.postgres.old" in report["refused"]["detail"]
    assert report["not_attempted"] == [a, b]
    assert await phases(proxy, [a, b]) == {a: "shadow", b: "shadow"}
