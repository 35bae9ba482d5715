"""Every phase change, whoever asks (the admin API, a fleet move through it, the automatic rollback), is
refused by the same guards: the entry points differ only in who they name as the actor."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from proxy.cli.main import main
from routing.phases import Phase
from tests.backfill.rest_sides import JSON_SERVER_ITEMS
from tests.support.proxies import Proxy, ProxyFactory
from tests.support.waits import wait_for

ROLLBACK = {
    "enabled": True,
    "window_s": 60,
    "min_samples": 10,
    "max_divergence_rate": 0.2,
    "max_new_error_rate": 0.2,
    "check_interval_s": 0.1,
}


async def archive(proxy: Proxy, tenant: str) -> None:
    response = await proxy.admin.post(f"/tenants/{tenant}/archive", json={"reason": "done with"})
    assert response.status_code == 200, response.text


async def phase_of(proxy: Proxy, tenant: str) -> str:
    return str((await proxy.admin.get(f"/tenants/{tenant}")).json()["phase"])


@pytest.mark.slow
async def test_the_automatic_rollback_leaves_an_archived_tenant_where_it_is(
    make_proxy: ProxyFactory, tenant: str
) -> None:
    """An archived tenant's phase is frozen until it is unarchived: the API refuses to move it, and so
    must the rollback, whatever its figures say."""
    proxy = await make_proxy({"divergence": {"policy": {"rollback": ROLLBACK}}, "log_level": "error"})
    frozen, control = f"{tenant}-frozen", f"{tenant}-control"
    for name in (frozen, control):
        await proxy.set_phase_direct(name, Phase.LIVE)
    await archive(proxy, frozen)
    refused = await proxy.admin.put(f"/tenants/{frozen}/phase", json={"phase": "shadow", "reason": "x"})
    assert refused.status_code == 409
    assert refused.json()["error"] == "tenant_archived"
    await proxy.runtime.pool.execute(
        "INSERT INTO cutover_shadow_window (tenant, phase, at, compared, answered, divergent, new_errors)"
        " SELECT t, 'live', now() + interval '1 second', 50, 50, 50, 0 FROM unnest($1::text[]) AS t",
        [frozen, control],
    )

    async def control_rolled_back() -> bool:
        return await phase_of(proxy, control) == "shadow"

    await wait_for(control_rolled_back, timeout_s=5)
    await asyncio.sleep(1.0)  # the pass that moved it, and later ones, also saw the frozen tenant
    assert await phase_of(proxy, frozen) == "live"
    assert frozen not in (await proxy.stats())["auto_rollbacks"]


async def test_a_dry_run_answers_with_the_error_the_move_gets(proxy: Proxy, tenant: str) -> None:
    """Fleet moves check every tenant with a dry run before they move any: it must refuse a change the
    way the move itself would, whichever of its checks fails first."""
    await proxy.set_phase_api(tenant, Phase.DUAL_WRITE)
    version = (await proxy.admin.get(f"/tenants/{tenant}")).json()["version"]
    change = {"phase": "complete", "reason": "x", "expected_version": version + 5, "force": True}
    dry = await proxy.admin.put(f"/tenants/{tenant}/phase", json={**change, "dry_run": True})
    moved = await proxy.admin.put(f"/tenants/{tenant}/phase", json=change)
    assert (moved.status_code, moved.json()["error"]) == (422, "phase_move_not_allowed")
    assert (dry.status_code, dry.json()["error"]) == (moved.status_code, moved.json()["error"])
    assert await phase_of(proxy, tenant) == "dual_write"


async def test_a_fleet_move_is_refused_by_the_guards_of_a_single_move(
    make_proxy: ProxyFactory, tenant: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The REST copy gate (no copy of the configured resource has run): each tenant's check is refused
    with the single move's error, and nothing moves."""
    proxy = await make_proxy({"data": {"rest": {"resources": [JSON_SERVER_ITEMS]}}})
    tenants = [f"{tenant}-a", f"{tenant}-b"]
    for name in tenants:
        await proxy.set_phase_api(name, Phase.SHADOW)
    single = await proxy.admin.put(f"/tenants/{tenants[0]}/phase", json={"phase": "live", "reason": "x"})
    assert (single.status_code, single.json()["error"]) == (422, "copy_unfinished")
    base = ["--admin-url", proxy.admin_server.url, "--token", proxy.tokens.write]
    argv = ["phase", "set", *base, "--tenants", ",".join(tenants), "live", "--reason", "wave", "--json"]
    code = await asyncio.to_thread(main, argv)
    out, _ = capsys.readouterr()
    assert code == 1
    report: dict[str, Any] = json.loads(out)
    assert report["moved"] == []
    assert [(r["status"], r["error"]) for r in report["refusals"]] == [(422, "copy_unfinished")] * 2
    assert [await phase_of(proxy, name) for name in tenants] == ["shadow", "shadow"]
