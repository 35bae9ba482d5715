"""The `complete` gate through the real admin API: refused (422) without a passing verification newer
than the tenant's last phase change, with the failing, stale or missing report named; `force` overrides;
stored reports are listed by the admin API and the CLI."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from backfill.runner import BackfillOptions, run_backfill
from backfill.verify_run import VerifyOptions, run_verify
from proxy.cli.main import main
from routing.phases import Phase
from tests.backfill.conftest import DataEnv, create_orders, fill_orders, orders_table, unique
from tests.support.proxies import Proxy, ProxyFactory


async def _complete(proxy: Proxy, tenant: str, **extra: Any) -> Any:
    return await proxy.admin.put(
        f"/tenants/{tenant}/phase", json={"phase": "complete", "reason": "old side retired", **extra}
    )


async def _setup(make_proxy: ProxyFactory, data_env: DataEnv) -> tuple[Proxy, list[dict[str, Any]], str]:
    old_table, new_table = unique("g_old"), unique("g_new")
    await create_orders(data_env, old_table, [new_table])
    tables = [orders_table("orders", old_table, new_table)]
    proxy = await make_proxy({"data": data_env.raw_settings(tables)["data"]})
    return proxy, tables, old_table


async def test_complete_needs_a_passing_verification_newer_than_the_last_phase_change(
    make_proxy: ProxyFactory, data_env: DataEnv, tenant: str, capsys: pytest.CaptureFixture[str]
) -> None:
    proxy, tables, old_table = await _setup(make_proxy, data_env)
    new_table = tables[0]["new"]["table"]
    await fill_orders(data_env, old_table, tenant, 3_000)
    await proxy.set_phase_api(tenant, Phase.DUAL_WRITE)
    settings = data_env.settings(tables)
    await run_backfill(settings, BackfillOptions(tenant, chunk_rows=1000))
    early = await run_verify(settings, VerifyOptions(tenant))
    assert early.passed
    await proxy.set_phase_api(tenant, Phase.RAMPDOWN)

    refused = await _complete(proxy, tenant)
    assert refused.status_code == 422, refused.text
    body = refused.json()
    assert body["error"] == "verify_required"
    assert f"report {early.report_ids['orders']}" in body["detail"]
    assert "last phase change" in body["detail"]
    assert [(r["table"], r["problem"]) for r in body["reports"]] == [("orders", "stale")]

    await data_env.execute(data_env.new_url, f"UPDATE {new_table} SET quantity = -1 WHERE id = 5")
    failed = await run_verify(settings, VerifyOptions(tenant))
    assert not failed.passed
    refused = await _complete(proxy, tenant)
    assert refused.status_code == 422
    body = refused.json()
    assert f"report {failed.report_ids['orders']} failed (different 1)" in body["detail"]
    assert body["reports"][0]["problem"] == "failed"
    assert (await proxy.admin.get(f"/tenants/{tenant}")).json()["phase"] == "rampdown"

    listed = await proxy.admin.get(f"/tenants/{tenant}/verify-reports")
    assert listed.status_code == 200
    reports = listed.json()["reports"]
    assert [r["id"] for r in reports] == [failed.report_ids["orders"], early.report_ids["orders"]]
    assert [r["passed"] for r in reports] == [False, True]
    one = await proxy.admin.get(f"/verify-reports/{failed.report_ids['orders']}")
    assert one.json()["report"]["keys"]["different"] == [["5"]]
    assert (await proxy.admin.get("/verify-reports/987654321")).status_code == 404
    assert (await proxy.anon_admin.get(f"/tenants/{tenant}/verify-reports")).status_code == 401

    cli = ["verify-reports", tenant, "--admin-url", proxy.admin_server.url, "--token", proxy.tokens.read]
    assert await asyncio.to_thread(main, cli) == 0
    assert "FAIL" in capsys.readouterr().out
    assert await asyncio.to_thread(main, [*cli, "--id", str(failed.report_ids["orders"])]) == 0
    assert "quantity: 5 -> -1" in capsys.readouterr().out

    await data_env.execute(data_env.new_url, f"UPDATE {new_table} SET quantity = 5 WHERE id = 5")
    assert (await run_verify(settings, VerifyOptions(tenant))).passed
    moved = await _complete(proxy, tenant)
    assert moved.status_code == 200, moved.text
    assert moved.json()["phase"] == "complete"


async def test_missing_report_is_named_and_force_overrides(
    make_proxy: ProxyFactory, data_env: DataEnv, tenant: str
) -> None:
    proxy, _tables, _old = await _setup(make_proxy, data_env)
    await proxy.set_phase_api(tenant, Phase.RAMPDOWN)
    refused = await _complete(proxy, tenant)
    assert refused.status_code == 422
    assert refused.json()["reports"] == [{"table": "orders", "problem": "missing"}]
    assert "orders: no verification report" in refused.json()["detail"]
    forced = await _complete(proxy, tenant, force=True)
    assert forced.status_code == 200
    assert forced.json()["phase"] == "complete"


async def test_gate_can_be_switched_off(make_proxy: ProxyFactory, data_env: DataEnv, tenant: str) -> None:
    table = orders_table("orders", unique("g_old"), unique("g_new"))
    data = data_env.raw_settings([table], gate={"require_verify": False})["data"]
    proxy = await make_proxy({"data": data})
    await proxy.set_phase_api(tenant, Phase.RAMPDOWN)
    assert (await _complete(proxy, tenant)).status_code == 200


async def test_a_passing_report_of_the_earlier_verify_does_not_open_the_gate(
    make_proxy: ProxyFactory, data_env: DataEnv, tenant: str
) -> None:
    # Verify version 1 digested rows with PostgreSQL's own hashes and passed a numeric whose sign flipped.
    proxy, tables, old_table = await _setup(make_proxy, data_env)
    await fill_orders(data_env, old_table, tenant, 500)
    await proxy.set_phase_api(tenant, Phase.DUAL_WRITE)
    settings = data_env.settings(tables)
    await run_backfill(settings, BackfillOptions(tenant))
    await proxy.set_phase_api(tenant, Phase.RAMPDOWN)
    run = await run_verify(settings, VerifyOptions(tenant))
    assert run.passed
    report_id = run.report_ids["orders"]
    # As the earlier release stored it: the same report without `verify_version`.
    await data_env.execute(
        data_env.control_url,
        "UPDATE cutover_verify_report SET report = report - 'verify_version' WHERE id = $1",
        report_id,
    )
    refused = await _complete(proxy, tenant)
    assert refused.status_code == 422, refused.text
    assert refused.json()["reports"][0]["problem"] == "stale"
    assert f"report {report_id}" in refused.json()["detail"]
    assert "verify version 1" in refused.json()["detail"]

    again = await run_verify(settings, VerifyOptions(tenant))
    assert again.passed
    assert (await _complete(proxy, tenant)).status_code == 200
