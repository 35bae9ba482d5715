"""One tenant's backlog in the buffer: intents pending toward each side and the age of the oldest of each.

A partition's stream holds exactly its unapplied intents (the worker trims what it applied), in append
order, so the first entry of the tenant toward a side is its oldest unapplied intent toward that side.
The scan reads the partition from its head, at most `scan_limit` entries: when the tenant's oldest is
further in (a long backlog of other tenants before it), the partition's own lag is given instead, an
upper bound, marked `exact: false`.
"""

from __future__ import annotations

import time
from typing import Any

import redis.asyncio as aioredis

from buffer_worker.intent import Intent, IntentDecodeError
from buffer_worker.keys import blocked_key, partition_of, pending_field, pending_key, stream_key
from routing.phases import Side

SCAN_LIMIT = 2000
_CHUNK = 200


async def tenant_backlog(
    client: aioredis.Redis, *, prefix: str, partitions: int, tenant: str, scan_limit: int = SCAN_LIMIT
) -> dict[str, Any]:
    partition = partition_of(tenant, partitions)
    now_ms = time.time() * 1000
    pending_values: Any = await client.hmget(
        pending_key(prefix, partition), [pending_field(tenant, side) for side in Side]
    )
    pending = {side: int(value or 0) for side, value in zip(Side, pending_values, strict=True)}
    blocked: Any = await client.hget(blocked_key(prefix, partition), tenant)
    oldest_ms: dict[Side, int] = {}
    wanted = {side for side, n in pending.items() if n > 0}
    stream = stream_key(prefix, partition)
    head_ms: int | None = None
    start, scanned = "-", 0
    while wanted - oldest_ms.keys() and scanned < scan_limit:
        entries: Any = await client.xrange(stream, min=start, count=min(_CHUNK, scan_limit - scanned))
        for entry_id, fields in entries:
            ms = int(entry_id.split(b"-", 1)[0])
            head_ms = ms if head_ms is None else head_ms
            try:
                intent = Intent.from_fields(fields)
            except IntentDecodeError:
                continue
            if intent.tenant == tenant and intent.target in wanted:
                oldest_ms.setdefault(intent.target, ms)
        scanned += len(entries)
        if len(entries) < _CHUNK:
            break
        start = f"({entries[-1][0].decode()}"
    toward: dict[str, dict[str, Any]] = {}
    for side in Side:
        entry: dict[str, Any] = {"pending": pending[side], "oldest_s": None, "exact": True}
        if side in oldest_ms:
            entry["oldest_s"] = round(max(0.0, (now_ms - oldest_ms[side]) / 1000), 3)
        elif pending[side] and head_ms is not None:
            # Not within the scanned head: the partition's oldest entry bounds it.
            entry["oldest_s"] = round(max(0.0, (now_ms - head_ms) / 1000), 3)
            entry["exact"] = False
        toward[side.value] = entry
    return {
        "partition": partition,
        "toward": toward,
        "blocked_behind": blocked.decode() if blocked else None,
    }
