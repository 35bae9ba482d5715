"""Partition leases: exclusive, renewed and released only by their owner, and taken over once expired."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from buffer_worker.keys import lease_key
from buffer_worker.lease import PartitionLeases
from tests.support.waits import wait_for


def leases(client: aioredis.Redis, prefix: str, owner: str, ttl_s: float = 5.0) -> PartitionLeases:
    return PartitionLeases(client, prefix=prefix, owner=owner, ttl_s=ttl_s)


async def test_acquire_is_exclusive_between_two_owners(rclient: aioredis.Redis, prefix: str) -> None:
    a, b = leases(rclient, prefix, "owner-a"), leases(rclient, prefix, "owner-b")
    assert await a.acquire(0)
    assert not await b.acquire(0)
    assert not await a.acquire(0)  # not re-entrant either: acquire is SET NX
    assert await a.owner_of(0) == "owner-a"
    # partitions are independent
    assert await b.acquire(1)
    assert await b.owner_of(1) == "owner-b"
    assert await a.owner_of(2) is None


async def test_concurrent_acquires_have_exactly_one_winner(rclient: aioredis.Redis, prefix: str) -> None:
    contenders = [leases(rclient, prefix, f"owner-{i}") for i in range(20)]
    results = await asyncio.gather(*(c.acquire(3) for c in contenders))
    assert sum(results) == 1
    winner = results.index(True)
    assert await contenders[0].owner_of(3) == f"owner-{winner}"


async def test_lease_carries_the_ttl(rclient: aioredis.Redis, prefix: str) -> None:
    a = leases(rclient, prefix, "owner-a", ttl_s=2.5)
    assert await a.acquire(0)
    pttl = await rclient.pttl(lease_key(prefix, 0))
    assert 2000 < pttl <= 2500


async def test_renew_only_by_the_owner(rclient: aioredis.Redis, prefix: str) -> None:
    a, b = leases(rclient, prefix, "owner-a", ttl_s=0.5), leases(rclient, prefix, "owner-b", ttl_s=30)
    assert not await a.renew(0)  # nothing to renew
    assert await rclient.exists(lease_key(prefix, 0)) == 0  # and renew did not create it
    assert await a.acquire(0)
    assert not await b.renew(0)
    assert await rclient.pttl(lease_key(prefix, 0)) <= 500  # b did not extend a's lease
    # the owner's renewals keep the lease past its original TTL
    for _ in range(4):
        await asyncio.sleep(0.2)  # the subject: time passes, 0.8 s in all, beyond the 0.5 s TTL
        assert await a.renew(0)
    assert await a.owner_of(0) == "owner-a"
    assert not await b.acquire(0)


async def test_release_only_by_the_owner(rclient: aioredis.Redis, prefix: str) -> None:
    a, b = leases(rclient, prefix, "owner-a"), leases(rclient, prefix, "owner-b")
    await b.release(0)  # releasing a free partition is harmless
    assert await a.acquire(0)
    await b.release(0)
    assert await a.owner_of(0) == "owner-a"
    assert not await b.acquire(0)
    await a.release(0)
    assert await a.owner_of(0) is None
    assert await b.acquire(0)
    assert await b.owner_of(0) == "owner-b"


async def test_expiry_lets_another_owner_take_over(rclient: aioredis.Redis, prefix: str) -> None:
    a, b = leases(rclient, prefix, "owner-a", ttl_s=0.3), leases(rclient, prefix, "owner-b", ttl_s=30)
    assert await a.acquire(0)
    assert not await b.acquire(0)

    async def expired() -> bool:
        return await a.owner_of(0) is None

    await wait_for(expired, "owner-a's lease did not expire")
    assert await b.acquire(0)
    # the stalled former owner can neither extend nor delete the new owner's lease
    assert not await a.renew(0)
    await a.release(0)
    assert await b.owner_of(0) == "owner-b"
    assert not await a.acquire(0)
    assert await rclient.pttl(lease_key(prefix, 0)) > 20_000
