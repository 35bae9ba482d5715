"""Copy one key range of one tenant's rows old → new: binary COPY into a staging table, then one upsert,
with the checkpoint, in one transaction on the new side.

A chunk whose key range holds no row on new yet (checked under the lock; the usual case on a first
run) is copied straight into the table instead: nothing can conflict, so staging and upsert would only
cost time. Rows copied as they are never pass through Python objects: the old side's
`COPY (SELECT ...) TO STDOUT (FORMAT binary)` stream is handed to the new side's `COPY ... FROM STDIN
(FORMAT binary)` buffer by buffer (the SELECT casts every column to the new column's type, so the binary
layouts agree). Rows with a transform are fetched, transformed, and sent with binary
`copy_records_to_table`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import asyncpg

from backfill import checkpoint
from backfill.catalog import TablePlan, quote_ident
from backfill.transform import RowFunction, apply_transform
from buffer_worker.mirror_lock import COPY_LOCK_SQL, lock_key
from common.tasks import cancel_and_wait

Key = tuple[str, ...]
_PIPE_DEPTH = 32  # COPY buffers in flight between the two connections


@dataclass(frozen=True, slots=True)
class ChunkResult:
    copied: int  # rows read from old (after the transform's filter)
    written: int  # rows inserted or changed on new
    last_key: Key | None
    done: bool  # the range is finished
    direct: bool = False  # copied straight into the table (its range was empty on new)


class ChunkCopier:
    """Copies chunks of one table for one tenant over a dedicated pair of connections."""

    def __init__(
        self,
        plan: TablePlan,
        tenant: str,
        old: asyncpg.Connection,
        new: asyncpg.Connection,
        transform: RowFunction | None,
    ) -> None:
        self._plan = plan
        self._tenant = tenant
        self._old = old
        self._new = new
        self._transform = transform
        self.staging = f"cutover_stage_{plan.name}"
        schema, _, self._table = plan.table.new.table.rpartition(".")
        self._schema = schema or None
        self._upsert = plan.upsert_sql(quote_ident(self.staging))

    async def prepare(self) -> None:
        # Temporary and emptied at every commit: nothing to clean up after a crash.
        await self._new.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {quote_ident(self.staging)} ON COMMIT DELETE ROWS AS"
            f" SELECT {self._plan.quoted_columns} FROM {self._plan.new.relation} WITH NO DATA"
        )

    async def next_bound(self, after: Key | None, hi: Key | None, chunk_rows: int) -> tuple[Key | None, bool]:
        """The key ending the next chunk of `chunk_rows` rows after `after` (None when fewer remain), and
        whether any row follows it (so a range never ends with an empty chunk)."""
        old = self._plan.old
        where, args = old.range_args(after, hi)
        rows = await self._old.fetch(
            f"SELECT {old.key_text} FROM {old.relation} WHERE {where}"
            f" ORDER BY {old.order_by} OFFSET {chunk_rows - 1} LIMIT 2",
            self._tenant,
            *args,
        )
        return (tuple(rows[0].values()) if rows else None), len(rows) == 2

    async def copy(
        self, range_no: int, after: Key | None, upper: Key | None, hi: Key | None, *, last: bool = False
    ) -> ChunkResult:
        """Copy keys in (after, upper] (upper None: through `hi`) and checkpoint, atomically; `last`: no
        row of the range follows `upper`."""
        through = upper if upper is not None else hi
        done = upper is None or upper == hi or last
        async with self._new.transaction():
            await self._new.execute(COPY_LOCK_SQL, lock_key(self._tenant))
            # From here until commit no mirrored write of this tenant lands, and the old side is read
            # only now: what the chunk writes is at least as new as anything the buffer wrote before.
            direct = self._transform is None and await self._empty_on_new(after, through)
            if direct:
                # Nothing of this range on new yet (and, under the lock, nothing can arrive): the rows go
                # straight into the table, skipping the staging copy and the upsert.
                copied = written = await self._fill(after, through, self._table, self._schema)
            else:
                copied = await self._fill(after, through, self.staging, None)
                status = await self._new.execute(self._upsert)
                written = int(status.rsplit(" ", 1)[-1])
            await checkpoint.advance(
                self._new,
                self._tenant,
                self._plan.name,
                range_no,
                last_key=through,
                copied=copied,
                written=written,
                done=done,
            )
        return ChunkResult(copied, written, through, done, direct)

    async def _empty_on_new(self, after: Key | None, through: Key | None) -> bool:
        new = self._plan.new
        where, args = new.range_args(after, through)
        found = await self._new.fetchval(
            f"SELECT EXISTS (SELECT 1 FROM {new.relation} WHERE {where})", self._tenant, *args
        )
        return not found

    async def _fill(self, after: Key | None, through: Key | None, table: str, schema: str | None) -> int:
        old = self._plan.old
        where, args = old.range_args(after, through)
        if self._transform is None:
            query = f"SELECT {self._plan.old_select()} FROM {old.relation} WHERE {where}"
            return await pipe_copy(
                self._old, query, [self._tenant, *args], self._new, table, self._plan.columns, schema=schema
            )
        rows = await self._old.fetch(
            f"SELECT * FROM {old.relation} WHERE {where} ORDER BY {old.order_by}", self._tenant, *args
        )
        records = apply_transform(self._plan.name, self._transform, rows, self._plan.columns)
        await self._new.copy_records_to_table(
            table, schema_name=schema, records=records, columns=list(self._plan.columns)
        )
        return len(records)


async def pipe_copy(
    source: asyncpg.Connection,
    query: str,
    args: Sequence[object],
    target: asyncpg.Connection,
    table: str,
    columns: Sequence[str],
    *,
    schema: str | None = None,
) -> int:
    """Stream `query`'s rows from `source` into `table` on `target` in binary COPY format; rows copied."""
    buffers: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=_PIPE_DEPTH)

    async def sink(data: bytes) -> None:
        await buffers.put(data)

    async def produce() -> str:
        # The end marker also follows a failure, so the target's stream ends; the transaction then rolls
        # back because this task's error is raised below. Not after a cancel: the reader is gone.
        try:
            status: str = await source.copy_from_query(query, *args, output=sink, format="binary")
        except asyncio.CancelledError:
            raise
        except BaseException:
            await buffers.put(None)
            raise
        await buffers.put(None)
        return status

    async def stream() -> AsyncIterator[bytes]:
        while (data := await buffers.get()) is not None:
            yield data

    producer = asyncio.create_task(produce())
    try:
        status = await target.copy_to_table(
            table, schema_name=schema, source=stream(), columns=list(columns), format="binary"
        )
    except BaseException:
        # The source's error, when it has one, is the cause worth reporting: cancel_and_wait raises it.
        await cancel_and_wait(producer, timeout_s=None)
        raise
    await producer
    return int(status.rsplit(" ", 1)[-1])
