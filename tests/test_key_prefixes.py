"""Each test owns its Redis key prefix: what one test leaves under it (an intent, a pending count) is gone
before the next one starts, and the next one gets another prefix anyway."""

from __future__ import annotations

import redis.asyncio as aioredis

_seen: list[str] = []


async def test_a_test_leaves_a_key_under_its_prefix(redis_prefix: str, redis_client: aioredis.Redis) -> None:
    await redis_client.set(f"{redis_prefix}:left-behind", b"1")
    _seen.append(redis_prefix)


async def test_the_next_test_has_another_prefix_and_nothing_is_left(
    redis_prefix: str, redis_client: aioredis.Redis
) -> None:
    assert _seen, "runs after the test above (pytest keeps a module's order)"
    assert redis_prefix != _seen[-1]
    assert await redis_client.exists(f"{_seen[-1]}:left-behind") == 0
