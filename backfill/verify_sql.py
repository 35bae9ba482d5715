"""The SQL of verification, computed on each side by its own server.

Per key range a side answers: row count, the sum of every numeric column, and the sum of a 64-bit
digest of each row (`backfill.digest`: exact per column type, so a flipped sign, a changed scale or a
-0 changes it). Sums do not depend on row order, so the two sides agree on a range exactly when (barring
a 2^-64 accident) they hold the same rows. The old side's columns are cast to the new columns' types, so
equal values digest equally; both sides render with the same session settings.

Ranges are half-open, [lo, hi), with lo/hi None for unbounded. Keys travel as tuples of text.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from backfill import digest
from backfill.catalog import key_arrays, keys_subquery

Key = tuple[str, ...]
_INTEGER_TYPES = ("smallint", "integer", "bigint")
_SPAN_RANGES = 10_000  # first-pass ranges cut by key span alone, before the rows are counted instead

SESSION_SETTINGS = {
    "DateStyle": "ISO, YMD",
    "TimeZone": "UTC",
    "IntervalStyle": "postgres",
    "extra_float_digits": "3",  # exact floats in arrays, composites (shortest digits from PG 12, 17 before)
    "bytea_output": "hex",
}


async def prepare_session(conn: asyncpg.Connection) -> None:
    for name, value in SESSION_SETTINGS.items():
        await conn.execute(f"SELECT set_config('{name}', $1, false)", value)


async def choose_hash_mode(conns: Sequence[asyncpg.Connection]) -> str:
    """`digest.RECORD` when every server has `hash_record_extended` (PostgreSQL 14+): it hashes the
    digest's typed expressions without rendering the row as text. Otherwise `digest.TEXT`. Both sides
    must use the same mode."""
    for conn in conns:
        try:
            await conn.fetchval("SELECT hash_record_extended(ROW(1, ''::text), 0)")
        except asyncpg.PostgresError:
            return digest.TEXT
    return digest.RECORD


_EXACT_SUMS = frozenset({20, 21, 23, 1700})  # bigint, smallint, integer, numeric: exact sums


def summable(expr: str, type_oid: int) -> str:
    """`expr` as verification sums it: integers and numeric as they are (cheaper than a cast), anything
    else as numeric, since a float sum depends on the order of the rows."""
    return expr if type_oid in _EXACT_SUMS else f"({expr})::numeric"


@dataclass(frozen=True, slots=True)
class SampleRow:
    values: dict[str, Any]  # by column, as JSON (what a sample shows)
    texts: dict[str, str | None]  # by column, the value's text (shown where the JSON values look alike)
    elements: dict[str, str | None]  # by column, the digest element as text: what decides "differs"


@dataclass(frozen=True, slots=True)
class RangeStats:
    rows: int
    hash: int
    # As text: a NaN sum (of a numeric or float column holding NaN) then equals the other side's.
    sums: tuple[str | None, ...]


@dataclass(frozen=True, slots=True)
class VerifySide:
    """One side of a table as verification sees it: where its rows are and how to render each column."""

    label: str  # old | new
    conn: asyncpg.Connection
    relation: str
    tenant: str  # quoted tenant column
    key: tuple[str, ...]  # quoted key columns
    key_types: tuple[str, ...]
    columns: tuple[str, ...]  # compared columns (new-side names), the same on both sides
    exprs: tuple[str, ...]  # this side's expression for each compared column
    elements: tuple[str, ...]  # each expression as it enters the row digest (`digest.element`)
    numeric: tuple[int, ...]  # indexes into `columns` of the numeric ones
    summed: tuple[str, ...]  # per numeric column, what is summed (see `summable`)
    hash_mode: str = digest.TEXT  # see choose_hash_mode

    @property
    def key_row(self) -> str:
        return self.key[0] if len(self.key) == 1 else "ROW(" + ", ".join(self.key) + ")"

    @property
    def key_text(self) -> str:
        return ", ".join(f"{k}::text AS key_{i}" for i, k in enumerate(self.key))

    @property
    def order_by(self) -> str:
        return ", ".join(self.key)

    @property
    def row_hash(self) -> str:
        return digest.row_digest(self.elements, self.hash_mode)

    def _one_key(self, first_param: int) -> str:
        casts = [f"${first_param + i}::text::{t}" for i, t in enumerate(self.key_types)]
        return casts[0] if len(casts) == 1 else "ROW(" + ", ".join(casts) + ")"

    def _range(self, lo: Key | None, hi: Key | None, args: list[Any]) -> str:
        clauses = [f"{self.tenant} = $1"]
        for bound, op in ((lo, ">="), (hi, "<")):
            if bound is not None:
                clauses.append(f"{self.key_row} {op} {self._one_key(len(args) + 1)}")
                args.extend(bound)
        return " AND ".join(clauses)

    async def bucket_stats(
        self, tenant: str, lo: Key | None, hi: Key | None, cuts: Sequence[Key]
    ) -> dict[int, RangeStats]:
        """Stats of [lo, hi) split at `cuts` (sorted, inside the range): bucket i is [cuts[i-1], cuts[i])."""
        args: list[Any] = [tenant]
        where = self._range(lo, hi, args)
        if cuts:
            first = len(args) + 1
            args.extend(key_arrays(cuts, len(self.key)))
            bucket = (
                f"width_bucket({self.key_row}, ARRAY({keys_subquery(self.key_types, first, as_row=True)}))"
            )
        else:
            bucket = "0"
        sums = "".join(
            f", sum({term})::text AS s{i}" for i, term in zip(self.numeric, self.summed, strict=True)
        )
        async with self.conn.transaction():
            # A few dozen ranges, so hash them: not knowing how many values width_bucket yields, the
            # planner would sort every row (wide ones spill to disk); 8 % faster on 200k rows here.
            await self.conn.execute("SET LOCAL enable_sort = off")
            rows = await self.conn.fetch(
                f"SELECT {bucket} AS b, count(*) AS n, sum({self.row_hash}) AS h{sums}"
                f" FROM {self.relation} WHERE {where} GROUP BY 1",
                *args,
            )
        return {
            row["b"]: RangeStats(int(row["n"]), int(row["h"]), tuple(row[f"s{i}"] for i in self.numeric))
            for row in rows
        }

    async def cut_points(self, tenant: str, lo: Key | None, hi: Key | None, every: int) -> list[Key]:
        """Every `every`-th key in [lo, hi) (the 1st, the every+1-th, ...), in key order."""
        args: list[Any] = [tenant]
        where = self._range(lo, hi, args)
        args.append(every)
        # Keys are cast to text only once chosen: casting every row's key costs more than the scan.
        inner = ", ".join(f"{k} AS key_{i}" for i, k in enumerate(self.key))
        outer = ", ".join(f"key_{i}::text" for i in range(len(self.key)))
        rows = await self.conn.fetch(
            f"SELECT {outer} FROM (SELECT {inner}, row_number() OVER (ORDER BY {self.order_by}) AS rn"
            f" FROM {self.relation} WHERE {where}) AS s WHERE rn % ${len(args)} = 1 ORDER BY rn",
            *args,
        )
        return [tuple(row.values()) for row in rows]

    async def first_cuts(self, tenant: str, every: int) -> list[Key]:
        """Cut points for the first pass, about `every` rows apart. A single integer key is cut at evenly
        spaced values between its smallest and largest (no scan of every key in order; a skewed key just
        makes some ranges larger, and only a mismatching range is ever split further): `every` values
        apart while that makes at most `_SPAN_RANGES` ranges, which no range can then exceed, else so
        that the counted rows make ranges of about `every` (a sparse key, such as a snowflake id, would
        otherwise cut millions of near-empty ranges). Counting reads every index entry of the tenant:
        about 15 % of the whole verification of 200k rows."""
        if len(self.key) != 1 or self.key_types[0] not in _INTEGER_TYPES:
            return await self.cut_points(tenant, None, None, every)
        row = await self.conn.fetchrow(
            f"SELECT min({self.key[0]}) AS lo, max({self.key[0]}) AS hi FROM {self.relation}"
            f" WHERE {self.tenant} = $1",
            tenant,
        )
        if row is None or row["lo"] is None:
            return []
        lo, hi = int(row["lo"]), int(row["hi"])
        ranges = math.ceil((hi - lo + 1) / every)
        if ranges > _SPAN_RANGES:
            count = await self.conn.fetchval(
                f"SELECT count(*) FROM {self.relation} WHERE {self.tenant} = $1", tenant
            )
            ranges = max(math.ceil(count / every), 1)
        width = max(math.ceil((hi - lo + 1) / ranges), 1)
        return [(str(value),) for value in range(lo, hi + 1, width)]

    async def key_hashes(self, tenant: str, lo: Key | None, hi: Key | None) -> dict[Key, int]:
        args: list[Any] = [tenant]
        where = self._range(lo, hi, args)
        rows = await self.conn.fetch(
            f"SELECT {self.key_text}, {self.row_hash} AS h FROM {self.relation} WHERE {where}", *args
        )
        return {tuple(row.values())[:-1]: int(row["h"]) for row in rows}

    def _keys_where(self, keys: Sequence[Key]) -> tuple[str, list[Any]]:
        columns = self.key[0] if len(self.key) == 1 else "(" + ", ".join(self.key) + ")"
        return f"{self.tenant} = $1 AND {columns} IN ({keys_subquery(self.key_types, 2)})", [
            *key_arrays(keys, len(self.key))
        ]

    async def hashes_of(self, tenant: str, keys: Sequence[Key]) -> dict[Key, int]:
        if not keys:
            return {}
        where, args = self._keys_where(keys)
        rows = await self.conn.fetch(
            f"SELECT {self.key_text}, {self.row_hash} AS h FROM {self.relation} WHERE {where}", tenant, *args
        )
        return {tuple(row.values())[:-1]: int(row["h"]) for row in rows}

    async def rows_of(self, tenant: str, keys: Sequence[Key]) -> dict[Key, SampleRow]:
        """Rows for sample diffs: JSON values by column, with each column's text and digest element."""
        if not keys:
            return {}
        where, args = self._keys_where(keys)
        pairs = ", ".join(f"'{c}', {e}" for c, e in zip(self.columns, self.exprs, strict=True))
        texts = ", ".join(f"({e})::text" for e in self.exprs)
        elements = ", ".join(f"({e})::text" for e in self.elements)
        rows = await self.conn.fetch(
            f"SELECT {self.key_text}, jsonb_build_object({pairs})::text AS row,"
            f" ARRAY[{texts}]::text[] AS texts, ARRAY[{elements}]::text[] AS elements"
            f" FROM {self.relation} WHERE {where}",
            tenant,
            *args,
        )
        width = len(self.key)
        return {
            tuple(row.values())[:width]: SampleRow(
                orjson.loads(row["row"]),
                dict(zip(self.columns, row["texts"], strict=True)),
                dict(zip(self.columns, row["elements"], strict=True)),
            )
            for row in rows
        }

    async def totals(self, tenant: str) -> RangeStats:
        stats = await self.bucket_stats(tenant, None, None, [])
        return stats.get(0, RangeStats(0, 0, tuple(None for _ in self.numeric)))
