"""A local, fsync'd, append-only spool for intents while Redis is unreachable or slow.

`SpoolingSink` wraps the Redis producer. While Redis takes appends, intents go straight there. When an
append fails, that intent and every later one go to the spool file (fsync'd before the append returns,
so the client's 2xx still means durable), and a background task moves the spool to Redis, in order, when
Redis answers again. Order per tenant holds because nothing goes to Redis directly while any spooled
intent is still waiting: the spool is drained first.

A spool over `spool_max_bytes` stops accepting: `can_accept()` turns false and the data plane answers 503
to mirroring writes *before* they reach the authoritative side, so nothing is acknowledged that could
not be mirrored.

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
from buffer_worker.sink import BufferUnavailableError
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
    ) -> None:
        self._producer = producer
        self._path = Path(path)
        self._draining_path = self._path.with_name(self._path.name + ".draining")
        self._max_bytes = max_bytes
        self._append_timeout_s = append_timeout_s
        self._retry_interval_s = retry_interval_s
        self._lock = asyncio.Lock()
        self._spooled: Counter[tuple[str, str]] = Counter()  # (tenant, side) → intents in the spool
        self.spooled_records = 0
        self.spooled_bytes = 0
        self.spooled_total = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- IntentSink ---------------------------------------------------------------------------------------
    def can_accept(self) -> bool:
        return self.spooled_bytes < self._max_bytes

    def spooled(self, tenant: str) -> int:
        return sum(count for (owner, _side), count in self._spooled.items() if owner == tenant)

    def status(self) -> dict[str, object]:
        return {
            "spooled": self.spooled_records,
            "spool_bytes": self.spooled_bytes,
            "spooled_total": self.spooled_total,
            "accepting": self.can_accept(),
        }

    async def append(self, intent: Intent) -> None:
        if self.spooled_records == 0:
            try:
                # A timeout scope, not wait_for: no task to create and schedule on every mirrored write.
                async with asyncio.timeout(self._append_timeout_s):
                    await self._producer.append(intent)
                return
            except (BufferUnavailableError, TimeoutError) as exc:
                # A timed-out append may still land in Redis; the spooled copy then applies twice, which
                # the idempotent apply absorbs (same intent id) and the pending counter balances (+2, -2).
                log.warning(
                    "Redis did not take an intent (%s); spooling to %s", type(exc).__name__, self._path
                )
        await self._spool(intent)

    async def pending(self, tenant: str, target: Side) -> int:
        return self._spooled[(tenant, target.value)] + await self._producer.pending(tenant, target)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        await self._producer.close()

    # -- spool --------------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Count what a previous run left in the spool (it is moved to Redis first), start the mover."""
        for path in (self._draining_path, self._path):
            if path.exists():
                intents, valid = decode_records(path.read_bytes())
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
            self._wake.set()
        self._task = asyncio.create_task(self._mover(), name="spool-mover")

    def _count(self, intents: list[Intent], size: int, sign: int = 1) -> None:
        for intent in intents:
            self._spooled[(intent.tenant, intent.target.value)] += sign
        self.spooled_records += sign * len(intents)
        self.spooled_bytes += sign * size

    async def _spool(self, intent: Intent) -> None:
        record = encode_record(intent)
        if self.spooled_bytes + len(record) > self._max_bytes:
            raise BufferUnavailableError(intent.tenant, "Redis is unreachable and the local spool is full")
        async with self._lock:
            await asyncio.to_thread(_append_fsync, self._path, record)
            self._count([intent], len(record))
            self.spooled_total += 1
        self._wake.set()

    async def _mover(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.spooled_records:
                try:
                    await self._move_once()
                except (BufferUnavailableError, TimeoutError, OSError) as exc:
                    log.debug("spool: Redis still unavailable (%s)", type(exc).__name__)
                    await asyncio.sleep(self._retry_interval_s)

    async def _move_once(self) -> None:
        """Move the oldest spool file to Redis. Appends keep going to a fresh file meanwhile."""
        async with self._lock:
            if not self._draining_path.exists() and self._path.exists():
                self._path.rename(self._draining_path)
        if not self._draining_path.exists():
            return
        intents, valid = decode_records(self._draining_path.read_bytes())
        for index, intent in enumerate(intents):
            try:
                await asyncio.wait_for(self._producer.append(intent), self._append_timeout_s * 4)
            except BaseException:
                # Keep what is left, in order, for the next attempt.
                moved = intents[:index]
                self._rewrite_draining(intents[index:])
                self._count(moved, sum(len(encode_record(i)) for i in moved), sign=-1)
                raise
        self._draining_path.unlink()
        self._count(intents, valid, sign=-1)
        log.info("spool: moved %d intents to Redis", len(intents))

    def _rewrite_draining(self, remaining: list[Intent]) -> None:
        temporary = self._draining_path.with_name(self._draining_path.name + ".tmp")
        temporary.write_bytes(b"".join(encode_record(intent) for intent in remaining))
        with temporary.open("rb") as handle:
            os.fsync(handle.fileno())
        temporary.replace(self._draining_path)


def _append_fsync(path: Path, record: bytes) -> None:
    with path.open("ab") as handle:
        handle.write(record)
        handle.flush()
        os.fsync(handle.fileno())
