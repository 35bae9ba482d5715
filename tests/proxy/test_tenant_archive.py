"""Archived tenants: gone from listings, fleet selection and the status page, phase frozen, record kept;
archiving and unarchiving audited, through the admin API and the CLI."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from proxy.cli.main import main
from routing.phases import Phase
from tests.support.proxies import Proxy, ProxyFactory
from tests.support.waits import wait_for


@pytest.fixture
def prefix() -> str:
    return f"ar{uuid.uuid4().hex[:8]}"


async def cutover(proxy: Proxy, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    target = ["--admin-url", proxy.admin_server.url, "--token", proxy.tokens.write]
    code = await asyncio.to_thread(main, [*argv, *target])
    out, _ = capsys.readouterr()
    return code, out


async def listed(proxy: Proxy) -> set[str]:
    body = (await proxy.admin.get("/tenants", params={"limit": 5000})).json()
    return {t["tenant"] for t in body["tenants"]} | {t["tenant"] for t in body["seen_in_traffic"]}


async def test_an_archived_tenant_is_hidden_frozen_and_kept(
    make_proxy: ProxyFactory, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    proxy = await make_proxy({"operator": {"seen_tenants": {"flush_interval_s": 0.1}}})
    kept, gone, seen = f"{prefix}-kept", f"{prefix}-gone", f"{prefix}-seen"
    for tenant in (kept, gone):
        await proxy.set_phase_api(tenant, Phase.DUAL_WRITE)
    assert (await proxy.client.get("/items", headers={"X-Tenant-ID": seen})).status_code == 200

    async def recorded() -> bool:
        return seen in await listed(proxy)

    await wait_for(recorded, timeout_s=5)

    code, out = await cutover(proxy, capsys, "tenant", "archive", gone, "--reason", "load test over")
    assert code == 0
    assert f"{gone} archived (by {proxy.tokens.write_name}" in out
    code, out = await cutover(proxy, capsys, "tenant", "archive", seen, "--reason", "made up", "--json")
    assert code == 0
    assert json.loads(out)["changed"] is True
    # Twice is not an error, and audits nothing more.
    again = await proxy.admin.post(f"/tenants/{gone}/archive", json={"reason": "again"})
    assert again.status_code == 200
    assert again.json()["changed"] is False

    # Listings and fleet selection leave them out; the archive lists them.
    names = await listed(proxy)
    assert kept in names
    assert gone not in names
    assert seen not in names
    code, out = await cutover(proxy, capsys, "tenants", "--archived")
    assert code == 0
    assert gone in out
    assert seen in out
    assert "load test over" in out
    code, out = await cutover(
        proxy,
        capsys,
        "phase",
        "set",
        "--match",
        f"{prefix}-*",
        "shadow",
        "--reason",
        "w",
        "--dry-run",
        "--json",
    )
    assert code == 0, out
    assert [step["tenant"] for step in json.loads(out)["plan"]] == [kept]

    # The status page does not show them.
    data = (await proxy.admin.get("/status/data")).json()
    shown = {t["tenant"] for entry in data["tenants"]["by_phase"].values() for t in entry["tenants"]}
    assert kept in shown
    assert gone not in shown

    # Its phase is frozen, by name too (a fleet move's check refuses it the same way)...
    refused = await proxy.admin.put(f"/tenants/{gone}/phase", json={"phase": "shadow", "reason": "x"})
    assert refused.status_code == 409
    assert refused.json()["error"] == "tenant_archived"
    assert "load test over" in refused.json()["detail"]
    # ... and its record is kept: the phase row, its audit, and the archive's own audit.
    assert (await proxy.admin.get(f"/tenants/{gone}")).json()["phase"] == "dual_write"
    assert (await proxy.admin.get("/audit", params={"tenant": gone})).json()["entries"]
    state = (await proxy.admin.get(f"/archive/{gone}")).json()
    assert state["archived"]["reason"] == "load test over"
    assert [(e["action"], e["actor"]) for e in state["audit"]] == [("archive", proxy.tokens.write_name)]

    code, out = await cutover(proxy, capsys, "tenant", "unarchive", gone, "--reason", "needed again")
    assert code == 0
    assert f"{gone} unarchived" in out
    assert gone in await listed(proxy)
    await proxy.set_phase_api(gone, Phase.SHADOW)
    state = (await proxy.admin.get(f"/archive/{gone}")).json()
    assert state["archived"] is None
    assert [e["action"] for e in state["audit"]] == ["unarchive", "archive"]


async def test_archive_needs_a_known_tenant_a_reason_and_write_scope(proxy: Proxy, prefix: str) -> None:
    unknown = await proxy.admin.post(f"/tenants/{prefix}-typo/archive", json={"reason": "x"})
    assert unknown.status_code == 404
    assert unknown.json()["error"] == "unknown_tenant"
    tenant = f"{prefix}-t"
    await proxy.set_phase_api(tenant, Phase.DUAL_WRITE)
    no_reason = await proxy.admin.post(f"/tenants/{tenant}/archive", json={})
    assert no_reason.status_code == 422
    read_only = await proxy.anon_admin.post(
        f"/tenants/{tenant}/archive",
        json={"reason": "x"},
        headers={"Authorization": f"Bearer {proxy.tokens.read}"},
    )
    assert read_only.status_code == 403
    assert (await proxy.admin.get(f"/archive/{tenant}")).json()["archived"] is None
