"""RedisLedger against real Redis: states, marks, the age rule and pruning."""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis

from buffer_worker.keys import ledger_key
from buffer_worker.redis_ledger import RedisLedger


async def test_unknown_ids_are_marked_sending_and_applied_wins(rclient: aioredis.Redis, prefix: str) -> None:
    ledger = RedisLedger(rclient, prefix=prefix, retention_s=3600)
    assert await ledger.check(0, ["a", "b"]) == ["", ""]
    assert await ledger.check(0, ["a", "b", "c"]) == ["s", "s", ""]
    async with rclient.pipeline(transaction=True) as pipe:
        ledger.queue_applied(pipe, 0, ["a"])
        await pipe.execute()
    assert await ledger.check(0, ["a", "b"]) == ["a", "s"]
    assert await ledger.check(1, ["a"]) == [""]  # per partition


async def test_the_age_rule_covers_what_the_ledger_forgot(rclient: aioredis.Redis, prefix: str) -> None:
    ledger = RedisLedger(rclient, prefix=prefix, retention_s=3600)
    now_ms = time.time() * 1000
    assert not ledger.forgets(int(now_ms - 3_599_000), now_ms)
    assert ledger.forgets(int(now_ms - 3_601_000), now_ms)
    assert not RedisLedger(rclient, prefix=prefix, retention_s=0).forgets(0)  # 0: kept forever


async def test_marks_older_than_the_retention_are_pruned(rclient: aioredis.Redis, prefix: str) -> None:
    ledger = RedisLedger(rclient, prefix=prefix, retention_s=0.5)
    await ledger.check(0, [f"s{i}" for i in range(1500)])
    async with rclient.pipeline(transaction=True) as pipe:
        ledger.queue_applied(pipe, 0, [f"a{i}" for i in range(1500)])
        await pipe.execute()
    await asyncio.sleep(0.6)  # the subject: the marks outlive the 0.5 s retention
    await ledger.check(0, ["fresh"])
    assert await ledger.prune(0) == 3000  # in slices of 1,000
    assert await rclient.zrange(ledger_key(prefix, 0), 0, -1) == [b"fresh"]
