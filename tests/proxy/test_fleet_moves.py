"""Fleet moves end to end: `cutover phase set --tenants/--match/--percent` through a running admin API,
including tenants known only from traffic (recorded by the data plane and flushed to PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest

from proxy.cli import main
from proxy.fleet import bucket_of
from routing.phases import Phase
from tests.conftest import Proxy, ProxyFactory, wait_for


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


async def test_stops_at_the_first_refusal_and_reports_what_moved(
    proxy: Proxy, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b, c = (f"{prefix}-{n}" for n in "abc")
    await proxy.set_phase_api(a, Phase.DUAL_WRITE)
    await proxy.set_phase_api(c, Phase.DUAL_WRITE)
    # b is still legacy: legacy -> shadow skips a step and the API refuses it.
    code, out, _ = await cutover(
        proxy, capsys, "phase", "set", "--tenants", f"{a},{b},{c}", "shadow", "--reason", "wave 2", "--json"
    )
    assert code == 1
    report: dict[str, Any] = json.loads(out)
    assert [m["tenant"] for m in report["moved"]] == [a]
    assert report["refused"]["tenant"] == b
    assert report["refused"]["status"] == 422
    assert report["refused"]["error"] == "phase_move_not_allowed"
    assert report["refused"]["allowed"] == ["dual_write"]
    assert report["not_attempted"] == [c]
    assert await phases(proxy, [a, b, c]) == {a: "shadow", b: "legacy", c: "dual_write"}

    # Table output says the same in words; a second run skips what is already there.
    code, out, _ = await cutover(
        proxy, capsys, "phase", "set", "--tenants", f"{a},{b},{c}", "shadow", "--reason", "wave 2 again"
    )
    assert code == 1
    assert f"REFUSED {b}: phase_move_not_allowed" in out
    assert f"moved 0 of 2; stopped at {b} (phase_move_not_allowed); its allowed moves: dual_write" in out
    assert f"not attempted: {c}" in out
    assert (await phases(proxy, [a]))[a] == "shadow"


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
    assert first and first < set(second_plan)  # 30 % picked a subset of what 70 % picks
    assert {t for t, kind in second_plan.items() if kind == "already_there"} == first
    assert {m["tenant"] for m in runs[1]["moved"]} == set(second_plan) - first
    current = await phases(proxy, fleet)
    assert {t for t, p in current.items() if p == "shadow"} == set(second_plan)


async def test_usage_errors(proxy: Proxy, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = await cutover(proxy, capsys, "phase", "set", "dual_write", "--reason", "x")
    assert code == 2 and "name a TENANT, or select tenants" in err
    code, _, err = await cutover(
        proxy, capsys, "phase", "set", "a", "dual_write", "--tenants", "b", "--reason", "x"
    )
    assert code == 2 and "either TENANT or --tenants" in err
    code, _, err = await cutover(
        proxy, capsys, "phase", "set", "--match", "x*", "--percent", "0", "dual_write", "--reason", "x"
    )
    assert code == 2 and "percent must be in (0, 100]" in err


async def test_a_fleet_move_stops_where_the_worker_cannot_apply(
    make_proxy: ProxyFactory, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each tenant of a fleet move goes through the admin API's guard: with no applier toward old, the
    first move to live is refused and nothing after it is attempted."""
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
    assert report["refused"]["error"] == "applier_not_configured"
    assert "worker.postgres.old" in report["refused"]["detail"]
    assert report["not_attempted"] == [b]
    assert await phases(proxy, [a, b]) == {a: "shadow", b: "shadow"}
