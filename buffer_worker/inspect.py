"""Read-only views of the buffer (per partition and per tenant), dead letters, and the operators'
requests on dead letters (re-drive, resolve, discard).

A request is not an action: the worker that owns the partition carries it out itself, before anything
newer of that tenant, so order holds even while new intents arrive (`buffer_worker.dead_letters`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from buffer_worker.dead_letters import behind_of, cause_of, failure_of
from buffer_worker.intent import Intent, IntentDecodeError
from buffer_worker.keys import (
    CONSUMER_GROUP,
    blocked_key,
    dead_letter_key,
    lease_key,
    operator_key,
    partition_of,
    pending_field,
    pending_key,
    redrive_key,
    stream_key,
    worker_stats_key,
)
from buffer_worker.tenant_backlog import tenant_backlog
from routing.phases import Side


def group_last_delivered(groups: Any) -> Any:
    """The workers' consumer group's last delivered entry id, from an XINFO GROUPS reply (bytes, or str
    from a client that decodes replies); None without the group."""
    return next(
        (g["last-delivered-id"] for g in groups if g["name"] in (CONSUMER_GROUP, CONSUMER_GROUP.decode())),
        None,
    )


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One of a tenant's dead letters, decoded."""

    dead_id: str
    intent: Intent
    cause: str
    reason: str
    status: str | None = None
    excerpt: str | None = None


def _ms_of(entry_id: bytes | str) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.split("-", 1)[0])


class BufferInspector:
    def __init__(self, client: aioredis.Redis, *, prefix: str, partitions: int) -> None:
        self._redis = client
        self._prefix = prefix
        self._partitions = partitions

    @property
    def client(self) -> aioredis.Redis:
        """Its Redis client, for other read-only views of the buffer's keys (the copies' facts)."""
        return self._redis

    async def close(self) -> None:
        await self._redis.aclose()

    async def report(self) -> dict[str, Any]:
        now_ms = time.time() * 1000
        partitions: list[dict[str, Any]] = []
        tenants: dict[str, dict[str, Any]] = {}

        def row_of(tenant: str) -> dict[str, Any]:
            return tenants.setdefault(tenant, {"tenant": tenant, "pending": {}, "dead_letters": 0})

        for partition in range(self._partitions):
            stream = stream_key(self._prefix, partition)
            entry = await self._partition(partition, stream, now_ms)
            partitions.append(entry)
            pending: Any = await self._redis.hgetall(pending_key(self._prefix, partition))
            for field, count in pending.items():
                tenant, _, side = field.decode().rpartition("|")
                if int(count) > 0:
                    row_of(tenant)["pending"][side] = int(count)
            dead: Any = await self._redis.xrange(dead_letter_key(self._prefix, partition))
            for _id, fields in dead:
                row_of(_tenant_of(fields))["dead_letters"] += 1
            blocked: Any = await self._redis.hgetall(blocked_key(self._prefix, partition))
            for raw_tenant, intent_id in blocked.items():
                row_of(raw_tenant.decode())["blocked_behind"] = intent_id.decode()
            for row in tenants.values():
                if partition_of(row["tenant"], self._partitions) == partition and row.get("pending"):
                    row["oldest_age_s"] = entry["lag_s"]
        return {"partitions": partitions, "tenants": sorted(tenants.values(), key=lambda r: r["tenant"])}

    async def _partition(self, partition: int, stream: str, now_ms: float) -> dict[str, Any]:
        length = int(await self._redis.xlen(stream))
        owner: Any = await self._redis.get(lease_key(self._prefix, partition))
        pending_count = 0
        oldest_ms: int | None = None
        try:
            summary: Any = await self._redis.xpending(stream, CONSUMER_GROUP.decode())
            pending_count = int(summary["pending"])
            if pending_count and summary["min"]:
                oldest_ms = _ms_of(summary["min"])
            groups: Any = await self._redis.xinfo_groups(stream)
            last_delivered = group_last_delivered(groups)
        except ResponseError:  # no stream or no group yet
            last_delivered = None
        if oldest_ms is None and length:
            start = f"({last_delivered.decode()}" if last_delivered else "-"
            undelivered: Any = await self._redis.xrange(stream, min=start, count=1)
            if undelivered:
                oldest_ms = _ms_of(undelivered[0][0])
        return {
            "partition": partition,
            "length": length,
            "pending": pending_count,
            "lag_s": round(max(0.0, (now_ms - oldest_ms) / 1000), 3) if oldest_ms is not None else 0.0,
            "owner": owner.decode() if owner else None,
        }

    async def gauges(self) -> dict[str, Any]:
        """The figures metrics need, cheaper than `report` (dead letters are counted, not read):
        per partition length / pending / lag / dead letters, pending intents per (tenant, side), and the
        workers' cumulative counters."""
        now_ms = time.time() * 1000
        partitions: list[dict[str, Any]] = []
        tenant_pending: dict[tuple[str, str], int] = {}
        for partition in range(self._partitions):
            entry = await self._partition(partition, stream_key(self._prefix, partition), now_ms)
            entry["dead_letters"] = int(await self._redis.xlen(dead_letter_key(self._prefix, partition)))
            partitions.append(entry)
            pending: Any = await self._redis.hgetall(pending_key(self._prefix, partition))
            for field, count in pending.items():
                tenant, _, side = field.decode().rpartition("|")
                if int(count) > 0:
                    tenant_pending[(tenant, side)] = tenant_pending.get((tenant, side), 0) + int(count)
        totals: Any = await self._redis.hgetall(worker_stats_key(self._prefix))
        return {
            "partitions": partitions,
            "tenant_pending": tenant_pending,
            "worker": {name.decode(): int(value) for name, value in totals.items()},
        }

    async def pending(self, tenant: str, target: Side) -> int:
        """Intents of `tenant` toward `target` appended to Redis and not applied yet."""
        partition = partition_of(tenant, self._partitions)
        value: Any = await self._redis.hget(
            pending_key(self._prefix, partition), pending_field(tenant, target)
        )
        return int(value or 0)

    async def tenant_backlog(self, tenant: str) -> dict[str, Any]:
        """`tenant`'s pending intents toward each side and the age of the oldest (`tenant_backlog`)."""
        return await tenant_backlog(
            self._redis, prefix=self._prefix, partitions=self._partitions, tenant=tenant
        )

    async def dead_letters(
        self, tenant: str | None = None, *, limit: int = 100, after: str | None = None
    ) -> list[dict[str, Any]]:
        """Up to `limit` dead letters (of `tenant`), oldest first, after the one whose `cursor` is
        `after`. Each partition is read from the cursor on, `limit` entries at a time, so a page costs
        about `limit` entries per partition (more when a tenant filter skips other tenants' letters)."""
        position = parse_dead_letter_cursor(after) if after is not None else None
        partitions = (
            [partition_of(tenant, self._partitions)] if tenant is not None else range(self._partitions)
        )
        letters: list[tuple[tuple[int, int, int], dict[str, Any]]] = []
        for partition in partitions:
            start = "-"
            if position is not None:
                ms, seq, cursor_partition = position
                # Ordered by (entry id, partition): an equal id of a later partition comes after.
                start = f"{ms}-{seq}" if partition > cursor_partition else f"({ms}-{seq}"
            found = 0
            while found < limit:
                entries: Any = await self._redis.xrange(
                    dead_letter_key(self._prefix, partition), min=start, count=limit
                )
                for entry_id, fields in entries:
                    if tenant is not None and _tenant_of(fields) != tenant:
                        continue
                    letter = _describe(partition, entry_id, fields)
                    letters.append((_order_of(entry_id, partition), letter))
                    found += 1
                if len(entries) < limit:
                    break
                start = f"({entries[-1][0].decode()}"
        letters.sort(key=lambda item: item[0])
        return [letter for _order, letter in letters[:limit]]

    async def dead_letter_count(self, tenant: str) -> int:
        return len(await self.dead_letters(tenant, limit=1_000_000))

    async def letters_of(self, tenant: str) -> list[DeadLetter]:
        """The tenant's dead letters, oldest first (undecodable entries belong to no tenant)."""
        partition = partition_of(tenant, self._partitions)
        entries: Any = await self._redis.xrange(dead_letter_key(self._prefix, partition))
        letters: list[DeadLetter] = []
        for entry_id, fields in entries:
            try:
                intent = Intent.from_fields(fields)
            except IntentDecodeError:
                continue
            if intent.tenant == tenant:
                reason = fields.get(b"reason", b"").decode(errors="replace")
                status, excerpt = failure_of(fields)
                letters.append(
                    DeadLetter(entry_id.decode(), intent, cause_of(fields), reason, status, excerpt)
                )
        return letters

    async def request_redrive(self, tenant: str) -> int:
        """Ask the partition's worker to re-apply the tenant's dead letters; returns how many there are."""
        count = await self.dead_letter_count(tenant)
        if count:
            await self._redis.sadd(redrive_key(self._prefix, partition_of(tenant, self._partitions)), tenant)
        return count

    async def request(self, op: str, tenant: str, intent_id: str | None = None) -> None:
        """Queue an operator request (`resolve`, or `discard` of `intent_id`) for the partition's worker."""
        request: dict[str, str] = {"op": op, "tenant": tenant}
        if intent_id is not None:
            request["intent_id"] = intent_id
        partition = partition_of(tenant, self._partitions)
        await self._redis.rpush(operator_key(self._prefix, partition), orjson.dumps(request))


def parse_dead_letter_cursor(cursor: str) -> tuple[int, int, int]:
    """`<ms>-<seq>:<partition>` (a dead letter's `cursor`) → (ms, seq, partition); ValueError if not."""
    entry_id, _, partition = cursor.partition(":")
    ms, _, seq = entry_id.partition("-")
    parsed = (int(ms), int(seq), int(partition))
    if not (0 <= parsed[0] < 2**64 and 0 <= parsed[1] < 2**64 and 0 <= parsed[2] < 2**31):
        raise ValueError(f"dead-letter cursor {cursor!r} is out of range")
    return parsed


def _order_of(entry_id: bytes, partition: int) -> tuple[int, int, int]:
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq), partition


def _tenant_of(fields: dict[bytes, bytes]) -> str:
    try:
        return Intent.from_fields(fields).tenant
    except IntentDecodeError:
        return "?"


def _describe(partition: int, entry_id: bytes, fields: dict[bytes, bytes]) -> dict[str, Any]:
    """One dead letter as the admin API lists it. `intent_id` names it everywhere (a parked letter's
    `parked_behind`, the tenant's `blocked_behind`, a discard); `dead_id` and `cursor` are its place in
    the dead-letter stream, for paging."""
    status, excerpt = failure_of(fields)
    letter: dict[str, Any] = {
        "partition": partition,
        "dead_id": entry_id.decode(),
        "cursor": f"{entry_id.decode()}:{partition}",  # its place in the list, for `after`
        "source_id": fields.get(b"source_id", b"").decode(),
        "reason": fields.get(b"reason", b"").decode(errors="replace"),
        "cause": cause_of(fields),
        "status": status,  # the HTTP status, or the failure's kind; None: parked, or an older letter
        "excerpt": excerpt,  # what the mirror answered, decoded and shortened
        "parked_behind": behind_of(fields),  # the intent id a parked letter waits behind
    }
    try:
        intent = Intent.from_fields(fields)
    except IntentDecodeError as exc:
        letter["error"] = str(exc)
        return letter
    letter.update(
        intent_id=intent.intent_id,
        tenant=intent.tenant,
        target=intent.target.value,
        method=intent.method,
        path=intent.path,
        created_ms=intent.created_ms,
    )
    return letter
