"""Per-record coordination of a REST copy (`cutover backfill`) and the worker, in Redis: the copy never
overwrites a state mirroring wrote, and mirroring never writes under the copy's feet.

A copy of a tenant's resource reads old's records page by page and writes them to new while mirroring
runs (dual_write, shadow). The race it must not lose: the copy reads a record on old, a client then
changes it there, the worker applies that change to new, and the copy's write of what it read lands
last, undoing it for good (no later intent fixes a record nobody writes again). Over HTTP there is no
database lock to share, and conditional requests (`If-None-Match: *`) are not something most backends
offer, so the two sides coordinate here, per record, in three steps:

1. The copy *opens* itself (`copy_open_key`) before it lists its first page.
2. The worker, before it applies a batch, *marks* every record an intent toward new writes whose copy
   is open (`m`). A record marked is mirroring's: the copy skips it from then on. A record the copy has
   *claimed* is not marked: the worker waits until the copy has written it and released the claim, then
   marks it and applies on top (`busy`). The first intent of a record the copy has not written is
   settled from the authoritative side rather than replayed: new may not hold the record yet, and the
   copy will not write it now.
3. The copy *claims* the records of a page it listed, in one script: the ones marked are skipped, the
   others claimed until a deadline (`claim_ttl_s`); it writes the claimed ones, then releases them.
   Records still claimed by an earlier run (one that was killed: only one run holds a copy's lock) are
   claimed once that claim lapses, so a write the dead run sent last cannot land after this one's.

Why that is enough: a record the copy claims has had no mirrored write since the copy opened (it would
be marked), and every mirrored write of it after the claim waits for the copy's write; so the copy's
write lands before any mirrored write of that record, and the stream's later intents bring it up to
date (`cutover verify` proves the end state). What the copy read is never older than a mirrored write
applied before the copy opened: the copy lists after it opened. A worker that decided, before the copy
opened, to write a record can land that write after the copy's: it then writes a state older than the
copy's, but every write since is in the stream behind it and is applied after it, in order.

A claim has a deadline so that a copy that died (SIGKILL) stops blocking the worker: a lapsed claim is
free. The copy sends no write of a claim with less than a third of `claim_ttl_s` left (its write timeout
is at most that), so its writes land while the claim holds; it claims the rest again first.

A copy whose paging can shift (page numbers, offsets: a delete moves later records across a page
boundary) reads a page again when its boundary check fails (`backfill.rest_pages`), and with `sweep` lists
the collection once more when mirroring wrote to the resource while it paged (the `intents` count moved).
For them the records it wrote stay marked `k` (copied) until it is done, so a page read again writes only
what it missed (~60 bytes per record in Redis meanwhile). A mirrored write turns `k` into `m` as it does
an unmarked record.

Every key of a tenant lives in its partition's hash slot (`{p<N>}`), so the worker's script and the
copy's touch one slot. Marks go when the copy is done (`close`); the counts stay (`copy_facts_key`):
records mirroring wrote during the copy (`mirrored`), the intents it applied to them (`intents`), intents
settled from the authoritative side (`transferred`) and deletes of records new did not hold
(`delete_absent`).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from buffer_worker.keys import (
    copy_facts_key,
    copy_items_key,
    copy_name,
    copy_open_key,
    partition_of,
    pending_field,
    pending_key,
)
from routing.phases import Side

MIRRORED = "m"
WORKER_HOWS = ("mirrored", "intents", "transferred", "delete_absent")
_BUSY_WAIT_S = (0.005, 0.2)  # the worker's first and longest wait for a claimed record

# Redis time in ms, and a claim's deadline: `c:<token>:<ms>`.
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function claim_deadline(mark)
  if mark and string.sub(mark, 1, 2) == 'c:' then return tonumber(string.match(mark, ':(%d+)$')) end
  return nil
end
"""

# KEYS: open, items. ARGV: copy, token, ttl ms, record keys... → per key 1 (claimed), 0 (mirroring's),
# 2 (copied already: `k`) or -n (another run's live claim, lapsing in n ms). A record is free when
# unmarked, claimed by this token (a claim renewed) or under a lapsed claim.
_CLAIM_LUA = (
    _NOW
    + """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return redis.error_reply('NOTOPEN') end
local mine = 'c:' .. ARGV[2] .. ':'
local value = mine .. (now + tonumber(ARGV[3]))
local out, taken = {}, {}
for first = 4, #ARGV, 1000 do  -- a few calls per page rather than two per record
  local last = math.min(first + 999, #ARGV)
  local marks = redis.call('HMGET', KEYS[2], unpack(ARGV, first, last))
  for j = 1, #marks do
    local mark = marks[j]
    if mark == false then mark = nil end
    local deadline = claim_deadline(mark)
    if not mark or (deadline and (deadline <= now or string.sub(mark, 1, #mine) == mine)) then
      taken[#taken + 1] = ARGV[first + j - 1]
      taken[#taken + 1] = value
      out[#out + 1] = 1
    elseif deadline then
      out[#out + 1] = now - deadline
    elseif mark == 'k' then
      out[#out + 1] = 2
    else
      out[#out + 1] = 0
    end
  end
end
for first = 1, #taken, 1000 do
  redis.call('HSET', KEYS[2], unpack(taken, first, math.min(first + 999, #taken)))
end
return out
"""
)

# KEYS: items. ARGV: token, n, n record keys written, other record keys... This token's claims of the
# records written become `k` (copied: a later pass skips them), the others are dropped; a record
# mirroring marked meanwhile stays marked.
_RELEASE_LUA = """
local mine = 'c:' .. ARGV[1] .. ':'
local written = tonumber(ARGV[2])
local copied, dropped = {}, {}
for first = 3, #ARGV, 1000 do
  local last = math.min(first + 999, #ARGV)
  local marks = redis.call('HMGET', KEYS[1], unpack(ARGV, first, last))
  for j = 1, #marks do
    local mark, i = marks[j], first + j - 1
    if mark and string.sub(mark, 1, #mine) == mine then
      if i < 3 + written then
        copied[#copied + 1] = ARGV[i]
        copied[#copied + 1] = 'k'
      else
        dropped[#dropped + 1] = ARGV[i]
      end
    end
  end
end
for first = 1, #copied, 1000 do
  redis.call('HSET', KEYS[1], unpack(copied, first, math.min(first + 999, #copied)))
end
for first = 1, #dropped, 1000 do
  redis.call('HDEL', KEYS[1], unpack(dropped, first, math.min(first + 999, #dropped)))
end
return 0
"""

# KEYS: open, facts, items hashes. ARGV: triples (copy, index of its items hash in KEYS, record key).
# Marks each record of an open copy as mirroring's (counting the record once, and every intent), unless
# a live claim holds it. Returns the positions (1-based triples) still claimed, the open copies the batch
# touches, and the positions of records neither mirroring nor this copy had written (`fresh`).
_MARK_LUA = (
    _NOW
    + """
local busy, open, seen, fresh = {}, {}, {}, {}
for i = 1, #ARGV, 3 do
  local copy = ARGV[i]
  if seen[copy] == nil then
    seen[copy] = redis.call('HEXISTS', KEYS[1], copy) == 1
    if seen[copy] then open[#open + 1] = copy end
  end
  if seen[copy] then
    local items = KEYS[tonumber(ARGV[i + 1])]
    local mark = redis.call('HGET', items, ARGV[i + 2])
    local deadline = claim_deadline(mark)
    if deadline and deadline > now then
      busy[#busy + 1] = (i + 2) / 3
    else
      redis.call('HINCRBY', KEYS[2], copy .. '|intents', 1)
      if mark ~= 'm' then
        if mark ~= 'k' then fresh[#fresh + 1] = (i + 2) / 3 end
        redis.call('HSET', items, ARGV[i + 2], 'm')
        redis.call('HINCRBY', KEYS[2], copy .. '|mirrored', 1)
      end
    end
  end
end
return {busy, open, fresh}
"""
)

# KEYS: open, facts. ARGV: pairs (`<copy>|<how>`, count). Counts only for copies still open.
_COUNT_LUA = """
for i = 1, #ARGV, 2 do
  local copy = string.match(ARGV[i], '^(.*)|[^|]*$')
  if redis.call('HEXISTS', KEYS[1], copy) == 1 then redis.call('HINCRBY', KEYS[2], ARGV[i], ARGV[i + 1]) end
end
return 0
"""


class CopyNotOpenError(RuntimeError):
    """The copy's claim found it closed (reset by another run): its records are not guarded."""


@dataclass(frozen=True, slots=True)
class Claim:
    claimed: list[str]  # record keys the copy may write until `deadline`
    skipped: list[str]  # marked by mirroring: new holds a state at least as new
    deadline: float  # time.monotonic() after which the claim may have lapsed
    # Claimed by an earlier run that died (its lock is gone, its claims not yet): they must be claimed
    # again once they lapse, in `held_s` at most; a write it sent just before it died may still land.
    held: list[str] = field(default_factory=list)
    held_s: float = 0.0
    copied: list[str] = field(default_factory=list)  # written by this copy before (a sweep skips them)


class CopyClaims:
    """The copy's side, for one tenant's resource."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str,
        partitions: int,
        tenant: str,
        resource: str,
        ttl_s: float,
    ) -> None:
        self._redis = client
        self._partition = partition_of(tenant, partitions)
        self._prefix = prefix
        self.copy = copy_name(tenant, resource)
        self._open = copy_open_key(prefix, self._partition)
        self._items = copy_items_key(prefix, self._partition, self.copy)
        self._facts = copy_facts_key(prefix, self._partition)
        self._pending = pending_key(prefix, self._partition)
        self._pending_field = pending_field(tenant, Side.NEW.value)
        self._ttl_s = ttl_s
        self._token = os.urandom(8).hex()  # this run's claims
        self._claim = client.register_script(_CLAIM_LUA)
        self._release = client.register_script(_RELEASE_LUA)

    @property
    def ttl_s(self) -> float:
        return self._ttl_s

    async def open(self) -> None:
        """From now on the worker marks this copy's records before writing them (kept if open already)."""
        await self._redis.hsetnx(self._open, self.copy, int(time.time() * 1000))

    async def close(self) -> None:
        """The copy is done: the worker stops marking, and the marks go (the counts stay)."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hdel(self._open, self.copy)
            pipe.delete(self._items)
            await pipe.execute()

    async def reset(self) -> None:
        """Forget marks and counts: a copy started again from the first page (`--restart`)."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hdel(self._facts, *(f"{self.copy}|{how}" for how in WORKER_HOWS))
            pipe.delete(self._items)
            await pipe.execute()

    async def intents(self) -> int:
        """Mirrored intents applied to this resource's records since the copy's facts began."""
        return int(await self._redis.hget(self._facts, f"{self.copy}|intents") or 0)

    async def intents_settled(self, within_s: float) -> bool:
        """Wait, at most `within_s`, until the tenant has no intent toward new appended and not applied
        yet (the worker counts an intent when it applies it, not when a client's write lands on old);
        whether it got there."""
        deadline = time.monotonic() + within_s
        while int(await self._redis.hget(self._pending, self._pending_field) or 0) > 0:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    async def claim(self, keys: Sequence[str]) -> Claim:
        if not keys:
            return Claim([], [], time.monotonic() + self._ttl_s)
        started = time.monotonic()
        try:
            taken: Any = await self._claim(
                keys=[self._open, self._items], args=[self.copy, self._token, int(self._ttl_s * 1000), *keys]
            )
        except aioredis.ResponseError as exc:
            if "NOTOPEN" in str(exc):
                raise CopyNotOpenError(f"the copy {self.copy} was closed by another run") from None
            raise
        answers = [int(answer) for answer in taken]
        claimed = [key for key, answer in zip(keys, answers, strict=True) if answer == 1]
        skipped = [key for key, answer in zip(keys, answers, strict=True) if answer == 0]
        held = [key for key, answer in zip(keys, answers, strict=True) if answer < 0]
        held_s = -min(answers) / 1000 if held else 0.0
        copied = [key for key, answer in zip(keys, answers, strict=True) if answer == 2]
        return Claim(claimed, skipped, started + self._ttl_s, held, held_s, copied)

    async def release(self, keys: Sequence[str], *, written: Sequence[str] = ()) -> None:
        """Drop this run's claims of `keys`; those of `written` become `copied` marks instead (kept for a
        page read again or a sweep, which must not write a record twice; `close` drops them)."""
        done = set(written)  # once: a page's 500 keys against a set built per key cost 3.7 % of the copy
        others = [key for key in keys if key not in done]
        if keys:
            await self._release(keys=[self._items], args=[self._token, len(written), *written, *others])


@dataclass(frozen=True, slots=True)
class Marked:
    """What marking a batch's records found (positions in the list marked)."""

    busy: list[int]  # claimed by the copy: not marked yet, wait and mark again
    open: set[str]  # the open copies (`<tenant>|<resource>`) among them
    # Records first written by mirroring since the copy opened, and not written by the copy either: new
    # may not hold them, or hold an older state. Their intents are settled from the authoritative side
    # rather than replayed (a PATCH replayed onto a service whose PATCH creates would make a partial
    # record, which the copy would then leave alone).
    fresh: list[int]


class Outcomes:
    """How an applier resolved intents whose record new did not hold as they assumed (settled from the
    authoritative side, a delete of a record new did not have), counted in memory until the worker adds
    them to the facts of the copies open (`CopyMarks.count`)."""

    def __init__(self) -> None:
        self._counts: Counter[tuple[str, str, str]] = Counter()

    def note(self, tenant: str, resource: str, how: str) -> None:
        self._counts[(tenant, resource, how)] += 1

    def drain(self) -> Counter[tuple[str, str, str]]:
        counts, self._counts = self._counts, Counter()
        return counts


class CopyMarks:
    """The worker's side: marks before a batch is applied, counts after."""

    def __init__(self, client: aioredis.Redis, *, prefix: str, partitions: int) -> None:
        self._redis = client
        self._prefix = prefix
        self._partitions = partitions
        self._mark = client.register_script(_MARK_LUA)
        self._count = client.register_script(_COUNT_LUA)

    async def mark_once(self, partition: int, records: Sequence[tuple[str, str, str]]) -> Marked:
        """Mark each (tenant, resource, record key) of an open copy as mirroring's, unless the copy holds
        a claim on it (the caller waits for those, then calls again with them: a claim is released once
        the copy wrote its page, or lapses)."""
        if not records:
            return Marked([], set(), [])
        copies: dict[str, int] = {}
        args: list[str | int] = []
        for tenant, resource, key in records:
            copy = copy_name(tenant, resource)
            index = copies.setdefault(copy, len(copies) + 3)
            args += [copy, index, key]
        keys = [copy_open_key(self._prefix, partition), copy_facts_key(self._prefix, partition)]
        keys += [copy_items_key(self._prefix, partition, copy) for copy in copies]
        reply: Any = await self._mark(keys=keys, args=args)
        busy, open_copies, fresh = reply
        return Marked(
            [int(i) - 1 for i in busy],
            {c.decode() if isinstance(c, bytes) else str(c) for c in open_copies},
            [int(i) - 1 for i in fresh],
        )

    async def count(self, counts: Counter[tuple[str, str, str]]) -> None:
        """Add (tenant, resource, how) counts to the facts of the copies still open."""
        by_partition: dict[int, list[str | int]] = {}
        for (tenant, resource, how), n in counts.items():
            args = by_partition.setdefault(partition_of(tenant, self._partitions), [])
            args += [f"{copy_name(tenant, resource)}|{how}", n]
        for partition, args in by_partition.items():
            await self._count(
                keys=[copy_open_key(self._prefix, partition), copy_facts_key(self._prefix, partition)],
                args=args,
            )


def busy_wait_s(attempt: int) -> float:
    """The worker's wait before it tries to mark a claimed record again."""
    return float(min(_BUSY_WAIT_S[0] * 2**attempt, _BUSY_WAIT_S[1]))


@dataclass(frozen=True, slots=True)
class CopyFacts:
    """What the worker counted of one copy, and whether it is open."""

    open: bool
    counts: dict[str, int]


async def read_facts(
    client: aioredis.Redis, *, prefix: str, partitions: int, copies: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], CopyFacts]:
    """The facts of each (tenant, resource), in one pipeline."""
    wanted = list(copies)
    if not wanted:
        return {}
    async with client.pipeline(transaction=False) as pipe:
        for tenant, resource in wanted:
            partition = partition_of(tenant, partitions)
            copy = copy_name(tenant, resource)
            pipe.hexists(copy_open_key(prefix, partition), copy)
            pipe.hmget(copy_facts_key(prefix, partition), [f"{copy}|{how}" for how in WORKER_HOWS])
        replies: list[Any] = await pipe.execute()
    found: dict[tuple[str, str], CopyFacts] = {}
    for index, copy_id in enumerate(wanted):
        is_open, values = replies[2 * index], replies[2 * index + 1]
        counts = {how: int(value or 0) for how, value in zip(WORKER_HOWS, values, strict=True)}
        found[copy_id] = CopyFacts(bool(is_open), counts)
    return found


async def all_facts(
    client: aioredis.Redis, *, prefix: str, partitions: int
) -> dict[tuple[str, str, str], int]:
    """Every count of every copy: (tenant, resource, how) → n (one HGETALL per partition)."""
    async with client.pipeline(transaction=False) as pipe:
        for partition in range(partitions):
            pipe.hgetall(copy_facts_key(prefix, partition))
        replies: list[Any] = await pipe.execute()
    found: dict[tuple[str, str, str], int] = {}
    for reply in replies:
        for name, value in reply.items():
            tenant, resource, how = (name.decode() if isinstance(name, bytes) else name).split("|")
            found[(tenant, resource, how)] = int(value)
    return found
