"""Partition leases: at most one worker applies a partition's intents at a time.

A lease is `SET key owner NX PX ttl`, renewed at a third of its TTL. Renew and release are Lua scripts
that act only if the caller still owns the key, so a worker that stalled past its TTL cannot extend or
delete a lease another worker has since taken. Such a stalled worker may still finish the batch it was
applying; appliers are idempotent and the worker re-checks ownership before every batch, which bounds
that overlap to one batch.
"""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from buffer_worker.keys import lease_key

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class PartitionLeases:
    def __init__(self, client: aioredis.Redis, *, prefix: str, owner: str, ttl_s: float) -> None:
        self._redis = client
        self._prefix = prefix
        self._owner = owner
        self._ttl_ms = int(ttl_s * 1000)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    async def acquire(self, partition: int) -> bool:
        key = lease_key(self._prefix, partition)
        return bool(await self._redis.set(key, self._owner, nx=True, px=self._ttl_ms))

    async def renew(self, partition: int) -> bool:
        key = lease_key(self._prefix, partition)
        return bool(await self._renew(keys=[key], args=[self._owner, self._ttl_ms]))

    async def queue_renew(self, pipe: Pipeline, partition: int) -> None:
        """Queue a renewal in `pipe` (its result, 1 when still owned, comes back with the pipeline's)."""
        key = lease_key(self._prefix, partition)
        await self._renew(keys=[key], args=[self._owner, self._ttl_ms], client=pipe)

    async def release(self, partition: int) -> None:
        await self._release(keys=[lease_key(self._prefix, partition)], args=[self._owner])

    async def owner_of(self, partition: int) -> str | None:
        value: bytes | None = await self._redis.get(lease_key(self._prefix, partition))  # type: ignore[assignment]
        return None if value is None else value.decode()
