"""One changed value in one row of 100,000, for every column type verify compares, is found by key and
repaired: among them the changes PostgreSQL's own hashes do not see (a numeric's sign or scale, NaN
against Infinity, float -0, a bigint's bits folded away, numbers nested in jsonb and arrays).

Old and new differ the ways the backfill maps columns (renamed key and tenant columns, integer → bigint,
numeric(14,4) → numeric(12,2), real → double precision, varchar(40) → text, text → varchar(12),
text → character(8), json → jsonb). Both tables are filled once for the module (one INSERT ... SELECT
generate_series each); every case changes one row on new, verifies, repairs from old, and leaves the
tables equal again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from backfill.verify_run import VerifyOptions, run_verify
from config.settings import Settings
from routing.phases import Phase
from tests.backfill.conftest import DataEnv, unique

pytestmark = pytest.mark.slow

ROWS = 100_000
TENANT = f"types-{unique('t')}"


@dataclass(frozen=True)
class Family:
    """A pair of tables holding some of the column types: old's columns, new's, and the values of a row
    `g` (one INSERT ... SELECT over generate_series(1, ROWS) AS g per side)."""

    old: str
    new: str
    values: str


# Special values sit at fixed residues of g % 1000 (NULL, NaN, 0, '', 'NULL', a NULL array element).
FAMILIES = {
    "numbers": Family(
        old="big bigint, amount numeric, price numeric(14,4), ratio real",
        new="big bigint, amount numeric, price numeric(12,2), ratio double precision",
        values="""g * 7919,
            CASE g % 1000 WHEN 2 THEN 'NaN'::numeric WHEN 3 THEN NULL ELSE ((g % 20001) - 10000) * 0.01 END,
            g * 0.0123,
            CASE g % 1000 WHEN 4 THEN 0 WHEN 5 THEN 'NaN' ELSE g / 7.0 END::real""",
    ),
    "texts": Family(
        old="label varchar(40), code text, tag text, blob bytea, flag boolean, at timestamptz",
        new="label text, code varchar(12), tag character(8), blob bytea, flag boolean, at timestamptz",
        values="""CASE g % 1000 WHEN 6 THEN '' WHEN 7 THEN NULL WHEN 8 THEN 'NULL' ELSE 'label ' || g END,
            'C' || g, 'T' || (g % 1000), decode(md5(g::text), 'hex'), g % 3 = 0,
            timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second'""",
    ),
    "documents": Family(
        old="ats timestamptz[], doc json, tags text[], nums numeric[]",
        new="ats timestamptz[], doc jsonb, tags text[], nums numeric[]",
        values="""ARRAY[timestamptz '2024-03-31 01:30:00+00' + g * interval '1 minute'],
            json_build_object('b', g, 'a', json_build_object('x', ((g % 200) - 100) * 0.5, 'list',
                json_build_array(1.0, -g))){jsonb},
            ARRAY['t' || (g % 10), CASE WHEN g % 1000 = 9 THEN NULL ELSE 'x' END],
            ARRAY[(g % 100) * 0.5, -(g % 7)::numeric]""",
    ),
}
OLD = "CREATE TABLE {name} (account text, n integer, {columns}, PRIMARY KEY (account, n))"
NEW = "CREATE TABLE {name} (tenant_id text, id bigint, {columns}, PRIMARY KEY (tenant_id, id))"
FILL = "INSERT INTO {name} SELECT $1, g, {values} FROM generate_series($2::int, $3::int) AS g"


@dataclass(frozen=True)
class Tables:
    settings: Settings
    config: list[dict[str, Any]]
    old: dict[str, str]  # family -> old table
    new: dict[str, str]


@pytest.fixture(scope="module")
async def tables(data_env: DataEnv) -> AsyncIterator[Tables]:
    old = {family: unique(f"{family}_old") for family in FAMILIES}
    new = {family: unique(f"{family}_new") for family in FAMILIES}

    async def create(url: str, table: str, ddl: str, columns: str, values: str) -> None:
        await data_env.execute(url, ddl.format(name=table, columns=columns))
        await data_env.execute(url, FILL.format(name=table, values=values), TENANT, 1, ROWS)
        await data_env.execute(url, f"ANALYZE {table}")

    for family, spec in FAMILIES.items():
        # The same expressions on both sides: new's column types take old's values as an assignment
        # would (numeric(12,2) rounds, real widens); json is cast to jsonb explicitly. The two sides
        # are separate databases, filled at once.
        await asyncio.gather(
            create(data_env.old_url, old[family], OLD, spec.old, spec.values.format(jsonb="")),
            create(data_env.new_url, new[family], NEW, spec.new, spec.values.format(jsonb="::jsonb")),
        )
    await data_env.set_phase(TENANT, Phase.SHADOW)
    config = [
        {
            "name": family,
            "old": {"table": old[family], "tenant_column": "account"},
            "new": {"table": new[family]},
            "key": ["id"],
            "columns": {"id": "n"},
        }
        for family in FAMILIES
    ]
    yield Tables(data_env.settings(config), config, old, new)
    for family in FAMILIES:
        await data_env.execute(data_env.old_url, f"DROP TABLE {old[family]}")
        await data_env.execute(data_env.new_url, f"DROP TABLE {new[family]}")


async def test_equal_tables_pass_whatever_each_side_s_time_zone_and_date_style(
    data_env: DataEnv, tables: Tables
) -> None:
    # Each side's sessions start in another zone and date style; verify renders both sides alike.
    env = DataEnv(
        data_env.old_url + "?timezone=Asia%2FKolkata&datestyle=SQL%2CDMY",
        data_env.new_url + "?timezone=America%2FLos_Angeles",
        data_env.control_url,
    )
    settings = env.settings(tables.config)
    run = await run_verify(settings, VerifyOptions(TENANT, store=False))
    assert run.passed, run.as_json()
    assert [(t.table, t.rows_old, t.rows_new) for t in run.tables] == [(f, ROWS, ROWS) for f in FAMILIES]


async def test_a_nan_with_other_bits_is_the_same_nan(data_env: DataEnv, tables: Tables) -> None:
    # Infinity - Infinity is a NaN with the sign bit set; PostgreSQL and its clients see one NaN.
    key = 58005  # ratio NaN on both sides
    relation = tables.new["numbers"]
    where = "WHERE tenant_id = $1 AND id = $2"
    sql = f"UPDATE {relation} SET ratio = 'Infinity'::float8 - 'Infinity'::float8 {where}"
    assert await _execute(data_env.new_url, sql, TENANT, key) == "UPDATE 1"
    bits = f"SELECT float8send(ratio) FROM {relation} {where}"
    try:
        assert await _fetchval(data_env.new_url, bits, TENANT, key) != b"\x7f\xf8" + bytes(6), "the same bits"
        assert (await run_verify(tables.settings, VerifyOptions(TENANT, ("numbers",), store=False))).passed
    finally:
        await _execute(data_env.new_url, f"UPDATE {relation} SET ratio = 'NaN' {where}", TENANT, key)


# (case, key, table family, column, new value as SQL over the row's columns). Each key is a row whose
# value the change really changes (e.g. a non-zero amount for the sign flip).
CASES = [
    ("bigint: bits PostgreSQL's hash folds together", 1234, "numbers", "big", "big # 4294967297"),
    ("numeric: sign", 23456, "numbers", "amount", "-amount"),
    ("numeric: scale 1.5 -> 1.50", 34567, "numbers", "amount", "amount::numeric(20,4)"),
    ("numeric: NaN -> Infinity", 45002, "numbers", "amount", "'Infinity'"),
    ("numeric: NULL -> NaN", 45003, "numbers", "amount", "'NaN'"),
    ("numeric(12,2): sign", 12345, "numbers", "price", "-price"),
    ("float8: 0 -> -0", 56004, "numbers", "ratio", "'-0'"),
    ("float8: 0 -> NULL", 57004, "numbers", "ratio", "NULL"),
    ("float8: NaN -> Infinity", 58005, "numbers", "ratio", "'Infinity'"),
    ("float8: sign", 59999, "numbers", "ratio", "-ratio"),
    ("text: trailing space", 67890, "texts", "label", "label || ' '"),
    ("text: '' -> NULL", 68006, "texts", "label", "NULL"),
    ("text: 'NULL' -> NULL", 68008, "texts", "label", "NULL"),
    ("text: case", 69999, "texts", "label", "upper(label)"),
    ("varchar(12)", 71234, "texts", "code", "code || 'x'"),
    ("character(8) from text", 72345, "texts", "tag", "lower(tag)"),
    ("bytea: one bit", 78901, "texts", "blob", "set_byte(blob, 15, get_byte(blob, 15) # 1)"),
    ("boolean", 89012, "texts", "flag", "NOT flag"),
    ("timestamptz: one microsecond", 90123, "texts", "at", "at + interval '1 microsecond'"),
    ("timestamptz[]: one microsecond", 90124, "documents", "ats", "ARRAY[ats[1] + interval '1 microsecond']"),
    (
        "jsonb: nested number's sign",
        91234,
        "documents",
        "doc",
        "jsonb_set(doc, '{a,x}', to_jsonb(-(doc #>> '{a,x}')::numeric))",
    ),
    ("jsonb: nested number's scale", 92345, "documents", "doc", "jsonb_set(doc, '{a,list,0}', '1.00')"),
    (
        "jsonb: nested array's sign",
        92346,
        "documents",
        "doc",
        "jsonb_set(doc, '{a,list,1}', to_jsonb(92346))",
    ),
    ("numeric[]: an element's sign", 93456, "documents", "nums", "ARRAY[nums[1], -nums[2]]"),
    ("text[]: NULL element -> 'NULL'", 94009, "documents", "tags", "ARRAY[tags[1], 'NULL']"),
]


@pytest.mark.parametrize(("case", "key", "family", "column", "change"), CASES, ids=[c[0] for c in CASES])
async def test_one_changed_value_is_found_by_key_and_repaired(
    data_env: DataEnv, tables: Tables, case: str, key: int, family: str, column: str, change: str
) -> None:
    try:
        await _change_and_repair(data_env, tables, case, key, family, column, change)
    finally:  # the row as the fixture made it, whatever happened, so that no failure spills over
        relation = tables.new[family]
        await _execute(
            data_env.new_url, f"DELETE FROM {relation} WHERE tenant_id = $1 AND id = $2", TENANT, key
        )
        values = FAMILIES[family].values.format(jsonb="::jsonb")
        await _execute(data_env.new_url, FILL.format(name=relation, values=values), TENANT, key, key)


async def _change_and_repair(
    data_env: DataEnv, tables: Tables, case: str, key: int, family: str, column: str, change: str
) -> None:
    status = await _execute(
        data_env.new_url,
        f"UPDATE {tables.new[family]} SET {column} = {change} WHERE tenant_id = $1 AND id = $2"
        f" AND {column}::text IS DISTINCT FROM ({change})::text",
        TENANT,
        key,
    )
    assert status == "UPDATE 1", f"{case}: the change changed nothing, the test proved nothing"

    only = VerifyOptions(TENANT, (family,), store=False)
    run = await run_verify(tables.settings, only)
    report = run.tables[0]
    assert not run.passed, f"{case}: verify passed a changed value"
    assert report.keys["different"] == [[str(key)]], report.as_json()
    assert report.counts == {"missing_on_new": 0, "missing_on_old": 0, "different": 1, "unsettled": 0}
    assert [sample["key"] for sample in report.samples] == [[str(key)]]
    assert list(report.samples[0]["columns"]) == [column], report.samples

    repaired = await run_verify(tables.settings, VerifyOptions(TENANT, (family,), repair=True, store=False))
    result = repaired.tables[0]
    assert repaired.passed, result.as_json()
    assert result.repair is not None, result.repair
    assert result.repair["copied"] == 1, result.repair


async def test_a_value_too_long_for_new_s_varchar_is_not_taken_for_its_truncation(
    data_env: DataEnv, tables: Tables
) -> None:
    # new's code is varchar(12), old's text: a cast would cut old's 16 characters down to new's 12.
    key = 99_001
    status = await _execute(
        data_env.old_url,
        f"UPDATE {tables.old['texts']} SET code = code || '-long-tail' WHERE account = $1 AND n = $2",
        TENANT,
        key,
    )
    assert status == "UPDATE 1"
    await _execute(
        data_env.new_url,
        f"UPDATE {tables.new['texts']} SET code = left('C{key}-long-tail', 12)"
        " WHERE tenant_id = $1 AND id = $2",
        TENANT,
        key,
    )
    try:
        only = VerifyOptions(TENANT, ("texts",), store=False)
        report = (await run_verify(tables.settings, only)).tables[0]
        assert report.keys["different"] == [[str(key)]], report.as_json()
    finally:
        await _execute(
            data_env.old_url,
            f"UPDATE {tables.old['texts']} SET code = 'C' || n WHERE account = $1 AND n = $2",
            TENANT,
            key,
        )
        await _execute(
            data_env.new_url,
            f"UPDATE {tables.new['texts']} SET code = 'C' || id WHERE tenant_id = $1 AND id = $2",
            TENANT,
            key,
        )
    assert (await run_verify(tables.settings, VerifyOptions(TENANT, ("texts",), store=False))).passed


async def _fetchval(url: str, sql: str, *args: object) -> Any:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


async def _execute(url: str, sql: str, *args: object) -> str:
    conn = await asyncpg.connect(url)
    try:
        return str(await conn.execute(sql, *args))
    finally:
        await conn.close()


async def test_a_character_n_key(data_env: DataEnv) -> None:
    # `character` alone means character(1): a key cast to it was cut to its first letter.
    table, tenant = unique("codes"), unique("codes")
    ddl = (
        f"CREATE TABLE {table} (tenant_id text, code character(2), n integer, PRIMARY KEY (tenant_id, code))"
    )
    fill = f"""INSERT INTO {table} SELECT $1, chr(97 + a) || chr(97 + b), a * 26 + b
        FROM generate_series(0, 25) AS a, generate_series(0, 25) AS b"""
    for url in (data_env.old_url, data_env.new_url):
        await data_env.execute(url, ddl)
        await data_env.execute(url, fill, tenant)
    await data_env.set_phase(tenant, Phase.SHADOW)
    config = {"name": "codes", "old": {"table": table}, "new": {"table": table}, "key": ["code"]}
    settings = data_env.settings([config], verify={"range_rows": 100, "leaf_rows": 10})
    assert (await run_verify(settings, VerifyOptions(tenant, store=False))).passed
    await data_env.execute(data_env.new_url, f"UPDATE {table} SET n = -n WHERE code = 'mq'")
    report = (await run_verify(settings, VerifyOptions(tenant, store=False))).tables[0]
    assert report.keys == {"missing_on_new": [], "missing_on_old": [], "different": [["mq"]], "unsettled": []}
    assert (await run_verify(settings, VerifyOptions(tenant, repair=True, store=False))).passed


async def test_a_sparse_integer_key(data_env: DataEnv) -> None:
    # Snowflake-like ids: the key's span would cut millions of near-empty ranges, so the rows are counted.
    table, tenant = unique("sparse"), unique("sparse")
    ddl = f"CREATE TABLE {table} (tenant_id text, id bigint, n integer, PRIMARY KEY (tenant_id, id))"
    fill = f"INSERT INTO {table} SELECT $1, g::bigint * 1000000007, g FROM generate_series(1, 3000) AS g"
    for url in (data_env.old_url, data_env.new_url):
        await data_env.execute(url, ddl)
        await data_env.execute(url, fill, tenant)
    await data_env.set_phase(tenant, Phase.SHADOW)
    config = {"name": "sparse", "old": {"table": table}, "new": {"table": table}}
    settings = data_env.settings([config], verify={"range_rows": 500, "leaf_rows": 50})
    clean = (await run_verify(settings, VerifyOptions(tenant, store=False))).tables[0]
    assert clean.passed, clean.as_json()
    assert clean.ranges <= 7, clean.as_json()  # 3,000 rows / 500, not span / 500
    await data_env.execute(data_env.new_url, f"UPDATE {table} SET n = -n WHERE id = $1", 1234 * 1000000007)
    report = (await run_verify(settings, VerifyOptions(tenant, store=False))).tables[0]
    assert report.keys["different"] == [[str(1234 * 1000000007)]], report.as_json()
