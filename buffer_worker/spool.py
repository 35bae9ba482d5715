"""A local, fsync'd, append-only spool for intents while Redis is unreachable or slow.

`SpoolingSink` wraps the Redis producer. While Redis takes appends, intents go straight there. When an
append fails, that intent and every later one go to the spool file (fsync'd before the append returns,
so the client's 2xx still means durable), and a background task moves the spool to Redis, in order, when
Redis answers again. Order per tenant holds because nothing goes to Redis directly while any spooled
intent is still waiting: the spool is drained first.

Nothing is acknowledged that could not be mirrored, so the data plane asks `refusal()` *before* it
forwards a mirroring write, and answers 503 when an append would fail for sure:

| Redis                           | spool                     | a mirroring write                        |
|---------------------------------|---------------------------|------------------------------------------|
| takes appends, nothing spooled  | anything                  | goes to Redis (a broken spool: degraded) |
| unreachable, or intents spooled | writable, under the limit | goes to the spool                        |
| unreachable, or intents spooled | not writable              | refused: 503 `buffer_unavailable`        |
| unreachable, or intents spooled | at `spool_max_bytes`      | refused: 503 `buffer_full`               |

Health is what the last append, move or check found: the spool is checked at start (an unusable spool
stops the proxy), after every failed spool write, and by the background task every `check_interval_s`
(every `retry_interval_s` while something is wrong), which also pings Redis. What remains is a write
forwarded in the instant between a check and a failure nobody could foresee: its append tries the spool,
then Redis once more (only when no intent of its tenant waits in the spool, so order holds), and only
then answers 503 `buffer_unavailable` (the write was applied on the authoritative side; a retry is
applied idempotently).

File format, one record per intent: `>III` lengths of the three wire fields, the fields, then a CRC32 of
all of it. A torn tail (a crash mid-write) fails its CRC and is dropped: its append had not returned, so
no client was told it succeeded.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import zlib
from collections import Counter
from contextlib import suppress
from pathlib import Path

from buffer_worker.intent import Intent
from buffer_worker.producer import RedisIntentProducer
from buffer_worker.sink import BufferUnavailableError, Refusal
from buffer_worker.spool_check import check_spool, spool_problem
from common.tasks import cancel_and_wait
from routing.phases import Side

log = logging.getLogger("cutover.spool")
_HEADER = struct.Struct(">III")
_CRC = struct.Struct(">I")
_FIELDS = (b"m", b"b", b"r")


def encode_record(intent: Intent) -> bytes:
    fields = intent.to_fields()
    parts = [fields[name] for name in _FIELDS]
    body = _HEADER.pack(*(len(part) for part in parts)) + b"".join(parts)
    return body + _CRC.pack(zlib.crc32(body))


def decode_records(data: bytes) -> tuple[list[Intent], int]:
    """Intents in `data`, and the length of the valid prefix (a torn or corrupt tail is not counted)."""
    intents: list[Intent] = []
    offset = 0
    while offset + _HEADER.size <= len(data):
        lengths = _HEADER.unpack_from(data, offset)
        end = offset + _HEADER.size + sum(lengths)
        if end + _CRC.size > len(data):
            break
        (crc,) = _CRC.unpack_from(data, end)
        if crc != zlib.crc32(data[offset:end]):
            break
        cursor = offset + _HEADER.size
        fields: dict[bytes, bytes] = {}
        for name, length in zip(_FIELDS, lengths, strict=True):
            fields[name] = data[cursor : cursor + length]
            cursor += length
        intents.append(Intent.from_fields(fields))
        offset = end + _CRC.size
    return intents, offset


class SpoolingSink:
    def __init__(
        self,
        producer: RedisIntentProducer,
        path: str | os.PathLike[str],
        *,
        max_bytes: int,
        append_timeout_s: float = 0.5,
        retry_interval_s: float = 0.5,
        check_interval_s: float = 5.0,
    ) -> None:
        self._producer = producer
        self._path = Path(path)
        self._draining_path = self._path.with_name(self._path.name + ".draining")
        self._max_bytes = max_bytes
        self._append_timeout_s = append_timeout_s
        self._retry_interval_s = retry_interval_s
        self._check_interval_s = check_interval_s
        self._lock = asyncio.Lock()
        self._spooled: Counter[tuple[str, str]] = Counter()  # (tenant, side) → intents in the spool
        self.spooled_records = 0
        self.spooled_bytes = 0
        self.spooled_total = 0
        # Health as last seen: by an append, by the mover, or by the periodic check in `_tend`.
        self.redis_reachable = True
        self.spool_problem: str | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    # -- IntentSink ---------------------------------------------------------------------------------------
    def refusal(self) -> Refusal | None:
        if self.redis_reachable and self.spooled_records == 0:
            return None  # the append goes straight to Redis
        # Otherwise it goes to the spool: while Redis is away, and while earlier intents wait there.
        waiting = "Redis is unreachable" if not self.redis_reachable else "spooled intents are being moved"
        if self.spool_problem is not None:
            return Refusal(
                "buffer_unavailable", f"{waiting} and the local spool is not writable ({self.spool_problem})"
            )
        if self.spooled_bytes >= self._max_bytes:
            return Refusal("buffer_full", f"{waiting} and the local spool is at its limit")
        return None

    def spooled(self, tenant: str) -> int:
        return sum(count for (owner, _side), count in self._spooled.items() if owner == tenant)

    def status(self) -> dict[str, object]:
        return {
            "redis_reachable": self.redis_reachable,
            "spool_writable": self.spool_problem is None,
            "spool_problem": self.spool_problem,
            "spooled": self.spooled_records,
            "spool_bytes": self.spooled_bytes,
            "spooled_total": self.spooled_total,
            "accepting": self.refusal() is None,
        }

    async def append(self, intent: Intent) -> None:
        if self.spooled_records == 0 and self.redis_reachable and await self._to_redis(intent):
            return
        problem = await self._spool(intent)
        if problem is None:
            return
        # The forwarded write is applied on the authoritative side already: one more try at Redis before
        # the client is told to retry, unless intents of this tenant wait in the spool (order comes first).
        if self.spooled(intent.tenant) == 0 and await self._to_redis(intent):
            return
        raise BufferUnavailableError(
            intent.tenant, f"Redis is unreachable and the local spool did not take the intent ({problem})"
        )

    async def pending(self, tenant: str, target: Side) -> int:
        return self._spooled[(tenant, target.value)] + await self._producer.pending(tenant, target)

    async def close(self) -> None:
        self._closing = True
        await cancel_and_wait(self._task)
        await self._producer.close()

    # -- Redis --------------------------------------------------------------------------------------------
    async def _to_redis(self, intent: Intent) -> bool:
        try:
            # A timeout scope, not wait_for: no task to create and schedule on every mirrored write.
            async with asyncio.timeout(self._append_timeout_s):
                await self._producer.append(intent)
        except (BufferUnavailableError, TimeoutError) as exc:
            # A timed-out append may still land in Redis; the spooled copy then applies twice, which the
            # idempotent apply absorbs (same intent id) and the pending counter balances (+2, -2).
            self._set_redis(False, type(exc).__name__)
            return False
        self._set_redis(True)
        return True

    def _set_redis(self, reachable: bool, why: str = "") -> None:
        if reachable != self.redis_reachable:
            if reachable:
                log.info("Redis takes intents again")
            else:
                log.warning("Redis is unreachable or slow (%s); intents go to the spool %s", why, self._path)
                self._wake.set()  # the background task watches for its return
        self.redis_reachable = reachable

    # -- spool --------------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Refuse an unusable spool, count what a previous run left in it (it is moved to Redis first),
        start the background task."""
        await asyncio.to_thread(check_spool, self._path)
        for path in (self._draining_path, self._path):
            if path.exists():
                intents, valid = await asyncio.to_thread(_read_records, path)
                self._count(intents, valid)
                if valid < path.stat().st_size:
                    log.warning(
                        "spool %s: dropping a torn tail of %d bytes", path, path.stat().st_size - valid
                    )
                    with path.open("r+b") as handle:
                        handle.truncate(valid)
        if self.spooled_records:
            log.warning(
                "spool holds %d intents from a previous run; moving them to Redis", self.spooled_records
            )
        self._task = asyncio.create_task(self._run(), name="spool-mover")

    def _count(self, intents: list[Intent], size: int, sign: int = 1) -> None:
        for intent in intents:
            self._spooled[(intent.tenant, intent.target.value)] += sign
        self.spooled_records += sign * len(intents)
        self.spooled_bytes += sign * size

    async def _spool(self, intent: Intent) -> str | None:
        """Spool `intent`; None when it is durable there, else why not."""
        record = encode_record(intent)
        if self.spooled_bytes + len(record) > self._max_bytes:
            return "at its limit"
        try:
            async with self._lock:
                await asyncio.to_thread(_append_fsync, self._path, record)
                self._count([intent], len(record))
                self.spooled_total += 1
        except OSError as exc:
            # Checked again at once, so that the next write is refused before it is forwarded.
            problem = await asyncio.to_thread(spool_problem, self._path)
            self._set_spool_problem(problem or f"{self._path}: {exc.strerror or exc}")
            return self.spool_problem
        self._wake.set()
        return None

    def _set_spool_problem(self, problem: str | None) -> None:
        if problem != self.spool_problem:
            if problem is None:
                log.info("spool %s is writable again", self._path)
            else:
                log.error("spool %s is not writable: %s", self._path, problem)
                self._wake.set()
        self.spool_problem = problem

    async def _run(self) -> None:
        """Move the spool to Redis when it answers, and keep the health of both current: every
        `retry_interval_s` while anything is wrong or waiting, else every `check_interval_s`."""
        while True:
            healthy = await self._tend()
            if self._closing:
                # Cancelled, but a cancellation that lands inside a Redis command can be swallowed by
                # redis-py (seen with 8.2: a PING returned normally), so `close` says it here too.
                return
            if healthy:
                with suppress(TimeoutError):
                    async with asyncio.timeout(self._check_interval_s):
                        await self._wake.wait()
            else:
                # Not woken by spooled appends: under load they would turn retries into a busy loop.
                await asyncio.sleep(self._retry_interval_s)
            self._wake.clear()

    async def _tend(self) -> bool:
        self._set_spool_problem(await asyncio.to_thread(spool_problem, self._path))
        try:
            if self.spooled_records:
                await self._move_once()
                self._set_redis(True)
            else:
                async with asyncio.timeout(self._append_timeout_s * 4):
                    await self._producer.ping()
                self._set_redis(True)
        except (BufferUnavailableError, TimeoutError) as exc:
            log.debug("spool: Redis still unavailable (%s)", type(exc).__name__)
            self._set_redis(False, type(exc).__name__)
        except OSError as exc:
            # A spool that cannot be written is logged once, by `_set_spool_problem`; this repeats.
            log.debug("spool: could not move %s (%s)", self._draining_path, exc)
        return self.redis_reachable and self.spool_problem is None and not self.spooled_records

    async def _move_once(self) -> None:
        """Move the oldest spool file to Redis. Appends keep going to a fresh file meanwhile."""
        async with self._lock:
            if not self._draining_path.exists() and self._path.exists():
                self._path.rename(self._draining_path)
        if not self._draining_path.exists():
            return
        # Up to `spool_max_bytes` to read and decode: off the event loop, which serves clients.
        intents, valid = await asyncio.to_thread(_read_records, self._draining_path)
        for index, intent in enumerate(intents):
            try:
                async with asyncio.timeout(self._append_timeout_s * 4):
                    await self._producer.append(intent)
            except Exception:
                # Keep what is left, in order, for the next attempt (written off the event loop).
                await asyncio.to_thread(self._rewrite_draining, intents[index:])
                self._forget_moved(intents[:index])
                raise
            except BaseException:
                # Cancelled (shutting down): written at once, since nothing may be awaited any more.
                self._rewrite_draining(intents[index:])
                self._forget_moved(intents[:index])
                raise
        self._draining_path.unlink()
        self._count(intents, valid, sign=-1)
        log.info("spool: moved %d intents to Redis", len(intents))

    def _forget_moved(self, moved: list[Intent]) -> None:
        self._count(moved, sum(len(encode_record(i)) for i in moved), sign=-1)

    def _rewrite_draining(self, remaining: list[Intent]) -> None:
        temporary = self._draining_path.with_name(self._draining_path.name + ".tmp")
        temporary.write_bytes(b"".join(encode_record(intent) for intent in remaining))
        with temporary.open("rb") as handle:
            os.fsync(handle.fileno())
        temporary.replace(self._draining_path)


def _read_records(path: Path) -> tuple[list[Intent], int]:
    return decode_records(path.read_bytes())


def _append_fsync(path: Path, record: bytes) -> None:
    with path.open("ab") as handle:
        handle.write(record)
        handle.flush()
        os.fsync(handle.fileno())
