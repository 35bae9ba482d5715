"""What verification counts as equal, and the row digest that decides it.

Two values are equal when a client reading them gets the same thing. Each column enters a row's digest
through an expression that keeps exactly that, chosen by the new column's type:
- smallint, integer, boolean, date, oid, uuid, bytea: the value (PostgreSQL's hash covers every bit).
- text, varchar, name: the value `COLLATE "C"`, so its bytes: `'a '` ≠ `'a'`, `''` ≠ NULL ≠ `'NULL'`,
  and case counts even under a case-insensitive collation.
- bigint, timestamp, timestamptz, time, money, numeric, interval, character(n): the binary form
  (`int8send`, `numeric_send`, ...). timestamptz is the instant, whatever either side's TimeZone;
  numeric keeps sign, digits and display scale (1.0 ≠ 1.00, as clients read them; NaN ≠ Infinity ≠
  -Infinity ≠ NULL; numeric has no -0); interval keeps months, days and microseconds apart
  (`1 day` ≠ `24:00:00`); character(n) is the stored, padded value.
- float4, float8: the binary form, every NaN made the one NaN first: -0 ≠ 0 (SQL's `=` says equal,
  but clients read `-0`), ±Infinity apart. Binary, not text: PostgreSQL 11 and 12 print floats with
  different digits.
- jsonb, json, arrays, composites and every other type: the text output under fixed session settings.
  jsonb keeps its keys in jsonb's own order (the order they were written in never counts) and its
  nested numbers with sign and scale; json is compared verbatim; an array's NULL element ≠ `"NULL"`.

PostgreSQL's own hash functions cannot be used as they are for the rest: `hash_numeric` ignores the sign,
the scale, and makes NaN and ±Infinity all hash alike; jsonb and arrays hash their numbers with it;
`hashint8` (bigint, the timestamps, time, money) folds the high 32 bits into the low ones, so 0 and
4294967297 collide; `hashfloat8` maps -0 to 0 and 0 to the seed, which NULL also gets; interval's hash
equates `1 day` and `24 hours`. Text output is exact for every type but costs most (the whole row as
text through hashtextextended, md5 or sha256 ran verify's first pass 2-4x slower: BENCHMARKS.md), so it
is kept for the types without a cheaper exact form.

A row's digest is `hash_record_extended` of those expressions, a 64-bit value that changes whenever one
of them does (each column's hash enters it multiplied by an odd constant, so one changed column always
moves it), barring a collision of PostgreSQL's 64-bit hashes of two different values. A range's digest
is the sum of its rows' digests, which any single changed row moves. Servers without
`hash_record_extended` (before PostgreSQL 14) hash the row's text instead; both sides must use the same
mode.

Both sides digest the new column's type: the old side's expressions are cast to it first
(`catalog.TablePlan.old_verify_exprs`), so a value the backfill copies unchanged digests alike.
"""

from __future__ import annotations

from collections.abc import Sequence

# Type OIDs are fixed for built-in types, the same on every server.
_BY_VALUE = frozenset({16, 17, 21, 23, 26, 1082, 2950})  # bool bytea int2 int4 oid date uuid
_BY_VALUE_COLLATED = frozenset({19, 25, 1043})  # name text varchar
_FLOATS = {700: ("float4send", "real"), 701: ("float8send", "double precision")}
_BY_BINARY = {
    20: "int8send",
    790: "cash_send",
    1042: "bpcharsend",
    1083: "time_send",
    1114: "timestamp_send",
    1184: "timestamptz_send",
    1186: "interval_send",
    1700: "numeric_send",
}
# `=` is exact (equal means the same bytes to a client) for these; other types are compared by text.
_EXACT_EQUALITY = _BY_VALUE | _BY_VALUE_COLLATED | frozenset({20, 790, 1083, 1114, 1184})

RECORD, TEXT = "record", "text"


def element(expr: str, type_oid: int) -> str:
    """`expr`, a value of the type `type_oid`, as it enters the row digest."""
    oid = type_oid
    if oid in _BY_VALUE:
        return expr
    if oid in _BY_VALUE_COLLATED:
        # A non-deterministic collation would hash case- or accent-insensitively.
        return f'({expr}) COLLATE "C"'
    if oid in _BY_BINARY:
        return f"{_BY_BINARY[oid]}({expr})"
    if oid in _FLOATS:
        send, name = _FLOATS[oid]
        # PostgreSQL's NaN equals every NaN; their bits differ (Infinity - Infinity has the sign bit set).
        return f"{send}(CASE WHEN ({expr}) = 'NaN' THEN 'NaN'::{name} ELSE ({expr}) END)"
    return f"({expr})::text"


def row_digest(elements: Sequence[str], mode: str) -> str:
    row = f"ROW({', '.join(elements)})"
    if mode == RECORD:
        return f"hash_record_extended({row}, 0)"
    return f"hashtextextended({row}::text, 0)"


def exact_equality(type_oid: int) -> bool:
    """Whether `=` on the type tells apart everything the digest does (else compare by `::text`)."""
    return type_oid in _EXACT_EQUALITY
