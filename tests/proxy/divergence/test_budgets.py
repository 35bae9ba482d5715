"""Sampling and budgets: per-tenant sample rates, a cap on shadow reads in flight per backend (the excess
skipped and counted, never queued), and the shadow timeout."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from routing.phases import Phase, Side
from tests.proxy.divergence.conftest import Answer, ScriptedPair
from tests.support.proxies import Proxy, ProxyFactory
from tests.support.waits import wait_for


def h(tenant: str) -> dict[str, str]:
    return {"X-Tenant-ID": tenant}


async def test_sample_rate_per_tenant(make_proxy: ProxyFactory, scripted: ScriptedPair, tenant: str) -> None:
    never, always, half = f"{tenant}-never", f"{tenant}-always", f"{tenant}-half"
    proxy: Proxy = await make_proxy(
        {
            "backends": scripted.backends(),
            "shadow": {"sample_rate": 1.0},
            "divergence": {
                "policy": {
                    "sampling": {"tenants": {never: 0, half: 50}},  # `always` follows shadow.sample_rate
                    "noise": {"sample_rate": 0},
                }
            },
            "log_level": "error",
        }
    )
    for name in (never, always, half):
        await proxy.set_phase_direct(name, Phase.SHADOW)
        scripted.old.set("/items/1", {"id": 1})
        scripted.new.set("/items/1", {"id": 1})
    before = (await proxy.stats())["shadow"]
    for _ in range(60):
        for name in (never, always, half):
            assert (await proxy.client.get("/items/1", headers=h(name))).status_code == 200

    # Sampling is decided before a read is answered, so `unsampled` is final now; the sampled shadow reads
    # may still be on their way to new: wait until every read of `half` is either unsampled or seen there.
    async def all_accounted() -> bool:
        unsampled = (await proxy.stats())["shadow"]["unsampled"] - before["unsampled"]
        seen_half = scripted.new.count("GET", "/items/1", half)
        return scripted.new.count("GET", "/items/1", always) == 60 and unsampled - 60 + seen_half == 60

    await wait_for(all_accounted, timeout_s=10)
    assert scripted.new.count("GET", "/items/1", never) == 0
    shadowed_half = scripted.new.count("GET", "/items/1", half)
    assert 10 < shadowed_half < 50, shadowed_half  # binomial(60, 0.5): 5 standard deviations either way
    after = (await proxy.stats())["shadow"]
    assert after["unsampled"] - before["unsampled"] == 60 + (60 - shadowed_half)
    assert after["skipped"] == before["skipped"]  # not sampled is not "skipped for lack of budget"


@pytest.mark.slow
async def test_backlog_stays_bounded_when_the_new_side_hangs(
    make_proxy: ProxyFactory, scripted: ScriptedPair, tenant: str
) -> None:
    cap = 3
    proxy: Proxy = await make_proxy(
        {
            "backends": scripted.backends(),
            "shadow": {"max_in_flight": cap, "timeout_s": 3.0},
            "divergence": {"policy": {"noise": {"sample_rate": 0}}, "flush_interval_s": 0.2},
            "log_level": "error",
        }
    )
    live = f"{tenant}-live"
    await proxy.set_phase_direct(tenant, Phase.SHADOW)  # shadow reads go to new
    await proxy.set_phase_direct(live, Phase.LIVE)  # shadow reads go to old
    scripted.old.set("/items/1", {"id": 1})
    scripted.new.answers["/items/1"] = lambda: Answer(body=b'{"id": 1}', delay_s=6.0)  # new hangs
    shadow = proxy.runtime.shadow
    before = (await proxy.stats())["shadow"]

    peak = 0
    started = time.monotonic()
    for _ in range(40):
        response = await proxy.client.get("/items/1", headers=h(tenant))
        assert response.status_code == 200
        assert response.headers["x-cutover-served-by"] == "old"
        peak = max(peak, shadow.in_flight_to(Side.NEW))
    elapsed = time.monotonic() - started
    assert elapsed < 2.5, f"clients waited for the hanging shadow side ({elapsed:.2f} s for 40 reads)"
    assert peak == cap
    assert scripted.new.count("GET", "/items/1", tenant) <= cap  # the excess never reached new
    after = (await proxy.stats())["shadow"]
    assert after["skipped"] - before["skipped"] == 40 - cap

    # The cap is per backend: the other side's shadow reads are still admitted meanwhile.
    scripted.new.set("/items/2", {"id": 2})
    scripted.old.set("/items/2", {"id": 2})
    assert (await proxy.client.get("/items/2", headers=h(live))).headers["x-cutover-served-by"] == "new"

    async def old_shadowed() -> bool:
        return scripted.old.count("GET", "/items/2", live) == 1

    await wait_for(old_shadowed, timeout_s=3)

    # The shadow timeout gives the slots back: the hung reads are counted as failed.
    async def drained() -> bool:
        return shadow.in_flight_to(Side.NEW) == 0

    await wait_for(drained, timeout_s=5)
    after = (await proxy.stats())["shadow"]
    assert after["failed"] - before["failed"] == cap

    async def skipped_in_store() -> Any:
        return await proxy.runtime.pool.fetchval(
            "SELECT skipped FROM cutover_shadow_count WHERE tenant = $1 AND resource = '/items/*'", tenant
        )

    async def recorded() -> bool:
        return bool(await skipped_in_store() == 40 - cap)

    await wait_for(recorded, timeout_s=5)
    # Admission works again once the slots are back.
    assert (await proxy.client.get("/items/1", headers=h(tenant))).status_code == 200
    assert shadow.in_flight_to(Side.NEW) == 1
    await asyncio.sleep(0)


@pytest.mark.slow
async def test_a_read_admitted_before_the_shadow_process_restarts_leaves_no_slot_behind(
    make_proxy: ProxyFactory, scripted: ScriptedPair, tenant: str
) -> None:
    """The restart gives every slot back at once; a read admitted before it and answered after it must
    not give its slot back a second time (the count would go below zero and the cap would be exceeded)."""
    proxy: Proxy = await make_proxy(
        {
            "backends": scripted.backends(),
            "shadow": {"max_in_flight": 1},
            "divergence": {"policy": {"noise": {"sample_rate": 0}}},
            "log_level": "error",
        }
    )
    await proxy.set_phase_direct(tenant, Phase.SHADOW)
    scripted.old.answers["/items/1"] = Answer(body=b'{"id": 1}', delay_s=1.5)
    scripted.new.set("/items/1", {"id": 1})
    shadow = proxy.runtime.shadow
    read = asyncio.create_task(proxy.client.get("/items/1", headers=h(tenant)))

    async def admitted() -> bool:
        return shadow.in_flight_to(Side.NEW) == 1

    await wait_for(admitted, timeout_s=2)
    process = shadow._process  # the shadow process dies while the read is still being served
    assert process is not None
    process.kill()
    response = await read
    assert response.status_code == 200

    async def restarted() -> bool:
        return shadow.available

    await wait_for(restarted, timeout_s=15)
    await asyncio.sleep(0.5)  # a job sent to the new process would have completed by now
    assert shadow.in_flight_to(Side.NEW) == 0
