"""Automatic rollback: the rule (table), the window (from the counters of all proxies, since the last phase
change), and end to end through the proxy: live → shadow → dual_write on the audited path, as `auto`."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import asyncpg
import pytest

from config.divergence import DivergencePolicy, RollbackPolicy
from proxy.control.rollback import RollbackMonitor, WindowFigures, decide, window_figures
from proxy.dataplane.stats import DataPlaneStats
from proxy.shadow.job import Verdict
from proxy.shadow.tally import Outcome, Tally, write_tally
from routing.phases import Phase
from tests.proxy.divergence.conftest import ScriptedPair
from tests.support.proxies import Proxy, ProxyFactory
from tests.support.waits import wait_for

POLICY = RollbackPolicy(enabled=True, min_samples=100, max_divergence_rate=0.05, max_new_error_rate=0.1)


def figures(
    phase: Phase = Phase.SHADOW, compared: int = 200, answered: int = 200, divergent: int = 0, errors: int = 0
) -> WindowFigures:
    return WindowFigures("acme", phase, 7, compared, answered, divergent, errors)


DECISIONS: list[tuple[str, WindowFigures, RollbackPolicy, Phase | None, list[str]]] = [
    ("quiet", figures(divergent=10), POLICY, None, []),  # 5 % is not above 5 %
    (
        "divergent in shadow",
        figures(divergent=11),
        POLICY,
        Phase.DUAL_WRITE,
        ["divergence rate 5.5% (11 of 200"],
    ),
    ("divergent in live", figures(Phase.LIVE, divergent=50), POLICY, Phase.SHADOW, ["divergence rate 25.0%"]),
    (
        "new errors",
        figures(answered=150, errors=50),
        POLICY,
        Phase.DUAL_WRITE,
        ["new-side error rate 25.0% (50 of 200"],
    ),
    (
        "both",
        figures(Phase.LIVE, answered=150, divergent=30, errors=50),
        POLICY,
        Phase.SHADOW,
        ["divergence rate 20.0%", "new-side error rate 25.0%"],
    ),
    ("too few samples", figures(compared=99, answered=99, divergent=99), POLICY, None, []),
    ("too few answered for a divergence rate", figures(answered=50, divergent=50), POLICY, None, []),
    ("not a compared phase", figures(Phase.RAMPDOWN, divergent=200), POLICY, None, []),
    ("disabled", figures(divergent=200), POLICY.model_copy(update={"enabled": False}), None, []),
    (
        "disabled for the tenant",
        figures(divergent=200),
        POLICY.model_copy(update={"disabled_tenants": ["acme"]}),
        None,
        [],
    ),
]


@pytest.mark.parametrize(
    ("window", "policy", "target", "reasons"), [d[1:] for d in DECISIONS], ids=[d[0] for d in DECISIONS]
)
def test_decide(
    window: WindowFigures, policy: RollbackPolicy, target: Phase | None, reasons: list[str]
) -> None:
    decision = decide(window, policy)
    if target is None:
        assert decision is None
        return
    assert decision is not None
    assert (decision.from_phase, decision.to_phase, decision.version) == (window.phase, target, 7)
    assert decision.reason.startswith("automatic rollback: ")
    assert f"over the last 300 s in {window.phase.value}" in decision.reason
    for reason in reasons:
        assert reason in decision.reason


async def test_window_counts_all_proxies_in_the_current_phase_since_its_last_change(
    pg_pool: asyncpg.Pool, tenant: str
) -> None:
    moved, fresh = f"{tenant}-moved", f"{tenant}-fresh"
    for proxy_tally in (Tally(), Tally()):  # two proxies' flushes add up
        for name in (tenant, moved, fresh, ""):
            for verdict in (Verdict.DIVERGENT, Verdict.EQUAL, Verdict.FAILED):
                proxy_tally.add(Outcome(name, "/r", "shadow", verdict, new_error=verdict is Verdict.FAILED))
        proxy_tally.add(Outcome(tenant, "/r", "live", Verdict.DIVERGENT, False))  # another phase: not counted
        await write_tally(pg_pool, proxy_tally)
    await pg_pool.execute(
        "INSERT INTO cutover_tenant_phase (tenant, phase, version, updated_by, updated_at) VALUES"
        " ($1, 'shadow', 3, 'x', now() - interval '1 hour'),"
        " ($2, 'shadow', 4, 'x', now() + interval '2 seconds')",
        tenant,
        moved,
    )
    found = {f.tenant: f for f in await window_figures(pg_pool, window_s=60, default_phase=Phase.SHADOW)}
    assert found[tenant] == WindowFigures(tenant, Phase.SHADOW, 3, 6, 4, 2, 2)
    assert moved not in found  # everything was counted before its last change
    assert found[fresh] == WindowFigures(fresh, Phase.SHADOW, 0, 6, 4, 2, 2)  # no row: the default phase
    assert "" not in found  # requests without a tenant are never rolled back
    legacy = {f.tenant for f in await window_figures(pg_pool, window_s=60, default_phase=Phase.LEGACY)}
    assert fresh not in legacy


async def test_the_window_is_pruned_while_rollback_is_off(proxy: Proxy, tenant: str) -> None:
    """Nobody evaluates the window then, but shadow processes keep adding a row per tenant and second."""
    runtime = proxy.runtime
    await runtime.pool.execute(
        "INSERT INTO cutover_shadow_window (tenant, phase, at, compared) VALUES"
        " ($1, 'shadow', now() - interval '1 hour', 1), ($1, 'shadow', now(), 1)",
        tenant,
    )
    off = DivergencePolicy()
    assert not off.rollback.enabled
    assert 2 * off.rollback.window_s < 3600
    monitor = RollbackMonitor(
        dsn=runtime.settings.postgres_url.get_secret_value(),
        store=runtime.store,
        mover=runtime.mover,
        policy=lambda: off,
        stats=DataPlaneStats(),
    )
    monitor.start()

    async def pruned() -> bool:
        left = await runtime.pool.fetchval(
            "SELECT count(*) FROM cutover_shadow_window WHERE tenant = $1", tenant
        )
        return bool(left == 1)

    try:
        await wait_for(pruned, timeout_s=5)
    finally:
        await monitor.stop()
    assert not monitor.leading


async def test_rollback_end_to_end_through_the_proxy(
    make_proxy: ProxyFactory, scripted: ScriptedPair, tenant: str
) -> None:
    calm, exempt = f"{tenant}-calm", f"{tenant}-exempt"
    rollback = {
        "enabled": True,
        "disabled_tenants": [exempt],
        "window_s": 60,
        "min_samples": 10,
        "max_divergence_rate": 0.2,
        "max_new_error_rate": 0.2,
        "check_interval_s": 0.2,
    }
    proxy: Proxy = await make_proxy(
        {
            "backends": scripted.backends(),
            "divergence": {
                "policy": {"noise": {"sample_rate": 0}, "rollback": rollback},
                "flush_interval_s": 0.2,
            },
            "log_level": "error",
        }
    )
    for name in (tenant, exempt):
        await proxy.set_phase_direct(name, Phase.LIVE)
    await proxy.set_phase_direct(calm, Phase.SHADOW)
    scripted.old.set("/items/1", {"id": 1, "name": "a"})
    scripted.new.set("/items/1", {"error": "boom"}, status=500)  # new fails every read

    async def reads(name: str, n: int = 15) -> set[str]:
        served = set()
        for _ in range(n):
            response = await proxy.client.get("/items/1", headers={"X-Tenant-ID": name})
            assert response.status_code == 200
            assert response.json() == {"id": 1, "name": "a"}
            served.add(response.headers["x-cutover-served-by"])
        return served

    async def phase_of(name: str) -> str:
        return (await proxy.admin.get(f"/tenants/{name}")).json()["phase"]  # type: ignore[no-any-return]

    # live: new fails, the client is served by old (fallback); new's error rate passes 20 %.
    assert await reads(tenant) == {"old"}
    await reads(exempt)
    await wait_for(lambda: _is(phase_of(tenant), "shadow"), timeout_s=10)
    assert proxy.runtime.cache.phase_of(tenant) is Phase.SHADOW
    # shadow: a new window; new still fails as the shadow side, so the tenant goes one more step back.
    assert await reads(tenant) == {"old"}
    await wait_for(lambda: _is(phase_of(tenant), "dual_write"), timeout_s=10)
    # a healthy tenant stays, and so does one with rollback disabled, whatever its figures.
    scripted.new.set("/items/2", {"id": 2})
    scripted.old.set("/items/2", {"id": 2})
    for _ in range(15):
        await proxy.client.get("/items/2", headers={"X-Tenant-ID": calm})
    # A rollback that must not happen leaves nothing to wait for: five 0.2 s checks pass.
    await asyncio.sleep(1.0)
    assert (await phase_of(calm), await phase_of(exempt)) == ("shadow", "live")

    audit = (await proxy.admin.get("/audit", params={"tenant": tenant})).json()["entries"]
    moves = [(e["from"], e["to"], e["actor"]) for e in audit[:2]]
    assert moves == [("shadow", "dual_write", "auto"), ("live", "shadow", "auto")]
    assert "new-side error rate 100.0%" in audit[1]["reason"]
    assert "in live" in audit[1]["reason"]
    assert "in shadow" in audit[0]["reason"]
    rollbacks = (await proxy.stats())["auto_rollbacks"]
    assert rollbacks[tenant] == 2
    assert exempt not in rollbacks
    assert calm not in rollbacks
    barrier = await proxy.runtime.pool.fetchrow(
        "SELECT from_phase, to_phase, outcome FROM cutover_barrier WHERE tenant = $1", tenant
    )
    assert dict(barrier) == {"from_phase": "live", "to_phase": "shadow", "outcome": "switched"}

    cli = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxy.cli.main",
        "audit",
        tenant,
        "--admin-url",
        proxy.admin_server.url,
        "--token",
        proxy.tokens.read,
        stdout=asyncio.subprocess.PIPE,
    )
    stdout, _ = await cli.communicate()
    assert cli.returncode == 0
    out = stdout.decode()
    rows = [line.split() for line in out.splitlines()]
    assert any(row[3:7] == ["live", "->", "shadow", "auto"] for row in rows), out
    assert any(row[3:7] == ["shadow", "->", "dual_write", "auto"] for row in rows), out


async def _is(value: Any, expected: str) -> bool:
    return bool(await value == expected)
