"""Values a mirrored write fixes once: the rewrite per dialect (expected texts written by hand, from a fixed
clock and random source), what is refused and why, keys the database would generate, the plan cache, and
the PostgreSQL literals read back by a real PostgreSQL as the values that were fixed."""

from __future__ import annotations

import datetime
import subprocess
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from routing.phases import Phase
from routing.sql import SqlAnalyzer, SqlLimits, SqlRequest
from routing.sql_classify import Rules
from routing.sql_errors import SqlRefusedError
from routing.sql_scope import route_sql
from routing.sql_volatile import Entropy

MY, PG = "mysql", "postgres"
AT = datetime.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=datetime.UTC)
U1 = uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
U2 = uuid.UUID("0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9")
ANALYZER = SqlAnalyzer(Rules(primary_keys={"orders": ("id",), "lines": ("order_id", "line")}), SqlLimits())
COVERED = frozenset({"orders", "lines", "events"})
MIRRORING = (Phase.DUAL_WRITE, Phase.SHADOW, Phase.LIVE, Phase.RAMPDOWN)


def entropy(at: datetime.datetime = AT, randoms: tuple[float, ...] = (0.25, 0.5)) -> Entropy:
    """A clock that reads `at` (counting its readings) and random sources that hand out fixed values."""
    draws = iter(randoms)
    uuids = iter((U1, U2))
    return Entropy(now=lambda: at, random=lambda: next(draws), uuid4=lambda: next(uuids))


def request(sql: str | list[str], dialect: str, params: Any = None) -> SqlRequest:
    texts = sql if isinstance(sql, list) else [sql]
    values = params if isinstance(sql, list) else [params]
    return ANALYZER.request(dialect, texts, values)


def pinned(sql: str, source: str, target: str, source_entropy: Entropy | None = None) -> str:
    found = request(sql, source, [1] * 8)
    assert found.volatile, "nothing to pin: the test proved nothing"
    result = ANALYZER.pin(found, source_entropy or entropy())
    parsed = result.parsed[0]
    assert parsed is not None
    keep = source == target
    return ANALYZER.transpile_pinned(parsed, source, target, result.pins, keep_style=keep).text


# -- the rewrite, per dialect ----------------------------------------------------------------------------
# The literals of AT, named to keep the expected texts readable: `{TZ}` in them stands for LITERALS["TZ"].
LITERALS = {
    "TZ": "CAST('2024-05-06 07:08:09.123456+00:00' AS TIMESTAMPTZ)",
    "DT6": "CAST('2024-05-06 07:08:09.123456' AS DATETIME(6))",
    "TS6": "CAST('2024-05-06 07:08:09.123456' AS TIMESTAMP(6))",
}
PG_SOURCE = [
    (
        "INSERT INTO events (id, at, r, u) VALUES ($1, now(), random(), gen_random_uuid())",
        "INSERT INTO events (id, at, r, u) VALUES ($1, {TZ}, "
        "CAST('0.25' AS DOUBLE PRECISION), CAST('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11' AS UUID))",
        "INSERT INTO events (id, at, r, u) VALUES (?, {DT6}, 0.25e0, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11')",
    ),
    (
        "INSERT INTO events (id, a, b, c) "
        "VALUES (1, CURRENT_TIMESTAMP, LOCALTIMESTAMP, CURRENT_TIMESTAMP(3))",
        "INSERT INTO events (id, a, b, c) VALUES (1, {TZ}, "
        "{TS6}, "
        "CAST('2024-05-06 07:08:09.123+00:00' AS TIMESTAMPTZ))",
        "INSERT INTO events (id, a, b, c) VALUES (1, {DT6}, "
        "{DT6}, CAST('2024-05-06 07:08:09.123' AS DATETIME(3)))",
    ),
    (
        "UPDATE events SET d = CURRENT_DATE, t = CURRENT_TIME, c = clock_timestamp(), "
        "s = statement_timestamp(), x = transaction_timestamp(), v = uuid_generate_v4() WHERE id = 7",
        "UPDATE events SET d = CAST('2024-05-06' AS DATE), t = CAST('07:08:09.123456+00:00' AS TIMETZ), "
        "c = {TZ}, "
        "s = {TZ}, "
        "x = {TZ}, "
        "v = CAST('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11' AS UUID) WHERE id = 7",
        "UPDATE events SET d = CAST('2024-05-06' AS DATE), t = CAST('07:08:09.123456' AS TIME(6)), "
        "c = {DT6}, "
        "s = {DT6}, "
        "x = {DT6}, "
        "v = 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11' WHERE id = 7",
    ),
    (
        "DELETE FROM events WHERE id = %s AND at < now() - INTERVAL '1 day'",
        "DELETE FROM events WHERE id = %s AND at < {TZ} - INTERVAL '1 DAY'",
        "DELETE FROM events WHERE id = ? AND at < {DT6} - INTERVAL '1' DAY",
    ),
]
MY_SOURCE = [
    (
        "INSERT INTO events (id, at, r, u) VALUES (?, NOW(), RAND(), UUID())",
        "INSERT INTO events (id, at, r, u) VALUES (?, CAST('2024-05-06 07:08:09' AS DATETIME), 0.25e0, "
        "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11')",
        "INSERT INTO events (id, at, r, u) VALUES ($1, CAST('2024-05-06 07:08:09' AS TIMESTAMP), "
        "CAST('0.25' AS DOUBLE PRECISION), 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11')",
    ),
    (
        "INSERT INTO events (id, a, b, c, d, e) VALUES (%s, NOW(6), SYSDATE(), UTC_TIMESTAMP(), CURDATE(), "
        "CURRENT_TIMESTAMP)",
        "INSERT INTO events (id, a, b, c, d, e) VALUES (%s, {DT6}, "
        "CAST('2024-05-06 07:08:09' AS DATETIME), CAST('2024-05-06 07:08:09' AS DATETIME), "
        "CAST('2024-05-06' AS DATE), CAST('2024-05-06 07:08:09' AS DATETIME))",
        "INSERT INTO events (id, a, b, c, d, e) VALUES ($1, {TS6}, "
        "CAST('2024-05-06 07:08:09' AS TIMESTAMP), CAST('2024-05-06 07:08:09' AS TIMESTAMP), "
        "CAST('2024-05-06' AS DATE), CAST('2024-05-06 07:08:09' AS TIMESTAMP))",
    ),
    (
        "UPDATE events SET t = CURTIME(), n = UNIX_TIMESTAMP() WHERE id = 3",
        "UPDATE events SET t = CAST('07:08:09' AS TIME), n = 1714979289 WHERE id = 3",
        "UPDATE events SET t = CAST('07:08:09' AS TIME), n = 1714979289 WHERE id = 3",
    ),
]


@pytest.mark.parametrize(("sql", "same", "other"), PG_SOURCE)
def test_postgres_sources_are_pinned_in_both_dialects(sql: str, same: str, other: str) -> None:
    assert pinned(sql, PG, PG) == same.format(**LITERALS)
    assert pinned(sql, PG, MY) == other.format(**LITERALS)


@pytest.mark.parametrize(("sql", "same", "other"), MY_SOURCE)
def test_mysql_sources_are_pinned_in_both_dialects(sql: str, same: str, other: str) -> None:
    assert pinned(sql, MY, MY) == same.format(**LITERALS)
    assert pinned(sql, MY, PG) == other.format(**LITERALS)


def test_every_call_gets_its_own_random_value_and_one_clock_reading_serves_the_request() -> None:
    readings = []

    def clock() -> datetime.datetime:
        readings.append(AT)
        return AT

    source = Entropy(now=clock, random=iter((0.25, 0.5)).__next__, uuid4=iter((U1, U2)).__next__)
    found = request(
        [
            "INSERT INTO events (id, a, b, r, s) VALUES (1, now(), now(), random(), random())",
            "INSERT INTO events (id, u, at) VALUES (2, gen_random_uuid(), clock_timestamp())",
        ],
        PG,
        [None, None],
    )
    result = ANALYZER.pin(found, source)
    texts = []
    for parsed in result.parsed:
        assert parsed is not None
        texts.append(ANALYZER.transpile_pinned(parsed, PG, MY, result.pins, keep_style=False).text)
    assert readings == [AT]
    assert "0.25e0, 0.5e0" in texts[0]
    assert f"'{U1}'" in texts[1]
    assert texts[0].count(LITERALS["DT6"]) == 2


def test_a_text_without_calls_is_left_as_the_client_sent_it() -> None:
    found = request(
        ["UPDATE events SET n = 1 WHERE id = 1", "UPDATE events SET at = now() WHERE id = 1"],
        PG,
        [None, None],
    )
    result = ANALYZER.pin(found, entropy())
    assert result.parsed[0] is None
    assert result.parsed[1] is not None


def test_a_placeholder_style_and_parameter_order_survive_the_rewrite_for_the_clients_own_side() -> None:
    found = request("UPDATE events SET at = NOW() WHERE id = ? LIMIT ?", MY, [3, 1])
    assert found.volatile
    result = ANALYZER.pin(found, entropy())
    assert result.parsed[0] is not None
    mine = ANALYZER.transpile_pinned(result.parsed[0], MY, MY, result.pins, keep_style=True)
    assert mine.text == "UPDATE events SET at = CAST('2024-05-06 07:08:09' AS DATETIME) WHERE id = ? LIMIT ?"
    assert mine.param_order == (0, 1)


def test_pinned_literals_never_enter_the_plan_cache() -> None:
    sql = "INSERT INTO events (id, at) VALUES (?, NOW())"
    later = AT + datetime.timedelta(seconds=5)
    first = pinned(sql, MY, PG, entropy(AT))
    second = pinned(sql, MY, PG, entropy(later))
    assert "07:08:09" in first
    assert "07:08:14" in second
    # The cached analysis and its cached rewrite still hold the call, not a literal of either request.
    cached = ANALYZER.transpile(ANALYZER.analyze(MY, sql), PG)
    assert cached.text == "INSERT INTO events (id, at) VALUES ($1, NOW())"


# -- what cannot be pinned -------------------------------------------------------------------------------
REFUSED = [
    (PG, "INSERT INTO events (id, n) VALUES (nextval('events_id_seq'), 1)", "NEXTVAL"),
    (PG, "INSERT INTO events (id, n) VALUES (1, currval('s'))", "CURRVAL"),
    (PG, "UPDATE events SET n = setval('s', 5) WHERE id = 1", "SETVAL"),
    (PG, "INSERT INTO events (id, who) VALUES (1, current_user)", "CURRENT_USER"),
    (PG, "INSERT INTO events (id, x) VALUES (1, txid_current())", "TXID_CURRENT"),
    (MY, "INSERT INTO events (id, parent) VALUES (1, LAST_INSERT_ID())", "LAST_INSERT_ID"),
    (MY, "INSERT INTO events (id, n) VALUES (UUID_SHORT(), 1)", "UUID_SHORT"),
    (MY, "INSERT INTO events (id, r) VALUES (1, RAND(42))", "RAND"),
    (MY, "INSERT INTO events (id, c) VALUES (1, CONNECTION_ID())", "CONNECTION_ID"),
    # evaluated once per row: one literal would give every row the same value
    (PG, "UPDATE events SET token = gen_random_uuid() WHERE n > 3", "GEN_RANDOM_UUID"),
    (MY, "UPDATE events SET r = RAND()", "RAND"),
    (PG, "INSERT INTO events (id, u) SELECT id, gen_random_uuid() FROM orders", "GEN_RANDOM_UUID"),
    (PG, "DELETE FROM events WHERE random() < 0.5", "RANDOM"),
    (
        PG,
        "INSERT INTO events (id, n) VALUES (1, 1), (2, 2) ON CONFLICT (id) DO UPDATE SET r = random()",
        "RANDOM",
    ),
]
ALLOWED = [
    (PG, "UPDATE events SET token = gen_random_uuid() WHERE id = 4"),  # one row, by its key
    (PG, "INSERT INTO events (id, r) VALUES (1, random()), (2, random())"),  # one call per row
    (PG, "INSERT INTO events (id, u) SELECT 5, gen_random_uuid()"),  # no FROM: one row
    (PG, "INSERT INTO events (id, n) VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET r = random()"),
    (PG, "UPDATE events SET at = clock_timestamp() WHERE n > 3"),  # time: one reading per request
    (MY, "INSERT INTO events (id, at) SELECT id, NOW() FROM orders"),
]


@pytest.mark.parametrize(("dialect", "sql", "function"), REFUSED)
@pytest.mark.parametrize("phase", list(Phase), ids=[p.value for p in Phase])
def test_calls_that_cannot_be_pinned_are_refused_while_writes_are_mirrored(
    dialect: str, sql: str, function: str, phase: Phase
) -> None:
    found = request(sql, dialect)
    if phase not in MIRRORING:
        route_sql(phase, found, COVERED)  # nothing changes outside mirroring phases
        return
    with pytest.raises(SqlRefusedError) as caught:
        route_sql(phase, found, COVERED)
    error = caught.value
    assert (error.code, error.fields["function"], error.fields["phase"]) == (
        "sql_unpinnable",
        function,
        phase.value,
    )
    assert f"{function}()" in error.detail


@pytest.mark.parametrize(("dialect", "sql"), ALLOWED)
def test_calls_evaluated_once_are_pinned(dialect: str, sql: str) -> None:
    found = request(sql, dialect)
    plan = route_sql(Phase.SHADOW, found, COVERED)
    assert plan.mirror is not None
    assert found.volatile
    result = ANALYZER.pin(found, entropy())
    assert result.pins, "nothing was pinned: the test proved nothing"


def test_a_read_may_call_anything_and_a_sequence_read_goes_where_writes_go() -> None:
    read = request("SELECT random(), gen_random_uuid(), LASTVAL() FROM events", PG)
    assert route_sql(Phase.SHADOW, read, COVERED).shadow is not None  # a plain read, shadowed
    sequence = request("SELECT nextval('events_id_seq') FROM events LIMIT 1", PG)
    plan = route_sql(Phase.LIVE, sequence, COVERED)
    assert (plan.serving.value, plan.shadow, plan.mirror) == ("new", None, None)


# -- keys the database would generate --------------------------------------------------------------------
GENERATED = [
    (PG, "INSERT INTO events (n) VALUES (1)", None, ("events", "id")),
    (PG, "INSERT INTO events DEFAULT VALUES", None, ("events", "id")),
    (PG, "INSERT INTO events (id, n) VALUES (DEFAULT, 1)", None, ("events", "id")),
    (MY, "INSERT INTO events (id, n) VALUES (NULL, 1)", None, ("events", "id")),
    (MY, "INSERT INTO events (id, n) VALUES (?, ?)", [None, 1], ("events", "id")),
    (MY, "INSERT INTO events (n) VALUES (1), (2)", None, ("events", "id")),
    (PG, "INSERT INTO lines (order_id, qty) VALUES (1, 2)", None, ("lines", "line")),
    (PG, "INSERT INTO events (n) SELECT n FROM orders", None, ("events", "id")),
    (PG, "INSERT INTO events (n) VALUES (1) ON CONFLICT DO NOTHING", None, ("events", "id")),
    (MY, "REPLACE INTO events (n) VALUES (1)", None, ("events", "id")),
    (
        PG,
        "WITH x AS (INSERT INTO events (n) VALUES (1) RETURNING id) SELECT * FROM x",
        None,
        ("events", "id"),
    ),
    # the key is given
    (PG, "INSERT INTO events (id, n) VALUES (1, 2)", None, None),
    (PG, "INSERT INTO events (id, n) VALUES ($1, 2)", ["e-1"], None),
    (PG, "INSERT INTO events (id, n) VALUES (gen_random_uuid(), 2)", None, None),
    (PG, "INSERT INTO events VALUES (1, 2)", None, None),  # no column list: every column is given
    (PG, "INSERT INTO lines (order_id, line, qty) VALUES (1, 1, 2), (1, 2, 5)", None, None),
    (PG, "INSERT INTO events (id, n) SELECT id, n FROM orders", None, None),
    (MY, "INSERT INTO events (id, n) VALUES (?, 1) ON DUPLICATE KEY UPDATE n = n + 1", [9], None),
]


@pytest.mark.parametrize(("dialect", "sql", "params", "expected"), GENERATED)
def test_inserts_that_leave_the_key_to_the_database(
    dialect: str, sql: str, params: Any, expected: tuple[str, str] | None
) -> None:
    found = request(sql, dialect, params)
    assert found.generated_key == expected
    for phase in Phase:
        if expected is None or phase not in MIRRORING:
            route_sql(phase, found, COVERED)
            continue
        with pytest.raises(SqlRefusedError) as caught:
            route_sql(phase, found, COVERED)
        error = caught.value
        assert (error.code, error.fields["table"], error.fields["column"]) == ("sql_generated_key", *expected)
        assert "would generate it on each side" in error.detail


def test_an_insert_into_an_uncovered_table_may_leave_its_key_to_the_database() -> None:
    found = request("INSERT INTO audit_log (note) VALUES ('x')", PG)
    assert found.generated_key == ("audit_log", "id")
    assert route_sql(Phase.SHADOW, found, COVERED).mirror is None  # stays on old: nothing to mirror


# -- PostgreSQL reads its literals back as the pinned values ---------------------------------------------
@pytest.fixture
async def conn(pg_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(pg_url, server_settings={"TimeZone": "UTC"})
    try:
        yield connection
    finally:
        await connection.close()


async def test_postgres_reads_the_literals_back_as_the_same_values(conn: asyncpg.Connection) -> None:
    for source in (PG, MY):
        calls = (
            "now(), random(), gen_random_uuid(), CURRENT_DATE, LOCALTIME"
            if source == PG
            else ("NOW(6), RAND(), UUID(), CURDATE(), CURTIME()")
        )
        sql = pinned(f"INSERT INTO events (id, a, b, c, d, e) SELECT 1, {calls}", source, PG)
        select = sql[sql.index("SELECT") :].replace("SELECT 1, ", "SELECT ")
        row = await conn.fetchrow(select)
        assert row is not None
        at, number, token, day, clock = tuple(row)
        assert at.replace(tzinfo=datetime.UTC) == AT
        assert number == 0.25
        assert str(token) == str(U1)
        assert day == AT.date()
        assert clock == (AT.time() if source == PG else AT.time().replace(microsecond=0))


async def test_a_double_survives_the_trip_exactly(conn: asyncpg.Connection) -> None:
    value = 0.1 + 0.2  # 0.30000000000000004: no short decimal is this double
    sql = pinned("INSERT INTO events (id, r) SELECT 1, random()", PG, PG, entropy(randoms=(value,)))
    assert await conn.fetchval(sql[sql.index("SELECT") :].replace("SELECT 1, ", "SELECT ")) == value
    assert Decimal(repr(value)) != Decimal("0.3")


# -- MySQL (MariaDB here) reads its literals back as the pinned values -----------------------------------
def _mariadb(sql: str) -> list[str]:
    """One row of `sql`'s result from the local MariaDB (the `mariadb` client: no driver needed)."""
    done = subprocess.run(
        ["mariadb", "-h", "127.0.0.1", "-u", "root", "--batch", "--skip-column-names", "-e", sql],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout.rstrip("\n").split("\t")


def test_mysql_reads_the_literals_back_as_the_same_values() -> None:
    value = 0.1 + 0.2
    sql = pinned(
        "INSERT INTO events (id, a, b, c, d, e, f) "
        "SELECT 1, now(), random(), gen_random_uuid(), CURRENT_DATE, LOCALTIME, CURRENT_TIMESTAMP(0)",
        PG,
        MY,
        entropy(randoms=(value,)),
    )
    select = sql[sql.index("SELECT") :].replace("SELECT 1, ", "SELECT ")
    at, number, token, day, clock, seconds = _mariadb(f"SET time_zone = '+00:00'; {select}")
    assert at == "2024-05-06 07:08:09.123456"
    assert seconds == "2024-05-06 07:08:09"
    assert float(number) == value
    assert token == str(U1)
    assert (day, clock) == ("2024-05-06", "07:08:09.123456")
    # The double literal is a DOUBLE in MySQL, not a DECIMAL rounded to its digits.
    assert _mariadb(f"SET time_zone = '+00:00'; SELECT ({number.split()[0]}e0) = 0.1e0 + 0.2e0") == ["1"]
