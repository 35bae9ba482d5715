"""One definition of the shadow figures everywhere: a read whose shadow side failed is `failed`, never
`divergent`, in the process counters (`/stats`, `cutover status`, the status page) as in the fleet's
report (`cutover report`), and the divergence rate is divergent / answered in both."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from proxy.cli.main import main
from routing.phases import Phase
from tests.support.demo_backends import DemoBackend
from tests.support.proxies import ProxyFactory
from tests.support.waits import wait_for


async def test_a_failed_shadow_read_is_failed_not_divergent_in_status_and_report(
    make_proxy: ProxyFactory, new: DemoBackend, capsys: pytest.CaptureFixture[str]
) -> None:
    proxy = await make_proxy({"shadow": {"timeout_s": 0.3}, "divergence": {"flush_interval_s": 0.1}})
    tenant = f"sr-{uuid.uuid4().hex[:8]}"
    await proxy.set_phase_api(tenant, Phase.SHADOW)
    await new.control(delay_ms=1500)  # the shadow read to new times out: nothing to compare
    response = await proxy.client.get("/items", headers={"X-Tenant-ID": tenant})
    assert response.status_code == 200
    assert response.headers["x-cutover-served-by"] == "old"

    async def compared() -> bool:
        return bool((await proxy.stats())["shadow"]["compared"] == 1)

    await wait_for(compared, timeout_s=10)
    shadow = (await proxy.stats())["shadow"]
    assert (shadow["failed"], shadow["divergent"], shadow["divergence_rate"]) == (1, 0, None)

    async def reported() -> bool:
        body = (await proxy.admin.get("/divergence/report", params={"tenant": tenant})).json()
        return bool(body["tenants"]) and body["tenants"][0]["totals"]["compared"] == 1

    await wait_for(reported, timeout_s=10)
    totals = (await proxy.admin.get("/divergence/report", params={"tenant": tenant})).json()["tenants"][0]
    assert (totals["totals"]["failed"], totals["totals"]["divergent"]) == (1, 0)
    assert totals["totals"]["divergence_rate"] is None
    assert totals["totals"]["new_error_rate"] == 1.0

    options = ["--admin-url", proxy.admin_server.url, "--token", proxy.tokens.read]
    assert await asyncio.to_thread(main, ["status", *options]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("shadow:"))
    assert "divergent 0, failed 1, divergence rate -," in line
