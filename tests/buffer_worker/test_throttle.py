"""The per-tenant apply rate limit (token bucket). Lower bounds on waiting only: a slow machine can make
a run take longer, never shorter."""

from __future__ import annotations

import time

from buffer_worker.throttle import TenantThrottle


async def test_unlimited_never_waits() -> None:
    throttle = TenantThrottle(0)
    assert not throttle.limited
    for _ in range(1000):
        await throttle.take("t1", 50)
    assert throttle.waited_s == 0


async def test_one_by_one_beyond_the_burst_waits_at_the_rate() -> None:
    throttle = TenantThrottle(100, burst=10)
    started = time.monotonic()
    for _ in range(30):  # 10 from the burst, 20 more at 100/s
        await throttle.take("t1")
    assert time.monotonic() - started >= 0.19
    assert 0.15 <= throttle.waited_s <= 0.21


async def test_a_batch_larger_than_the_burst_waits_for_its_debt() -> None:
    throttle = TenantThrottle(100, burst=10)
    started = time.monotonic()
    await throttle.take("t1", 30)
    assert time.monotonic() - started >= 0.19
    # The debt is paid: the next intent waits one token's time, not another batch's.
    before = throttle.waited_s
    await throttle.take("t1")
    assert throttle.waited_s - before <= 0.011


async def test_tenants_have_their_own_buckets() -> None:
    throttle = TenantThrottle(10, burst=5)
    await throttle.take("busy", 5)
    started = time.monotonic()
    await throttle.take("other", 5)
    assert time.monotonic() - started < 0.05
    assert throttle.waited_s == 0
