"""The buffer worker: owns partitions by lease and applies their intents in stream order.

Ordering: one partition is read by one consumer name, `p<N>`, whoever holds its lease. Entries delivered
but not acknowledged stay in that consumer's pending list, so a worker taking a partition over first
re-reads the pending list from id 0 (the dead owner's unfinished batch, in order) and only then reads new
entries with `>`. Entries pending under any other consumer name are XAUTOCLAIMed into that list first.
Acknowledgement (XACK) and the tenant's pending counter decrement happen in one MULTI,
after the apply succeeded: a crash between apply and ack delivers the entry again.

Exactly once in effect, for an applier that can settle an intent from the authoritative side (one with
`resolve`, the HTTP applier): the worker keeps a ledger of applied intent ids (`redis_ledger`), marked
"sending" before a batch is sent and "applied" in the MULTI that acknowledges it. An entry whose id the
ledger holds as applied (a copy the proxy's spool appended again, or one delivered twice) is skipped. An
entry whose fate is unknown is *in doubt* and is resolved, not sent again: one read from the pending list
(delivered before, to a worker that died or before a Redis error), one the ledger says is "sending", one
older than the ledger's retention, and any intent after a failed or timed-out attempt. Appliers with
their own ledger (PostgreSQL, in the mirror's transaction) apply every delivery as it comes.

During a REST copy (`cutover backfill` of a tenant's resource), every record an intent toward new writes
is marked as mirroring's before its batch is applied, and a record the copy has claimed is waited for
(`buffer_worker.copy_marks`): the copy never overwrites a mirrored write, nor mirroring a claimed one.

Failures: an unreachable mirror is an outage and is retried without limit (capped exponential backoff
with full jitter, `buffer_worker.backoff`); error answers are retried up to `max_attempts`; a permanent
error dead-letters the intent at once. A
dead-lettered intent blocks its tenant (later intents of that tenant are parked behind it, in order,
because applying them out of order could corrupt the mirror) but never the partition's other tenants.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, TypeVar

import redis.asyncio as aioredis
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind, Status, StatusCode
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from buffer_worker.applier import Applier, BatchApplier
from buffer_worker.apply_errors import (
    PermanentApplyError,
    TransientApplyError,
    UnapplicableIntentError,
    UnreachableError,
)
from buffer_worker.backoff import Backoff
from buffer_worker.copy_marks import CopyMarks, Outcomes, busy_wait_s
from buffer_worker.dead_letters import CAUSE_APPLY, CAUSE_INTENT, CAUSE_PARKED, Attempt, DeadLetterOps
from buffer_worker.intent import Intent, IntentDecodeError
from buffer_worker.keys import (
    CONSUMER_GROUP,
    blocked_key,
    dead_letter_key,
    pending_field,
    pending_key,
    stream_key,
    worker_stats_key,
    workers_key,
)
from buffer_worker.lease import PartitionLeases
from buffer_worker.liveness import default_worker_id
from buffer_worker.records import RecordMap
from buffer_worker.redis_ledger import APPLIED, SENDING, RedisLedger
from buffer_worker.throttle import TenantThrottle
from common.store_errors import REDIS_ERRORS
from common.tasks import cancel_and_wait
from config.settings import Settings
from routing.phases import Side
from telemetry.tracing import context_from_traceparent

log = logging.getLogger("cutover.worker")
T = TypeVar("T")
Decoded = tuple[bytes, dict[bytes, bytes], Intent | IntentDecodeError]
_REDRIVE_CHECK_S = 0.5
_LEDGER_PRUNE_S = 60.0


@dataclass(frozen=True, slots=True)
class Failure:
    """Why an intent could not be applied; `intrinsic` when it is a property of the intent itself;
    `status` and `excerpt` as `buffer_worker.apply_errors` describes them."""

    detail: str
    intrinsic: bool = False
    status: str | None = None
    excerpt: str | None = None


@dataclass
class WorkerStats:
    applied: int = 0
    retries: int = 0
    dead_lettered: int = 0
    parked: int = 0
    duplicates: int = 0  # skipped: the ledger holds them as applied
    in_doubt: int = 0  # resolved from the authoritative side instead of sent again


class Worker:
    def __init__(
        self,
        settings: Settings,
        applier: Applier,
        *,
        client: aioredis.Redis | None = None,
        worker_id: str | None = None,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self._settings = settings
        self._buffer = settings.buffer
        self._config = settings.worker
        self._applier = applier
        self._redis = client or aioredis.Redis.from_url(
            settings.redis_url.get_secret_value(), socket_timeout=self._config.block_ms / 1000 + 5
        )
        self.worker_id = worker_id or default_worker_id()
        self._leases = PartitionLeases(
            self._redis, prefix=self._buffer.key_prefix, owner=self.worker_id, ttl_s=self._config.lease_ttl_s
        )
        self._owned: dict[int, asyncio.Task[None]] = {}
        self._releasing: set[int] = set()
        self._redis_deadline_s = self._config.block_ms / 1000 + 5.0
        self._workers_key = workers_key(self._buffer.key_prefix)
        self._throttle = TenantThrottle(self._config.tenant_rate_per_s)
        self.stats = WorkerStats()
        self._published = WorkerStats()  # the part of `stats` already added to the shared totals
        self._tracer = None if tracer_provider is None else tracer_provider.get_tracer("cutover.worker")
        self._resolve: Callable[[Intent], Awaitable[None]] | None = getattr(applier, "resolve", None)
        self._ledger = (
            None
            if self._resolve is None
            else RedisLedger(
                self._redis,
                prefix=self._buffer.key_prefix,
                retention_s=self._config.ledger_retention_h * 3600,
            )
        )
        # Records of REST resources, for the copy's marks (none without resources: nothing to copy).
        self._records = RecordMap(settings) if settings.data.rest.resources else None
        self._copy_marks = (
            None
            if self._records is None
            else CopyMarks(self._redis, prefix=self._buffer.key_prefix, partitions=self._buffer.partitions)
        )
        self._outcomes: Outcomes | None = getattr(applier, "outcomes", None)
        self._dead_letters = DeadLetterOps(
            self._redis,
            prefix=self._buffer.key_prefix,
            applier=applier,
            retrying=self._retrying_detail,
            ledger=self._ledger,
            on_applied=self._count_applied,
            before_apply=self._mark_for_copies,
        )

    @property
    def owned_partitions(self) -> list[int]:
        return sorted(self._owned)

    async def run(self, stop: asyncio.Event) -> None:
        """Hold leases and drain partitions until `stop` is set; then finish in-flight batches and release."""
        await self._applier.start()
        try:
            while not stop.is_set():
                try:
                    await self._bounded(self._balance())
                except REDIS_ERRORS as exc:
                    log.warning("lease round failed: %s", type(exc).__name__)
                await self._publish_stats()
                # asyncio.wait, not wait_for: on Python 3.11 a cancel landing as wait_for times out comes
                # out as TimeoutError, and suppressing that would swallow the cancellation.
                stopping = asyncio.ensure_future(stop.wait())
                try:
                    await asyncio.wait({stopping}, timeout=self._config.lease_ttl_s / 3)
                finally:
                    stopping.cancel()
        finally:
            for partition in list(self._owned):
                await self._drop(partition, graceful=True)
            await self._publish_stats()
            with suppress(*REDIS_ERRORS):
                await self._redis.zrem(self._workers_key, self.worker_id)  # no longer counted in fair shares
            await self._applier.close()
            await self._redis.aclose()

    async def _publish_stats(self) -> None:
        """Add what this worker counted since the last call to the buffer-wide totals in Redis, which the
        proxies' `/metrics` report (a worker serves no HTTP itself)."""
        snapshot = dataclasses.replace(self.stats)
        delta = {
            f.name: getattr(snapshot, f.name) - getattr(self._published, f.name)
            for f in dataclasses.fields(WorkerStats)
        }
        if not any(delta.values()):
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for name, count in delta.items():
                    if count:
                        pipe.hincrby(worker_stats_key(self._buffer.key_prefix), name, count)
                await self._bounded(pipe.execute())
        except REDIS_ERRORS as exc:
            log.warning("could not publish worker counters: %s", type(exc).__name__)  # retried next round
            return
        self._published = snapshot

    async def _balance(self) -> None:
        """Renew owned leases, drop lost ones, take free partitions up to a fair share of the live workers."""
        workers_key = self._workers_key
        now_ms = time.time() * 1000
        ttl_ms = self._config.lease_ttl_s * 1000
        await self._redis.zadd(workers_key, {self.worker_id: now_ms})
        # A worker is alive while its last beat is younger than one lease TTL (it beats every TTL/3): by the
        # time a dead worker's leases expire it no longer counts, so the survivors' share covers them.
        await self._redis.zremrangebyscore(workers_key, 0, now_ms - ttl_ms)
        alive = max(1, await self._redis.zcard(workers_key))
        share = math.ceil(self._buffer.partitions / alive)
        for partition, task in list(self._owned.items()):
            if task.done() or not await self._leases.renew(partition):
                log.warning("lost partition %d", partition)
                await self._drop(partition)
        for partition in range(self._buffer.partitions):
            if len(self._owned) >= share:
                break
            if partition not in self._owned and await self._leases.acquire(partition):
                log.info("worker %s took partition %d", self.worker_id, partition)
                self._owned[partition] = asyncio.create_task(
                    self._drain(partition), name=f"partition-{partition}"
                )
        while len(self._owned) > share:  # a worker joined: hand partitions back
            await self._drop(max(self._owned), graceful=True)

    async def _drop(self, partition: int, *, graceful: bool = False) -> None:
        """Stop draining `partition`. Graceful: let the batch in hand finish (so the next owner starts
        clean), bounded in time; otherwise (the lease is lost) stop at once."""
        task = self._owned.pop(partition)
        if graceful:
            self._releasing.add(partition)
            with suppress(TimeoutError, asyncio.CancelledError):
                async with asyncio.timeout(self._config.block_ms / 1000 + self._config.lease_ttl_s):
                    await asyncio.shield(task)
            self._releasing.discard(partition)
        # Without bound: the lease is released below, and a drain still running must not outlive it.
        await cancel_and_wait(task, timeout_s=None)
        with suppress(*REDIS_ERRORS):
            await self._leases.release(partition)

    async def _drain(self, partition: int) -> None:
        prefix = self._buffer.key_prefix
        stream = stream_key(prefix, partition)
        consumer = f"p{partition}"
        with suppress(ResponseError):  # BUSYGROUP: the group exists already
            await self._redis.xgroup_create(stream, CONSUMER_GROUP, id="0", mkstream=True)
        cursor = "0"  # first our pending list (a previous owner's unacknowledged entries), then new ones
        next_redrive_check = 0.0
        next_prune = time.monotonic() + _LEDGER_PRUNE_S
        claimed = False
        while partition not in self._releasing:
            if time.monotonic() >= next_redrive_check:
                next_redrive_check = time.monotonic() + _REDRIVE_CHECK_S
                await self._redrive_requested(partition)
            try:
                if self._ledger is not None and time.monotonic() >= next_prune:
                    next_prune = time.monotonic() + _LEDGER_PRUNE_S
                    await self._bounded(self._ledger.prune(partition))
                if not claimed:  # inside the try: a Redis error here is retried like any read
                    await self._claim_foreign_pending(stream, consumer)
                    claimed = True
                reply: Any = await self._bounded(
                    self._redis.xreadgroup(
                        CONSUMER_GROUP.decode(),
                        consumer,
                        {stream: cursor},
                        count=self._config.batch_size,
                        block=None if cursor == "0" else self._config.block_ms,
                    )
                )
                entries = reply[0][1] if reply else []
                if not entries:
                    cursor = ">"  # the pending list is exhausted (or there was none): new entries from now on
                    continue
                if cursor == ">" and len(entries) < self._config.batch_size and self._config.linger_ms:
                    entries += await self._linger(stream, consumer, self._config.batch_size - len(entries))
                # Re-check ownership right before applying: a worker that stalled past its TTL must not
                # apply a batch that the partition's new owner is applying too.
                owned, blocked = await self._bounded(self._renew_and_read_blocked(partition))
                if not owned:
                    log.warning("partition %d: lease lost before applying a batch; stopping", partition)
                    return
                # Entries read from the pending list were delivered before: their fate is unknown.
                await self._process(partition, entries, blocked, redelivered=cursor != ">")
                if cursor != ">":
                    cursor = entries[-1][0].decode()
            except REDIS_ERRORS as exc:
                # A read that failed on our side may still have been served by Redis (the entries are
                # then delivered to us, in the pending list, but never seen), and a failed acknowledgement
                # leaves a batch pending: either way, start over from our pending list.
                log.warning("partition %d: %s; re-reading the pending list", partition, type(exc).__name__)
                cursor = "0"
                await asyncio.sleep(0.5)

    async def _claim_foreign_pending(self, stream: str, consumer: str) -> None:
        """XAUTOCLAIM every entry pending under another consumer name (one that read the stream without
        following the one-name-per-partition rule, e.g. by hand) into this partition's pending list, which
        is then read from id 0 in stream order. Normally there is none: every owner reads as `consumer`."""
        start = "0-0"
        while True:
            reply: Any = await self._bounded(
                self._redis.xautoclaim(
                    stream, CONSUMER_GROUP.decode(), consumer, min_idle_time=0, start_id=start, count=500
                )
            )
            start = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
            if start == "0-0":
                return

    async def _bounded(self, call: Awaitable[T]) -> T:
        """Every Redis round trip gets a hard deadline (block time + socket timeout). A call stuck beyond
        it (seen after Redis was paused while commands were being cancelled) is abandoned: the timeout
        cancels it, which makes redis-py drop that connection, and the caller retries."""
        try:
            async with asyncio.timeout(self._redis_deadline_s):
                return await call
        except TimeoutError as exc:
            raise RedisTimeoutError(f"no answer from Redis within {self._redis_deadline_s:.1f} s") from exc

    async def _linger(self, stream: str, consumer: str, room: int) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """Wait `linger_ms` once for a short batch to fill up: fewer, larger applies under steady load."""
        await asyncio.sleep(self._config.linger_ms / 1000)
        more: Any = await self._bounded(
            self._redis.xreadgroup(CONSUMER_GROUP.decode(), consumer, {stream: ">"}, count=room, block=None)
        )
        return list(more[0][1]) if more else []

    async def _renew_and_read_blocked(self, partition: int) -> tuple[bool, dict[str, str]]:
        """Renew the lease and read the partition's blocked tenants in one round trip."""
        async with self._redis.pipeline(transaction=False) as pipe:
            await self._leases.queue_renew(pipe, partition)
            pipe.hgetall(blocked_key(self._buffer.key_prefix, partition))
            renewed, raw_blocked = await pipe.execute()
        return bool(renewed), {k.decode(): v.decode() for k, v in raw_blocked.items()}

    async def _process(
        self,
        partition: int,
        entries: list[tuple[bytes, dict[bytes, bytes]]],
        blocked: dict[str, str],
        *,
        redelivered: bool = False,
    ) -> None:
        prefix = self._buffer.key_prefix
        decoded = _decode(entries)
        settle = await self._mark_for_copies(
            partition, [i for _id, _f, i in decoded if isinstance(i, Intent) and i.tenant not in blocked]
        )
        applied = await self._apply_whole_batch(decoded, blocked, settle)
        if applied is None:
            applied = await self._apply_one_by_one(partition, decoded, blocked, redelivered, settle)
        async with self._redis.pipeline(transaction=True) as pipe:
            if self._ledger is not None:  # in the acknowledging MULTI: lost together, or kept together
                self._ledger.queue_applied(pipe, partition, [intent.intent_id for intent in applied])
            pipe.xack(stream_key(prefix, partition), CONSUMER_GROUP, *(entry_id for entry_id, _ in entries))
            for field, count in Counter(pending_field(i.tenant, i.target) for i in applied).items():
                pipe.hincrby(pending_key(prefix, partition), field, -count)
            # Everything up to the last entry is acknowledged and nothing earlier is pending (one ordered
            # consumer per partition), so entries below it can go.
            pipe.xtrim(stream_key(prefix, partition), minid=entries[-1][0].decode(), approximate=False)
            await self._bounded(pipe.execute())
        self.stats.applied += len(applied)
        await self._count_outcomes()

    async def _mark_for_copies(self, partition: int, intents: list[Intent]) -> set[str]:
        """Mark the records these intents write toward new as mirroring's in the copies open, before any
        of them is applied; wait while a copy holds a claim on one (`buffer_worker.copy_marks`). Returns
        the ids of the intents to settle rather than replay: the first of a record the copy has not
        written."""
        if self._copy_marks is None or self._records is None:
            return set()
        records: list[tuple[str, str, str]] = []
        owners: list[Intent] = []
        for intent in intents:
            record = self._records.of(intent) if intent.target is Side.NEW else None
            if record is not None and record.resource:
                records.append((intent.tenant, record.resource, record.key))
                owners.append(intent)
        settle: set[str] = set()
        attempt = 0
        while records:
            marked = await self._bounded(self._copy_marks.mark_once(partition, records))
            settle.update(owners[i].intent_id for i in marked.fresh)
            records, owners = [records[i] for i in marked.busy], [owners[i] for i in marked.busy]
            if records:
                await asyncio.sleep(busy_wait_s(attempt))
                attempt += 1
        return settle

    async def _count_outcomes(self) -> None:
        """Add what the applier settled for records of open copies to their facts (best effort: a count
        that Redis did not take is lost, never an intent)."""
        if self._outcomes is None or self._copy_marks is None:
            return
        counts = self._outcomes.drain()
        if counts:
            try:
                await self._bounded(self._copy_marks.count(counts))
            except REDIS_ERRORS as exc:
                log.warning("copy facts not counted: %s", type(exc).__name__)

    async def _apply_whole_batch(
        self, decoded: list[Decoded], blocked: dict[str, str], settle: set[str]
    ) -> list[Intent] | None:
        """The fast path: an applier with `apply_batch` applies every entry in one call (one transaction).
        Taken only when every entry decodes and no tenant in it is blocked; returns None when not taken or
        when the batch fails, and the caller then applies entry by entry, which isolates the bad intent."""
        if not isinstance(self._applier, BatchApplier):
            return None
        apply_batch = self._applier.apply_batch
        # With a ledger, an intent may skip it only where the applier's own applies are idempotent.
        batchable: Callable[[Intent], bool] = getattr(self._applier, "batchable", lambda _intent: True)
        intents: list[Intent] = []
        for _entry_id, _fields, intent in decoded:
            if isinstance(intent, IntentDecodeError):
                return None
            if intent.tenant in blocked or (self._ledger is not None and not batchable(intent)):
                return None
            if intent.intent_id in settle and self._resolve is not None:
                return None  # settled one by one, by the applier that can
            intents.append(intent)
        if self._throttle.limited:
            for tenant, count in Counter(intent.tenant for intent in intents).items():
                await self._throttle.take(tenant, count)
        failure = await self._traced(
            intents,
            lambda: self._with_retry(lambda _doubt: apply_batch(intents), what=f"batch of {len(intents)}"),
        )
        return intents if failure is None else None

    async def _apply_one_by_one(
        self,
        partition: int,
        decoded: list[Decoded],
        blocked: dict[str, str],
        redelivered: bool,
        settle: set[str],
    ) -> list[Intent]:
        states = await self._ledger_states(partition, [d[2] for d in decoded], blocked)
        applied: list[Intent] = []
        applied_ids: set[str] = set()
        for entry_id, fields, intent in decoded:
            if isinstance(intent, IntentDecodeError):
                log.error("partition %d: dropping undecodable entry %s: %s", partition, entry_id, intent)
                await self._dead_letter(
                    partition, entry_id, fields, f"undecodable: {intent}", CAUSE_INTENT, status="undecodable"
                )
                continue
            if intent.tenant in blocked:
                reason = f"parked behind {blocked[intent.tenant]}"
                await self._dead_letter(
                    partition, entry_id, fields, reason, CAUSE_PARKED, behind=blocked[intent.tenant]
                )
                self.stats.parked += 1
                continue
            state = states.get(intent.intent_id, "")
            if state == APPLIED or intent.intent_id in applied_ids:
                # A copy of an intent applied before (the spool appended it twice, or it was delivered
                # again): acknowledged and counted off the tenant's pending intents, not applied again.
                self.stats.duplicates += 1
                applied.append(intent)
                continue
            in_doubt = self._ledger is not None and (
                redelivered or state == SENDING or self._ledger.forgets(intent.created_ms)
            )
            await self._throttle.take(intent.tenant)
            failure = await self._apply_with_retry(
                intent, in_doubt=in_doubt, settle=intent.intent_id in settle
            )
            if failure is None:
                applied.append(intent)
                applied_ids.add(intent.intent_id)
            else:
                cause = CAUSE_INTENT if failure.intrinsic else CAUSE_APPLY
                reason = f"apply failed: {failure.detail}"
                await self._dead_letter(
                    partition,
                    entry_id,
                    fields,
                    reason,
                    cause,
                    blocks=intent,
                    status=failure.status,
                    excerpt=failure.excerpt,
                )
                blocked[intent.tenant] = intent.intent_id
        return applied

    async def _ledger_states(
        self, partition: int, intents: list[Intent | IntentDecodeError], blocked: dict[str, str]
    ) -> dict[str, str]:
        """What the ledger knows of the batch's intents (marking the unknown ones as being sent)."""
        if self._ledger is None:
            return {}
        ids = [i.intent_id for i in intents if isinstance(i, Intent) and i.tenant not in blocked]
        states = await self._bounded(self._ledger.check(partition, ids))
        return dict(zip(ids, states, strict=True))

    async def _redrive_requested(self, partition: int) -> None:
        """Carry out the operators' requests on the partition's dead letters (re-drive, resolve, discard).
        Runs in the partition's own loop, between batches, so nothing newer of the tenant can overtake
        them."""
        try:
            await self._dead_letters.run_requested(partition)
        except REDIS_ERRORS as exc:
            log.warning("partition %d: dead-letter requests failed (%s)", partition, type(exc).__name__)

    def _count_applied(self, count: int) -> None:
        self.stats.applied += count

    async def _retrying_detail(self, intent: Intent, attempt: Attempt) -> str | None:
        failure = await self._traced(
            [intent], lambda: self._with_retry(attempt, what=f"intent {intent.intent_id}")
        )
        if failure is None:
            return None
        return failure.detail + (f": {failure.excerpt}" if failure.excerpt else "")

    async def _apply_with_retry(
        self, intent: Intent, *, in_doubt: bool = False, settle: bool = False
    ) -> Failure | None:
        """None once `intent` is applied; otherwise why it failed for good. An intent in doubt, and any
        intent after a failed attempt, is resolved (by an applier that can) rather than sent again; so is
        one to `settle` (the first of a record during a copy)."""
        resolve = self._resolve
        if in_doubt and resolve is not None:
            self.stats.in_doubt += 1

        async def attempt(doubt: bool) -> None:
            if doubt and resolve is not None:
                await resolve(intent)
            else:
                await self._applier.apply(intent)

        return await self._traced(
            [intent],
            lambda: self._with_retry(attempt, doubt=in_doubt or settle, what=f"intent {intent.intent_id}"),
        )

    async def _traced(
        self, intents: list[Intent], apply: Callable[[], Awaitable[Failure | None]]
    ) -> Failure | None:
        """Run `apply` inside one consumer span per intent, each continuing the trace of the write that
        made it (its `traceparent`). A single intent's span is made current, so the applier's request to
        the mirror carries it on."""
        if self._tracer is None:
            return await apply()
        spans = [
            self._tracer.start_span(
                f"process {intent.target.value}",
                context=context_from_traceparent(intent.traceparent),
                kind=SpanKind.CONSUMER,
                attributes={
                    "messaging.system": "redis",
                    "messaging.operation.type": "process",
                    "messaging.operation.name": "process",
                    "messaging.destination.name": f"{self._buffer.key_prefix}:intents",
                    "messaging.message.id": intent.intent_id,
                    "messaging.batch.message_count": len(intents),
                    "cutover.tenant": intent.tenant,
                    "cutover.target": intent.target.value,
                    "http.request.method": intent.method,
                },
            )
            for intent in intents
        ]
        token = otel_context.attach(trace.set_span_in_context(spans[0])) if len(spans) == 1 else None
        failure: Failure | None = Failure("not applied")
        try:
            failure = await apply()
            return failure
        finally:
            if token is not None:
                otel_context.detach(token)
            for span in spans:
                if failure is not None:
                    span.set_status(Status(StatusCode.ERROR, failure.detail))
                span.end()

    async def _with_retry(self, attempt: Attempt, *, doubt: bool = False, what: str) -> Failure | None:
        """Run `attempt(in_doubt)` until it succeeds (None) or fails for good (why): a permanent error at
        once, error answers after `max_attempts`, an unreachable mirror never (that is an outage). Any
        other exception is an apply failure like an error answer, never the end of the worker: a bug or a
        backend the applier cannot talk to must dead-letter the intent with its reason, or a restarted
        worker would die again on the same intent. After any failed attempt the intent is in doubt (the
        mirror may have applied it, or part of it, before the failure surfaced)."""
        backoff = Backoff(self._config.retry_initial_s, self._config.retry_max_s)
        attempts = 0
        # A hard deadline over the applier's own timeouts: an apply that produces no outcome at all (a
        # hung connection) must turn into a retry, never into a partition that stops for good.
        deadline_s = 2 * self._config.apply_timeout_s + 1
        while True:
            try:
                async with asyncio.timeout(deadline_s):
                    await attempt(doubt)
                return None
            except TimeoutError:
                self.stats.retries += 1
                delay_s = backoff.next_s()
                log.warning("%s: no outcome within %.0f s; retrying in %.2f s", what, deadline_s, delay_s)
                await asyncio.sleep(delay_s)
            except PermanentApplyError as exc:
                log.error("%s failed for good: %s", what, exc)
                intrinsic = isinstance(exc, UnapplicableIntentError)
                return Failure(exc.detail, intrinsic, exc.status, exc.excerpt)
            except TransientApplyError as exc:
                if not isinstance(exc, UnreachableError):
                    attempts += 1
                    if attempts >= self._config.max_attempts:
                        log.error("%s failed %d times: %s", what, attempts, exc)
                        return Failure(exc.detail, status=exc.status, excerpt=exc.excerpt)
                self.stats.retries += 1
                delay_s = backoff.next_s()
                log.warning("%s: retrying in %.2f s: %s", what, delay_s, exc)
                await asyncio.sleep(delay_s)
            except Exception as exc:  # noqa: BLE001 - any other failure is an apply failure (see above)
                attempts += 1
                reason = f"unexpected {type(exc).__name__}: {exc}"
                # The traceback once, when it first happens; the retries then say only what it was.
                log.error("%s: %s", what, reason, exc_info=attempts == 1)
                if attempts >= self._config.max_attempts:
                    return Failure(reason, status="unexpected")
                self.stats.retries += 1
                await asyncio.sleep(backoff.next_s())
            doubt = True

    async def _dead_letter(
        self,
        partition: int,
        entry_id: bytes,
        fields: dict[bytes, bytes],
        reason: str,
        cause: str,
        *,
        blocks: Intent | None = None,
        status: str | None = None,
        excerpt: str | None = None,
        behind: str | None = None,
    ) -> None:
        """Move an entry to the dead-letter stream, with why (`reason`), what kind of cause that is
        (`buffer_worker.dead_letters`), and what failed (`status`, `excerpt` of the answer) or, parked,
        the intent id it waits `behind`; with `blocks`, stop that intent's tenant behind it."""
        prefix = self._buffer.key_prefix
        record = {**fields, b"reason": reason.encode(), b"cause": cause.encode(), b"source_id": entry_id}
        if status is not None:
            record[b"status"] = status.encode()
        if excerpt is not None:
            record[b"excerpt"] = excerpt.encode()
        if behind is not None:
            record[b"behind"] = behind.encode()
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xadd(dead_letter_key(prefix, partition), record)  # type: ignore[arg-type]
            if blocks is not None:
                pipe.hsetnx(blocked_key(prefix, partition), blocks.tenant, blocks.intent_id)
            await pipe.execute()
        self.stats.dead_lettered += 1


def _decode(entries: list[tuple[bytes, dict[bytes, bytes]]]) -> list[Decoded]:
    """Each entry with its intent, or why it is not one."""
    decoded: list[Decoded] = []
    for entry_id, fields in entries:
        try:
            decoded.append((entry_id, fields, Intent.from_fields(fields)))
        except IntentDecodeError as exc:
            decoded.append((entry_id, fields, exc))
    return decoded
