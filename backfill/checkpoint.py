"""Backfill checkpoints, kept in the new side's database and written in the same transaction as each
chunk's rows: after a crash at any point the checkpoint says exactly which rows are in, so a rerun
resumes after the last committed chunk and nothing is copied twice or skipped.

A run's key ranges (one per `--parallel` worker) are fixed when it starts and reused by every resume.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

_SCHEMA_LOCK = 0x6375_7402
_RUN_LOCK_NAMESPACE = 0x6375_7403

SCHEMA = """
CREATE TABLE IF NOT EXISTS cutover_backfill_checkpoint (
    tenant        text NOT NULL,
    table_name    text NOT NULL,
    range_no      integer NOT NULL,
    range_lo      text[],            -- exclusive; NULL: from the first key
    range_hi      text[],            -- inclusive; NULL: through the last key
    last_key      text[],            -- every key of the range up to this one is copied
    done          boolean NOT NULL DEFAULT false,
    rows_copied   bigint NOT NULL DEFAULT 0,
    rows_written  bigint NOT NULL DEFAULT 0,
    chunks        integer NOT NULL DEFAULT 0,
    transform     text,              -- function@version; NULL: rows copied as they are
    columns       text[] NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, table_name, range_no)
)
"""


@dataclass(frozen=True, slots=True)
class RangeState:
    range_no: int
    lo: tuple[str, ...] | None
    hi: tuple[str, ...] | None
    last_key: tuple[str, ...] | None
    done: bool
    rows_copied: int
    rows_written: int
    chunks: int
    transform: str | None
    columns: tuple[str, ...]
    updated_at: datetime | None = None

    @property
    def resume_after(self) -> tuple[str, ...] | None:
        return self.last_key if self.last_key is not None else self.lo

    def as_json(self) -> dict[str, Any]:
        return {
            "range": self.range_no,
            "lo": list(self.lo) if self.lo is not None else None,
            "hi": list(self.hi) if self.hi is not None else None,
            "last_key": list(self.last_key) if self.last_key is not None else None,
            "done": self.done,
            "rows_copied": self.rows_copied,
            "rows_written": self.rows_written,
            "chunks": self.chunks,
            "transform": self.transform,
        }


def _tuple(value: Sequence[str] | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(value)


async def ensure_schema(conn: asyncpg.Connection) -> None:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
        await conn.execute(SCHEMA)


async def try_lock_run(conn: asyncpg.Connection, tenant: str, table: str) -> bool:
    """One backfill per (tenant, table) at a time; the lock ends with `conn`'s session (or process)."""
    return bool(
        await conn.fetchval(
            "SELECT pg_try_advisory_lock($1, hashtext($2))", _RUN_LOCK_NAMESPACE, f"{tenant}/{table}"
        )
    )


async def load(conn: asyncpg.Connection, tenant: str, table: str) -> list[RangeState]:
    rows = await conn.fetch(
        "SELECT * FROM cutover_backfill_checkpoint WHERE tenant = $1 AND table_name = $2 ORDER BY range_no",
        tenant,
        table,
    )
    return [
        RangeState(
            range_no=row["range_no"],
            lo=_tuple(row["range_lo"]),
            hi=_tuple(row["range_hi"]),
            last_key=_tuple(row["last_key"]),
            done=row["done"],
            rows_copied=row["rows_copied"],
            rows_written=row["rows_written"],
            chunks=row["chunks"],
            transform=row["transform"],
            columns=tuple(row["columns"]),
            updated_at=row["updated_at"],
        )
        for row in rows
    ]


async def create(
    conn: asyncpg.Connection,
    tenant: str,
    table: str,
    bounds: Sequence[tuple[tuple[str, ...] | None, tuple[str, ...] | None]],
    *,
    transform: str | None,
    columns: Sequence[str],
) -> list[RangeState]:
    async with conn.transaction():
        await conn.execute(
            "DELETE FROM cutover_backfill_checkpoint WHERE tenant = $1 AND table_name = $2", tenant, table
        )
        await conn.executemany(
            "INSERT INTO cutover_backfill_checkpoint"
            " (tenant, table_name, range_no, range_lo, range_hi, transform, columns)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7)",
            [
                (tenant, table, no, _list(lo), _list(hi), transform, list(columns))
                for no, (lo, hi) in enumerate(bounds)
            ],
        )
    return await load(conn, tenant, table)


def _list(value: tuple[str, ...] | None) -> list[str] | None:
    return None if value is None else list(value)


async def advance(
    conn: asyncpg.Connection,
    tenant: str,
    table: str,
    range_no: int,
    *,
    last_key: tuple[str, ...] | None,
    copied: int,
    written: int,
    done: bool,
) -> None:
    """Record one committed chunk; call inside the chunk's transaction."""
    await conn.execute(
        "UPDATE cutover_backfill_checkpoint SET last_key = $4, done = $5, rows_copied = rows_copied + $6,"
        " rows_written = rows_written + $7, chunks = chunks + 1, updated_at = now()"
        " WHERE tenant = $1 AND table_name = $2 AND range_no = $3",
        tenant,
        table,
        range_no,
        _list(last_key),
        done,
        copied,
        written,
    )


async def reset(conn: asyncpg.Connection, tenant: str, table: str) -> None:
    await conn.execute(
        "DELETE FROM cutover_backfill_checkpoint WHERE tenant = $1 AND table_name = $2", tenant, table
    )
