"""Which keys of a tenant still have intents waiting in the buffer, and waiting until they are applied.

Verification runs while traffic flows: a key written a moment ago may differ only because its mirrored
write has not been applied yet. The tenant's partition stream holds exactly the entries not applied yet
(the worker trims it behind each acknowledged batch), so reading it tells which paths, and through each
table's `path` pattern which keys, are in flight. Waiting is by stream position: the partition is drained
up to a snapshot once its consumer group has delivered past the snapshot's last entry and none of those
entries is still unacknowledged.

The Redis client and the buffer's modules are loaded when the buffer is first asked, which is only once
a difference has been found: a verification that finds none never pays for them.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from config.data import DataTable, path_key_pattern

if TYPE_CHECKING:
    import redis.asyncio as aioredis

_SCAN_LIMIT = 100_000  # stream entries read per snapshot; beyond this every difference is deferred


@dataclass(frozen=True)
class PendingSnapshot:
    tenant: str
    count: int  # the tenant's intents appended and not applied yet (both directions)
    paths: frozenset[str] = field(default_factory=frozenset)
    last_id: str | None = None  # the stream's last entry when the snapshot was taken
    complete: bool = True  # False: the stream was longer than the scan limit
    error: str | None = None  # the buffer could not be read

    def covers(self, table: DataTable, key: tuple[str, ...]) -> bool:
        """Whether `key` of `table` may differ only because an intent is still pending."""
        if self.count == 0 and not self.paths:
            return False
        if table.path is None or not self.complete:
            return True
        pattern = path_key_pattern(table.path)
        for path in self.paths:
            match = pattern.match(path)
            if match is None and not _maybe_create(path, table.path):
                continue
            if match is None or (match.group("key"),) == key:
                return True
        return False


def _maybe_create(path: str, pattern: str) -> bool:
    """A POST to the collection (`/items` for `/items/{key}`): the key it creates is not in its path."""
    return path.rstrip("/") == pattern.partition("{key}")[0].rstrip("/")


class PendingIntents:
    def __init__(self, url: str, *, prefix: str, partitions: int) -> None:
        self._url = url
        self._prefix = prefix
        self._partitions = partitions
        self._client: aioredis.Redis | None = None

    @classmethod
    def from_url(cls, url: str, *, prefix: str, partitions: int) -> PendingIntents:
        return cls(url, prefix=prefix, partitions=partitions)

    @property
    def _redis(self) -> aioredis.Redis:
        if self._client is None:
            import redis.asyncio as aioredis

            self._client = aioredis.Redis.from_url(self._url, socket_timeout=5, socket_connect_timeout=2)
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def snapshot(self, tenant: str) -> PendingSnapshot:
        from buffer_worker.intent import Intent, IntentDecodeError
        from buffer_worker.keys import partition_of, pending_key, stream_key
        from common.store_errors import REDIS_ERRORS

        partition = partition_of(tenant, self._partitions)
        try:
            counts: Any = await self._redis.hgetall(pending_key(self._prefix, partition))
            count = sum(
                int(value) for name, value in counts.items() if name.decode().rpartition("|")[0] == tenant
            )
            entries: Any = await self._redis.xrange(stream_key(self._prefix, partition), count=_SCAN_LIMIT)
        except REDIS_ERRORS as exc:
            return PendingSnapshot(tenant, 0, error=f"intent buffer unreachable ({type(exc).__name__})")
        paths: set[str] = set()
        for _id, fields in entries:
            try:
                intent = Intent.from_fields(fields)
            except IntentDecodeError:
                continue
            if intent.tenant == tenant:
                paths.add(intent.path)
        last_id = entries[-1][0].decode() if entries else None
        return PendingSnapshot(tenant, count, frozenset(paths), last_id, len(entries) < _SCAN_LIMIT)

    async def drained(self, snapshot: PendingSnapshot) -> bool:
        """Every entry up to the snapshot's last one has been applied (or dead-lettered)."""
        from redis.exceptions import ResponseError

        from buffer_worker.inspect import group_last_delivered
        from buffer_worker.keys import CONSUMER_GROUP, partition_of, stream_key

        if snapshot.last_id is None:
            return True
        stream = stream_key(self._prefix, partition_of(snapshot.tenant, self._partitions))
        try:
            groups: Any = await self._redis.xinfo_groups(stream)
            delivered = group_last_delivered(groups)
            if delivered is None or _id_key(delivered) < _id_key(snapshot.last_id):
                return False
            waiting: Any = await self._redis.xpending_range(
                stream, CONSUMER_GROUP, min="-", max=snapshot.last_id, count=1
            )
            return not waiting
        except ResponseError:  # the stream or its group is gone: nothing left to apply
            return True

    async def wait_drained(self, snapshot: PendingSnapshot, timeout_s: float) -> bool:
        from common.store_errors import REDIS_ERRORS

        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if await self.drained(snapshot):
                    return True
            except REDIS_ERRORS:
                pass
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.1)


def _id_key(entry_id: bytes | str) -> tuple[int, int]:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)
