"""Operator actions on a partition's dead letters, carried out by the partition's own worker.

Re-drive (apply them again, in order), resolve (set each one's record on the mirror to its state on the
authoritative side) and discard (drop one without applying it) are requests, not actions: the admin API
records them in Redis (`redrive_key`, `operator_key`) and the worker that owns the partition carries them
out between two batches, so nothing newer of the tenant can overtake them. A request is removed once
carried out; one interrupted by a crash is carried out again by the next owner, which is harmless (a
letter resolved or discarded already is gone). The tenant is unblocked when its last dead letter is gone.

Each dead letter records why it is there (`reason`) and what kind of cause that is (`cause`):
`intent` (a property of the intent itself: undecodable, a request that cannot be built, a write no
resource maps; re-driving it would fail the same way, so the admin API refuses), `apply` (the mirror's
answer or an outage outlasting the retries; a re-drive may succeed) or `parked` (never tried: it waits
behind an earlier dead letter of its tenant). A tried one records what failed (`status`: the HTTP
status, or the failure's kind such as `sqlstate 23505`) and what the mirror said (`excerpt`: decoded,
printable, short; `backends.content`); a parked one, the intent id it waits `behind`. Every letter is
named by its intent's id: in listings, in what parked letters wait behind, in the tenant's
blocked-behind, and in a discard. Letters written before these fields existed read as None.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis

from buffer_worker.intent import Intent, IntentDecodeError
from buffer_worker.keys import (
    blocked_key,
    dead_letter_key,
    operator_key,
    pending_field,
    pending_key,
    redrive_key,
)
from buffer_worker.redis_ledger import RedisLedger

log = logging.getLogger("cutover.worker")

CAUSE_INTENT, CAUSE_APPLY, CAUSE_PARKED = "intent", "apply", "parked"

# How one intent is applied with the worker's retry policy: None when applied, else why not.
Attempt = Callable[[bool], Awaitable[None]]
Retrying = Callable[[Intent, Attempt], Awaitable[str | None]]


def cause_of(fields: dict[bytes, bytes]) -> str:
    """A dead letter's cause; letters written before causes were recorded get theirs from the reason."""
    cause = fields.get(b"cause")
    if cause:
        return cause.decode()
    reason = fields.get(b"reason", b"")
    if reason.startswith(b"undecodable"):
        return CAUSE_INTENT
    return CAUSE_PARKED if reason.startswith(b"parked behind") else CAUSE_APPLY


def failure_of(fields: dict[bytes, bytes]) -> tuple[str | None, str | None]:
    """A dead letter's `status` and `excerpt` (None for a parked one, or one written before them)."""
    status, excerpt = fields.get(b"status"), fields.get(b"excerpt")
    return (
        None if status is None else status.decode(errors="replace"),
        None if excerpt is None else excerpt.decode(errors="replace"),
    )


def behind_of(fields: dict[bytes, bytes]) -> str | None:
    """The intent id a parked dead letter waits behind (from its reason, for letters written before
    it was recorded apart); None for a letter that is not parked."""
    behind = fields.get(b"behind")
    if behind:
        return behind.decode()
    reason = fields.get(b"reason", b"")
    if reason.startswith(_PARKED):
        return reason[len(_PARKED) :].strip().decode(errors="replace") or None
    return None


_PARKED = b"parked behind "


@dataclass(frozen=True, slots=True)
class Letter:
    entry_id: bytes
    intent: Intent


class DeadLetterOps:
    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str,
        applier: Any,
        retrying: Retrying,
        ledger: RedisLedger | None,
        on_applied: Callable[[int], None],
        before_apply: Callable[[int, list[Intent]], Awaitable[object]] | None = None,
    ) -> None:
        self._redis = client
        self._prefix = prefix
        self._applier = applier
        self._retrying = retrying
        self._ledger = ledger
        self._on_applied = on_applied
        # Run before a letter is applied or resolved, as before a batch (the copy's marks).
        self._before_apply = before_apply

    async def run_requested(self, partition: int) -> None:
        """Carry out every request waiting for `partition`, oldest first."""
        requested: Any = await self._redis.smembers(redrive_key(self._prefix, partition))
        for raw_tenant in requested:
            await self.redrive(partition, raw_tenant.decode())
            await self._redis.srem(redrive_key(self._prefix, partition), raw_tenant)
        queue = operator_key(self._prefix, partition)
        while True:
            raw: Any = await self._redis.lindex(queue, 0)
            if raw is None:
                return
            try:
                request = orjson.loads(raw)
                tenant, op = str(request["tenant"]), request["op"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                log.error("partition %d: dropping a malformed operator request %r", partition, raw[:200])
            else:
                if op == "resolve":
                    await self.resolve(partition, tenant)
                elif op == "discard":
                    await self.discard(partition, tenant, str(request.get("intent_id", "")))
                else:
                    log.error("partition %d: unknown operator request %r", partition, op)
            await self._redis.lpop(queue)

    async def redrive(self, partition: int, tenant: str) -> None:
        """Apply the tenant's dead letters again, in order. They were tried, or parked behind one that
        was: each is in doubt, so it is settled from the authoritative side where its record is known."""
        resolve = getattr(self._applier, "resolve", None)
        done = 0
        for letter in await self.letters(partition, tenant):
            intent = letter.intent
            await self._prepare(partition, intent)

            async def attempt(in_doubt: bool, intent: Intent = intent) -> None:
                await (resolve(intent) if resolve is not None else self._applier.apply(intent))

            failure = await self._retrying(intent, attempt)
            if failure is not None:
                await self._redis.hset(blocked_key(self._prefix, partition), tenant, intent.intent_id)
                log.error(
                    "re-drive of tenant %r stopped at intent %s again: %s", tenant, intent.intent_id, failure
                )
                return
            await self._remove(partition, letter, applied=True)
            done += 1
        await self._unblock_if_clear(partition, tenant)
        log.info("re-drove %d dead-lettered intents of tenant %r", done, tenant)

    async def resolve(self, partition: int, tenant: str) -> None:
        """Set the record of each of the tenant's dead letters, in order, to its authoritative state."""
        resolve_letter = getattr(self._applier, "resolve_dead_letter", None)
        if resolve_letter is None:
            log.error(
                "tenant %r: this worker's applier cannot resolve dead letters by state transfer", tenant
            )
            return
        done = 0
        for letter in await self.letters(partition, tenant):
            intent = letter.intent
            await self._prepare(partition, intent)

            async def attempt(in_doubt: bool, intent: Intent = intent) -> None:
                await resolve_letter(intent)

            failure = await self._retrying(intent, attempt)
            if failure is not None:
                log.error(
                    "resolution of tenant %r stopped at intent %s: %s", tenant, intent.intent_id, failure
                )
                await self._unblock_if_clear(partition, tenant)
                return
            await self._remove(partition, letter, applied=True)
            done += 1
        await self._unblock_if_clear(partition, tenant)
        log.info("resolved %d dead-lettered intents of tenant %r from the authoritative side", done, tenant)

    async def _prepare(self, partition: int, intent: Intent) -> None:
        if self._before_apply is not None:
            await self._before_apply(partition, [intent])

    async def discard(self, partition: int, tenant: str, intent_id: str) -> None:
        """Drop one dead letter (by intent id) without applying it."""
        for letter in await self.letters(partition, tenant):
            if letter.intent.intent_id == intent_id:
                await self._remove(partition, letter, applied=False)
                log.warning("discarded dead-lettered intent %s of tenant %r", intent_id, tenant)
                break
        await self._unblock_if_clear(partition, tenant)

    async def letters(self, partition: int, tenant: str) -> list[Letter]:
        """The tenant's dead letters, oldest first (undecodable ones belong to no tenant)."""
        entries: Any = await self._redis.xrange(dead_letter_key(self._prefix, partition))
        found: list[Letter] = []
        for entry_id, fields in entries:
            try:
                intent = Intent.from_fields(fields)
            except IntentDecodeError:
                continue
            if intent.tenant == tenant:
                found.append(Letter(entry_id, intent))
        return found

    async def _remove(self, partition: int, letter: Letter, *, applied: bool) -> None:
        intent = letter.intent
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xdel(dead_letter_key(self._prefix, partition), letter.entry_id)
            pipe.hincrby(
                pending_key(self._prefix, partition), pending_field(intent.tenant, intent.target), -1
            )
            if applied and self._ledger is not None:
                self._ledger.queue_applied(pipe, partition, [intent.intent_id])
            await pipe.execute()
        if applied:
            self._on_applied(1)

    async def _unblock_if_clear(self, partition: int, tenant: str) -> None:
        """Unblock the tenant when its last dead letter is gone; else name the first one it waits behind."""
        remaining = await self.letters(partition, tenant)
        key = blocked_key(self._prefix, partition)
        if not remaining:
            await self._redis.hdel(key, tenant)
        else:  # later intents of the tenant must keep waiting behind its letters, in order
            await self._redis.hset(key, tenant, remaining[0].intent.intent_id)
