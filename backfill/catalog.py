"""Resolve a configured table against both databases' catalogs: which columns are copied, with which
types, and the SQL fragments every copy, checkpoint and verification query is built from.

Keys travel as `text[]` (one element per key column, in key order) and are cast back to each side's own
column types in predicates, so composite keys of any type compare as rows (`(a, b) > (x, y)`), which a
btree index on (tenant, a, b) serves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from backfill.digest import exact_equality
from backfill.errors import TableSetupError
from config.data import DataTable

_LENGTH_TYPES = {1042: "bpchar", 1043: "varchar"}  # character(n), character varying(n): unbounded names


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_relation(name: str) -> str:
    return ".".join(quote_ident(part) for part in name.split("."))


@dataclass(frozen=True, slots=True)
class ColumnInfo:
    name: str
    type_name: str  # with its modifier: numeric(10,2), character varying(40)
    base_type: str  # without: numeric, character varying
    type_oid: int
    category: str  # pg_type.typcategory: N numeric, S string, ...
    identity_always: bool
    type_mod: int = -1  # pg_attribute.atttypmod: for varchar(n) and character(n), n + 4


_COLUMNS_SQL = """
SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type_name,
       format_type(a.atttypid, NULL) AS base_type, a.atttypid::int8 AS type_oid,
       t.typcategory::text AS category, a.attidentity = 'a' AS identity_always, a.atttypmod AS type_mod
FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
ORDER BY a.attnum
"""
_UNIQUE_SQL = """
SELECT array_agg(a.attname::text) AS columns
FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
WHERE i.indrelid = $1::regclass AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL
GROUP BY i.indexrelid
"""


async def table_columns(conn: asyncpg.Connection, table: str, relation: str) -> dict[str, ColumnInfo]:
    if await conn.fetchval("SELECT to_regclass($1)", quote_relation(relation)) is None:
        raise TableSetupError(table, f"relation {relation!r} does not exist")
    rows = await conn.fetch(_COLUMNS_SQL, quote_relation(relation))
    return {
        row["name"]: ColumnInfo(
            row["name"],
            row["type_name"],
            row["base_type"],
            row["type_oid"],
            row["category"],
            row["identity_always"],
            row["type_mod"],
        )
        for row in rows
    }


def keys_subquery(key_types: Sequence[str], first_param: int, *, as_row: bool = False) -> str:
    """SELECT of typed keys from one text[] parameter per key column ($first_param, ...), in order.
    `as_row`: one record column per key (for `ARRAY(...)`), else one column per key column (for `IN`)."""
    names = [f"c{i}" for i in range(len(key_types))]
    arrays = ", ".join(f"${first_param + i}::text[]" for i in range(len(key_types)))
    casts = [f"u.{n}::{t}" for n, t in zip(names, key_types, strict=True)]
    value = "ROW(" + ", ".join(casts) + ")" if as_row and len(casts) > 1 else ", ".join(casts)
    return f"SELECT {value} FROM unnest({arrays}) WITH ORDINALITY AS u({', '.join(names)}, o) ORDER BY o"


def key_arrays(keys: Sequence[Sequence[str]], width: int) -> list[list[str]]:
    """Keys as one text array per key column (the parameters `keys_subquery` reads)."""
    return [[key[i] for key in keys] for i in range(width)]


@dataclass(frozen=True, slots=True)
class SideShape:
    """One side's relation, tenant column and key columns (quoted), with the key columns' types."""

    relation: str
    tenant: str
    key: tuple[str, ...]
    key_types: tuple[str, ...]

    @property
    def key_row(self) -> str:
        return self.key[0] if len(self.key) == 1 else "(" + ", ".join(self.key) + ")"

    @property
    def order_by(self) -> str:
        return ", ".join(self.key)

    @property
    def key_text(self) -> str:
        """Select list of the key as text, one column per key column. Aliased: an output column named
        like the key column would make `ORDER BY key` sort by the text."""
        return ", ".join(f"{column}::text AS key_{i}" for i, column in enumerate(self.key))

    def key_param(self, param: int) -> str:
        """The key held in `$param` (a text[]) as a value comparable with `key_row`."""
        parts = [f"(${param}::text[])[{i + 1}]::{t}" for i, t in enumerate(self.key_types)]
        return parts[0] if len(parts) == 1 else "(" + ", ".join(parts) + ")"

    def where(self, *, after: bool, through: bool, first_param: int = 2) -> str:
        """Rows of tenant `$1` with key > `$first_param` (if `after`) and <= the next param (if `through`)."""
        clauses = [f"{self.tenant} = $1"]
        param = first_param
        if after:
            clauses.append(f"{self.key_row} > {self.key_param(param)}")
            param += 1
        if through:
            clauses.append(f"{self.key_row} <= {self.key_param(param)}")
        return " AND ".join(clauses)

    def keys_where(self, keys: Sequence[Sequence[str]]) -> tuple[str, list[object]]:
        """Rows of tenant `$1` whose key is one of `keys`, with the arguments after the tenant."""
        where = f"{self.tenant} = $1 AND {self.key_row} IN ({keys_subquery(self.key_types, 2)})"
        return where, list(key_arrays(keys, len(self.key)))

    def range_args(self, lo: Sequence[str] | None, hi: Sequence[str] | None) -> tuple[str, list[object]]:
        """`where` for the half-open range (lo, hi] (None: unbounded), with its arguments after the tenant."""
        args: list[object] = [list(b) for b in (lo, hi) if b is not None]
        return self.where(after=lo is not None, through=hi is not None), args


@dataclass(frozen=True, slots=True)
class TablePlan:
    table: DataTable
    old: SideShape
    new: SideShape
    columns: tuple[str, ...]  # copied new-side columns, unquoted, in the new table's order
    new_columns: dict[str, ColumnInfo]
    old_exprs: tuple[str, ...]  # per copied column: an old-side expression of the new column's type
    # ... and with the new column's modifier too, for verification: numeric(12,2) renders 1.5 as 1.50
    old_verify_exprs: tuple[str, ...]
    identity_always: bool
    # Columns whose `=` is missing (json) or blind to what verification sees (numeric 1.0 = 1.00, float
    # -0 = 0, jsonb): the upsert compares them by their text, so it rewrites a row verify finds different.
    text_compared: frozenset[str] = frozenset()

    @property
    def name(self) -> str:
        return self.table.name

    @property
    def quoted_columns(self) -> str:
        return ", ".join(quote_ident(c) for c in self.columns)

    @property
    def numeric_columns(self) -> tuple[str, ...]:
        """Copied non-key columns of a numeric type: verification sums them per range."""
        keys = {self.table.new.tenant_column, *self.table.key}
        return tuple(c for c in self.columns if self.new_columns[c].category == "N" and c not in keys)

    def old_select(self) -> str:
        return ", ".join(
            f"{expr} AS {quote_ident(c)}" for expr, c in zip(self.old_exprs, self.columns, strict=True)
        )

    def upsert_sql(self, staging: str) -> str:
        """Staging → table. Rows equal to the stored ones are left alone (no dead tuples on a rerun)."""
        return upsert_sql(
            self.new.relation,
            self.columns,
            (self.new.tenant, *self.new.key),
            staging,
            identity_always=self.identity_always,
            text_compared=self.text_compared,
        )


def upsert_sql(
    relation: str,
    columns: Sequence[str],
    conflict: Sequence[str],
    staging: str,
    *,
    identity_always: bool,
    text_compared: frozenset[str],
) -> str:
    """Staging → `relation` (same column names): insert, or overwrite the columns that differ. Rows equal
    to the stored ones are left alone (no dead tuples on a rerun). `conflict`: quoted unique key columns;
    `text_compared`: columns compared by their text (see `TablePlan.text_compared`)."""
    quoted = ", ".join(quote_ident(c) for c in columns)
    updated = [quote_ident(c) for c in columns if quote_ident(c) not in conflict]
    head = f"INSERT INTO {relation} AS t ({quoted})"
    if identity_always:
        head += " OVERRIDING SYSTEM VALUE"
    head += f" SELECT {quoted} FROM {staging} ON CONFLICT ({', '.join(conflict)})"
    if not updated:
        return head + " DO NOTHING"
    assignments = ", ".join(f"{c} = EXCLUDED.{c}" for c in updated)
    cast = {quote_ident(c): "::text" for c in text_compared}
    current = ", ".join(f"t.{c}{cast.get(c, '')}" for c in updated)
    incoming = ", ".join(f"EXCLUDED.{c}{cast.get(c, '')}" for c in updated)
    return f"{head} DO UPDATE SET {assignments} WHERE ROW({current}) IS DISTINCT FROM ROW({incoming})"


def old_source(table: DataTable, new_column: str) -> str:
    """The old column a new column is copied from (the tenant column maps to the old tenant column)."""
    return table.old.tenant_column if new_column == table.new.tenant_column else table.old_column(new_column)


async def resolve(table: DataTable, old: asyncpg.Connection, new: asyncpg.Connection) -> TablePlan:
    """Check `table` against both catalogs and build its plan; raise `TableSetupError` naming the problem."""
    new_columns = await table_columns(new, table.name, table.new.table)
    old_columns = await table_columns(old, table.name, table.old.table)
    keys = [table.new.tenant_column, *table.key]
    for column in keys:
        if column not in new_columns:
            raise TableSetupError(table.name, f"key column {column!r} is not a column of {table.new.table!r}")
    if not await has_unique_key(new, table.new.table, set(keys)):
        raise TableSetupError(
            table.name,
            f"{table.new.table!r} needs a unique index on exactly ({', '.join(keys)}) for the upsert",
        )
    for column in table.exclude_columns:
        if column not in new_columns:
            raise TableSetupError(
                table.name, f"excluded column {column!r} is not a column of {table.new.table!r}"
            )
    columns = tuple(c for c in new_columns if c not in table.exclude_columns)
    sources = {c: old_source(table, c) for c in columns}
    old_keys = [sources[c] for c in keys]
    for column in old_keys if table.transform is not None else sources.values():
        if column not in old_columns:
            raise TableSetupError(
                table.name,
                f"{table.old.table!r} has no column {column!r}"
                + (
                    ""
                    if table.transform
                    else " (map it in `columns` or list the new column in `exclude_columns`)"
                ),
            )
    old_exprs = tuple(_old_expr(sources[c], old_columns.get(sources[c]), new_columns[c]) for c in columns)
    old_verify_exprs = tuple(
        _old_expr(sources[c], old_columns.get(sources[c]), new_columns[c], with_modifier=True)
        for c in columns
    )
    return TablePlan(
        table=table,
        old=SideShape(
            quote_relation(table.old.table),
            quote_ident(table.old.tenant_column),
            tuple(quote_ident(c) for c in old_keys[1:]),
            tuple(unbounded_type(old_columns[c]) for c in old_keys[1:]),
        ),
        new=SideShape(
            quote_relation(table.new.table),
            quote_ident(table.new.tenant_column),
            tuple(quote_ident(c) for c in table.key),
            tuple(unbounded_type(new_columns[c]) for c in table.key),
        ),
        columns=columns,
        new_columns=new_columns,
        old_exprs=old_exprs,
        old_verify_exprs=old_verify_exprs,
        identity_always=any(new_columns[c].identity_always for c in columns),
        text_compared=frozenset(c for c in columns if not exact_equality(new_columns[c].type_oid)),
    )


def _old_expr(source: str, old: ColumnInfo | None, new: ColumnInfo, *, with_modifier: bool = False) -> str:
    # The copy casts to the base type only: an explicit cast to varchar(n) would truncate silently,
    # whereas the staging column (which has the modifier) refuses a value that does not fit.
    if old is None or (old.type_name if with_modifier else old.type_oid) == (
        new.type_name if with_modifier else new.type_oid
    ):
        return quote_ident(source)
    if not with_modifier:
        return f"{quote_ident(source)}::{unbounded_type(new)}"
    cast = f"{quote_ident(source)}::{new.type_name}"
    unbounded = _LENGTH_TYPES.get(new.type_oid)
    if unbounded is None or new.type_mod < 4:
        return cast
    # For verification, the same reason: a value too long for varchar(n) / character(n) (beyond trailing
    # spaces, which an assignment drops too) stays whole, so it differs from anything new can hold.
    fits = f"char_length(rtrim({quote_ident(source)}::text, ' ')) <= {new.type_mod - 4}"
    return f"CASE WHEN {fits} THEN {cast} ELSE {quote_ident(source)}::{unbounded} END"


def unbounded_type(column: ColumnInfo) -> str:
    """The column's type without its modifier, as a copy casts to it. Not `format_type`'s name for
    character(n): `character` alone means character(1) and would cut a value to its first letter."""
    return _LENGTH_TYPES.get(column.type_oid, column.base_type)


async def has_unique_key(conn: asyncpg.Connection, relation: str, columns: set[str]) -> bool:
    rows = await conn.fetch(_UNIQUE_SQL, quote_relation(relation))
    return any(set(row["columns"]) == columns for row in rows)
