"""The shared Redis server, and key prefixes that keep each test's keys apart from everyone else's."""

from __future__ import annotations

import uuid

import redis.asyncio as aioredis

REDIS_URL = "redis://127.0.0.1:6379/0"
PARTITIONS = 4  # stream partitions of the tests' buffers


def new_prefix() -> str:
    return f"cutover-test-{uuid.uuid4().hex[:12]}"


async def delete_prefix(prefix: str) -> None:
    """Delete every key under `prefix`."""
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()
