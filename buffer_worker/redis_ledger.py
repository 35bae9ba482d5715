"""The HTTP applier's ledger of applied intent ids, kept in Redis beside the streams.

Why Redis: the mirror is an HTTP service cutover cannot keep a ledger in, and the stream the ids come
from lives in Redis already. Marking ids applied rides in the MULTI that acknowledges them (no extra
round trip), and a batch's look-up is one MULTI (ZMSCORE, then ZADD NX of the marks): a round trip per
batch, not per intent (~2 ms for 500 ids here). PostgreSQL would add a store the HTTP worker does not
otherwise need, and a commit per batch.

One sorted set per partition (`ledger_key`): member the intent id, score the time of the mark in ms,
negative for `sending` (an attempt may have reached the mirror), positive for `applied`. A sorted set
rather than time-bucketed hashes (a third smaller) because its look-up does not depend on the retention:
changing `worker.ledger_retention_h` keeps every mark. Ids older than the retention are pruned in slices
of 1,000 (`prune`), so no call blocks Redis however far behind pruning is. About 130 bytes per id
(MEMORY USAGE of 100,000 ids): at 100 mirrored writes per second a day's retention holds ~1.1 GB. Redis
must not evict it: run it with `maxmemory-policy noeviction`, as the streams need. ZMSCORE needs Redis 6.2.

Losing a ledger write only ever makes an intent in doubt, never wrong:
- `sending` is written, and its write confirmed, before a batch is sent; if it fails nothing is sent.
- `applied` is written in the MULTI that acknowledges the entries; if it is lost so is the XACK, and the
  entries come back from the pending list, which makes them in doubt.
- an id the ledger no longer holds belongs to an intent older than the retention, and the worker counts
  every such intent in doubt (`forgets`), whatever the ledger says. Clocks (the proxy's, which stamps
  `created_ms`, and the worker's) need only agree to well within the retention.
An intent in doubt is settled from the authoritative side where its record is known (`HttpApplier`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from buffer_worker.keys import ledger_key

SENDING, APPLIED = "s", "a"
_PRUNE_SLICE = 1000
_PRUNE_SLICES_PER_CALL = 50

# KEYS[1]: the ledger; ARGV[1]: the cutoff (ms). Removes up to a slice of marks made before it (applied:
# 0 <= score < cutoff; sending: -cutoff < score < 0) and returns how many.
_PRUNE_LUA = """
local cutoff = tonumber(ARGV[1])
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. -cutoff, '(' .. cutoff, 'LIMIT', 0, tonumber(ARGV[2]))
if #ids > 0 then redis.call('ZREM', KEYS[1], unpack(ids)) end
return #ids
"""


class RedisLedger:
    def __init__(self, client: aioredis.Redis, *, prefix: str, retention_s: float) -> None:
        self._redis = client
        self._prefix = prefix
        self._retention_s = retention_s
        self._prune = client.register_script(_PRUNE_LUA)

    def forgets(self, created_ms: int, now_ms: float | None = None) -> bool:
        """Whether an intent created at `created_ms` may be older than what the ledger remembers."""
        if not self._retention_s:
            return False
        now_ms = time.time() * 1000 if now_ms is None else now_ms
        return now_ms - created_ms > self._retention_s * 1000

    async def check(self, partition: int, intent_ids: Sequence[str]) -> list[str]:
        """Each id's state (`a`, `s` or '' for unknown), marking the unknown ones `s` (being sent)."""
        if not intent_ids:
            return []
        key = ledger_key(self._prefix, partition)
        now_ms = time.time() * 1000
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zmscore(key, list(intent_ids))
            pipe.zadd(key, dict.fromkeys(intent_ids, -now_ms), nx=True)  # only ids it does not hold
            scores, _added = await pipe.execute()
        return ["" if score is None else (APPLIED if score >= 0 else SENDING) for score in scores]

    def queue_applied(self, pipe: Pipeline, partition: int, intent_ids: Sequence[str]) -> None:
        """Add to `pipe` (the MULTI that acknowledges them) the marks of `intent_ids` as applied."""
        if intent_ids:
            pipe.zadd(ledger_key(self._prefix, partition), dict.fromkeys(intent_ids, time.time() * 1000))

    async def prune(self, partition: int) -> int:
        """Remove the marks older than the retention (up to 50,000 per call); how many."""
        if not self._retention_s:
            return 0
        cutoff_ms = int((time.time() - self._retention_s) * 1000)
        removed = 0
        for _ in range(_PRUNE_SLICES_PER_CALL):
            count: Any = await self._prune(
                keys=[ledger_key(self._prefix, partition)], args=[cutoff_ms, _PRUNE_SLICE]
            )
            removed += int(count)
            if int(count) < _PRUNE_SLICE:
                break
        return removed
