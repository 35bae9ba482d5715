"""Transpilation: what is rewritten, what is refused, and rewritten statements executed on real PostgreSQL.

The PostgreSQL checks run in the session's own test database: a MySQL statement, transpiled, must run on
PostgreSQL and give the result written out here by hand; a PostgreSQL statement sent through MySQL and back
must give the same rows as the original.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from routing.sql import SqlAnalyzer, SqlLimits
from routing.sql_classify import Rules
from routing.sql_errors import UntranspilableError
from routing.sql_transpile import Transpiled

MY, PG = "mysql", "postgres"
ANALYZER = SqlAnalyzer(Rules(primary_keys={"orders": ("id",), "customers": ("id",)}), SqlLimits())


def _transpile(sql: str, source: str = MY, target: str = PG) -> Transpiled:
    return ANALYZER.transpile(ANALYZER.analyze(source, sql), target)


@pytest.mark.parametrize(
    ("sql", "expected", "order"),
    [
        ("SELECT id FROM orders WHERE tenant_id = ? AND id = ?", "WHERE tenant_id = $1 AND id = $2", None),
        ("SELECT id FROM orders ORDER BY id LIMIT ?, ?", "LIMIT $2 OFFSET $1", None),
        ("SELECT id FROM `orders` WHERE note = %s", 'FROM "orders" WHERE note = $1', None),
        (
            "INSERT INTO orders (id, total) VALUES (?, ?) ON DUPLICATE KEY UPDATE total = VALUES(total)",
            "ON CONFLICT(id) DO UPDATE SET total = EXCLUDED.total",
            None,
        ),
        ("INSERT IGNORE INTO orders (id) VALUES (1)", "VALUES (1) ON CONFLICT DO NOTHING", None),
        ("EXPLAIN SELECT * FROM orders WHERE id = ?", "EXPLAIN SELECT * FROM orders WHERE id = $1", None),
        ("SELECT IFNULL(note, '-') FROM orders", "COALESCE(note, '-')", None),
    ],
)
def test_mysql_to_postgres_rewrites(sql: str, expected: str, order: Any) -> None:
    result = _transpile(sql)
    assert expected in result.text
    assert result.param_order == order


def test_postgres_to_mysql_reorders_parameters_by_their_place_in_the_output() -> None:
    result = _transpile("SELECT * FROM orders WHERE id = $2 AND tenant_id = $1 LIMIT $3", PG, MY)
    assert result.text == "SELECT * FROM orders WHERE id = ? AND tenant_id = ? LIMIT ?"
    assert result.param_order == (1, 0, 2)
    repeated = _transpile("SELECT * FROM t WHERE a = $1 OR b = $1", PG, MY)
    assert repeated.param_order == (0, 0)


def test_several_statements_keep_one_text_each() -> None:
    result = _transpile("SELECT 1; UPDATE orders SET total = ? WHERE id = ?")
    assert result.statements == ("SELECT 1", "UPDATE orders SET total = $1 WHERE id = $2")


@pytest.mark.parametrize(
    ("source", "target", "sql", "reason"),
    [
        (MY, PG, "REPLACE INTO orders (id) VALUES (1)", "REPLACE"),
        (
            MY,
            PG,
            "UPDATE orders o JOIN customers c ON c.id = o.customer_id SET o.total = 0",
            "UPDATE with JOIN",
        ),
        (MY, PG, "DELETE o FROM orders o JOIN refunds r ON r.order_id = o.id", "DELETE with JOIN"),
        (MY, PG, "UPDATE orders SET total = 0 ORDER BY id LIMIT 1", "ORDER BY or LIMIT"),
        (MY, PG, "SELECT SQL_CALC_FOUND_ROWS * FROM orders", "SQL_CALC_FOUND_ROWS"),
        (MY, PG, "SELECT * FROM orders WHERE MATCH(note) AGAINST ('x')", "MATCH"),
        (MY, PG, "INSERT INTO refunds (id) VALUES (1) ON DUPLICATE KEY UPDATE id = 1", "sql.primary_keys"),
        (MY, PG, "SELECT LAST_INSERT_ID()", "LAST_INSERT_ID"),
        (MY, PG, "SHOW TABLES", "SHOW"),
        (MY, PG, "RENAME TABLE a TO b", "RENAME"),
        (MY, PG, "SELECT * FROM orders WHERE id = :id", "named parameters"),
        (MY, PG, "EXPLAIN FORMAT=JSON SELECT 1", "EXPLAIN options"),
        (PG, MY, "DELETE FROM orders WHERE id = $1 RETURNING id", "RETURNING"),
        (PG, MY, "INSERT INTO orders (id) VALUES (1) ON CONFLICT DO NOTHING", "ON CONFLICT"),
        (PG, MY, "MERGE INTO orders USING s ON orders.id = s.id WHEN MATCHED THEN DELETE", "MERGE"),
        (PG, MY, "DELETE FROM orders USING refunds WHERE refunds.order_id = orders.id", "USING"),
        (PG, MY, "SHOW search_path", "SHOW"),
        (PG, MY, "SELECT customer_id FROM orders ORDER BY 1", "NULLS LAST"),
    ],
)
def test_refused_with_a_clear_error(source: str, target: str, sql: str, reason: str) -> None:
    with pytest.raises(UntranspilableError) as caught:
        _transpile(sql, source, target)
    assert reason in caught.value.detail
    assert caught.value.detail.startswith(f"cannot transpile safely from {source} to {target}")


def test_transpilation_is_cached_with_the_analysis() -> None:
    analysis = ANALYZER.analyze(MY, "SELECT * FROM orders WHERE id = ? /* cached */")
    assert ANALYZER.transpile(analysis, PG) is ANALYZER.transpile(analysis, PG)
    refused = ANALYZER.analyze(MY, "REPLACE INTO orders (id) VALUES (2)")
    errors = []
    for _ in range(2):
        with pytest.raises(UntranspilableError) as caught:
            ANALYZER.transpile(refused, PG)
        errors.append(caught.value)
    assert errors[0] is errors[1]


# -- executed on PostgreSQL ------------------------------------------------------------------------------
SCHEMA = """
CREATE TABLE customers (id int PRIMARY KEY, tenant_id text NOT NULL, name text, credit numeric);
CREATE TABLE orders (
    id int PRIMARY KEY, tenant_id text NOT NULL, customer_id int, total numeric NOT NULL DEFAULT 0,
    note text, created_at timestamp NOT NULL DEFAULT '2024-01-02 03:04:05'
);
CREATE TABLE refunds (id int PRIMARY KEY, order_id int NOT NULL);
INSERT INTO customers VALUES (1, 'acme', 'Ann', 10), (2, 'acme', 'Bob', NULL), (3, 'globex', 'Cy', 5);
INSERT INTO orders (id, tenant_id, customer_id, total, note) VALUES
    (1, 'acme', 1, 10, 'first'), (2, 'acme', 1, 25, NULL), (3, 'acme', 2, 7, 'x%y'),
    (4, 'globex', 3, 99, 'big');
INSERT INTO refunds VALUES (1, 2);
"""


@pytest.fixture
async def conn(pg_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection whose work is rolled back: every test starts from SCHEMA."""
    connection = await asyncpg.connect(pg_url)
    transaction = connection.transaction()
    await transaction.start()
    await connection.execute("CREATE SCHEMA sqlrt; SET LOCAL search_path = sqlrt")
    await connection.execute(SCHEMA)
    try:
        yield connection
    finally:
        await transaction.rollback()
        await connection.close()


async def _run(conn: asyncpg.Connection, result: Transpiled, params: list[Any]) -> list[tuple[Any, ...]]:
    """Run each statement on its own, as the PostgreSQL applier does; the rows of the last one."""
    rows: list[asyncpg.Record] = []
    for statement, slots in result.executable:
        rows = await conn.fetch(statement, *[params[i] for i in slots])
    return [tuple(row) for row in rows]


MYSQL_ON_POSTGRES: list[tuple[str, list[Any], str, list[tuple[Any, ...]]]] = [
    # (MySQL statement, params, check query on PostgreSQL, expected rows of the check)
    (
        "SELECT id, total FROM orders WHERE tenant_id = ? AND total > ? ORDER BY id",
        ["acme", 8],
        "",
        [(1, Decimal(10)), (2, Decimal(25))],
    ),
    ("SELECT id FROM orders WHERE tenant_id = ? ORDER BY id LIMIT ?, ?", ["acme", 1, 1], "", [(2,)]),
    ("SELECT id FROM `orders` WHERE note LIKE 'x\\%%' ORDER BY id", [], "", [(3,)]),
    (
        "SELECT id, IFNULL(note, '-') FROM orders WHERE id IN (2, 4) ORDER BY id",
        [],
        "",
        [(2, "-"), (4, "big")],
    ),
    (
        "SELECT c.name, COUNT(*) AS n, SUM(o.total) AS s "
        "FROM orders o JOIN customers c ON c.id = o.customer_id "
        "WHERE o.tenant_id = ? GROUP BY c.name HAVING COUNT(*) >= 1 ORDER BY n DESC, c.name",
        ["acme"],
        "",
        [("Ann", 2, Decimal(35)), ("Bob", 1, Decimal(7))],
    ),
    (
        "WITH big AS (SELECT customer_id FROM orders WHERE total > 20) "
        "SELECT name FROM customers WHERE id IN (SELECT customer_id FROM big) ORDER BY name",
        [],
        "",
        [("Ann",), ("Cy",)],
    ),
    ("SELECT CONCAT(name, '!') FROM customers WHERE id = ?", [1], "", [("Ann!",)]),
    ("SELECT id FROM orders WHERE total BETWEEN ? AND ? ORDER BY id DESC", [7, 10], "", [(3,), (1,)]),
    ("SELECT id FROM orders ORDER BY note, id LIMIT 2", [], "", [(2,), (4,)]),  # MySQL sorts NULL first
    ("SELECT id FROM orders WHERE id = ? FOR UPDATE", [3], "", [(3,)]),
    ("SELECT DATE_FORMAT(created_at, '%Y-%m') FROM orders WHERE id = 1", [], "", [("2024-01",)]),
    ("SELECT COUNT(DISTINCT customer_id) FROM orders WHERE tenant_id = 'acme'", [], "", [(2,)]),
    # writes, checked afterwards
    (
        "INSERT INTO orders (id, tenant_id, total) VALUES (?, ?, ?)",
        [10, "acme", 5],
        "SELECT id, tenant_id, total FROM orders WHERE id = 10",
        [(10, "acme", Decimal(5))],
    ),
    (
        "INSERT INTO orders (id, tenant_id, total) VALUES (?, ?, ?) "
        "ON DUPLICATE KEY UPDATE total = VALUES(total)",
        [1, "acme", 11],
        "SELECT total FROM orders WHERE id = 1",
        [(Decimal(11),)],
    ),
    (
        "INSERT INTO orders (id, tenant_id, total) VALUES (?, ?, ?) "
        "ON DUPLICATE KEY UPDATE total = total + VALUES(total)",
        [2, "acme", 5],
        "SELECT total FROM orders WHERE id = 2",
        [(Decimal(30),)],
    ),
    (
        "INSERT IGNORE INTO orders (id, tenant_id, total) VALUES (1, 'acme', 0), (11, 'acme', 1)",
        [],
        "SELECT id, total FROM orders WHERE id IN (1, 11) ORDER BY id",
        [(1, Decimal(10)), (11, Decimal(1))],
    ),
    (
        "UPDATE orders SET total = total * 2, note = ? WHERE tenant_id = ? AND id = ?",
        ["doubled", "acme", 3],
        "SELECT total, note FROM orders WHERE id = 3",
        [(Decimal(14), "doubled")],
    ),
    ("DELETE FROM orders WHERE tenant_id = ? AND id = ?", ["acme", 2], "SELECT count(*) FROM orders", [(3,)]),
    (
        "DELETE FROM orders WHERE id IN (SELECT order_id FROM refunds)",
        [],
        "SELECT id FROM orders ORDER BY id",
        [(1,), (3,), (4,)],
    ),
    (
        "INSERT INTO refunds (id, order_id) SELECT id + 100, id FROM orders WHERE tenant_id = ?",
        ["globex"],
        "SELECT id, order_id FROM refunds ORDER BY id",
        [(1, 2), (104, 4)],
    ),
    (
        "UPDATE customers SET credit = COALESCE(credit, 0) + ? WHERE tenant_id = ?",
        [1, "acme"],
        "SELECT id, credit FROM customers ORDER BY id",
        [(1, Decimal(11)), (2, Decimal(1)), (3, Decimal(5))],
    ),
    (
        "BEGIN; UPDATE orders SET note = 'a' WHERE id = ?; UPDATE orders SET note = 'b' WHERE id = ?; COMMIT",
        [1, 4],
        "SELECT id, note FROM orders WHERE id IN (1, 4) ORDER BY id",
        [(1, "a"), (4, "b")],
    ),
]


@pytest.mark.parametrize(("sql", "params", "check", "expected"), MYSQL_ON_POSTGRES)
async def test_mysql_statements_transpiled_run_on_postgres(
    conn: asyncpg.Connection, sql: str, params: list[Any], check: str, expected: list[tuple[Any, ...]]
) -> None:
    result = _transpile(sql)
    statements = result.statements
    if statements[0] == "BEGIN" and statements[-1] == "COMMIT":
        # The connection is already inside the test's transaction: run the body only.
        result = Transpiled(statements[1:-1], result.param_order, result.executable[1:-1])
    rows = await _run(conn, result, params)
    if check:
        rows = [tuple(row) for row in await conn.fetch(check)]
    assert rows == expected


POSTGRES_ROUND_TRIPS: list[tuple[str, list[Any]]] = [
    ("SELECT id, total FROM orders WHERE tenant_id = $1 AND total > $2 ORDER BY id", ["acme", 8]),
    ("SELECT id FROM orders WHERE id = $2 OR customer_id = $1 ORDER BY id LIMIT $3", [2, 4, 5]),
    ("SELECT o.id, c.name FROM orders o LEFT JOIN customers c ON c.id = o.customer_id ORDER BY o.id", []),
    ("SELECT DISTINCT ON (customer_id) customer_id, id FROM orders ORDER BY customer_id, id", []),
    ("SELECT customer_id, max(total) FROM orders GROUP BY customer_id ORDER BY customer_id", []),
    ("SELECT id FROM orders WHERE note ILIKE 'FIR%' ORDER BY id", []),
    ("SELECT id FROM orders WHERE total::int > $1 ORDER BY id", [9]),
    ("SELECT COALESCE(note, 'none') FROM orders ORDER BY id", []),
    (
        "WITH t AS (SELECT customer_id, sum(total) AS s FROM orders GROUP BY customer_id) "
        "SELECT customer_id, s FROM t WHERE s > $1 ORDER BY customer_id",
        [10],
    ),
    ("SELECT id FROM orders o WHERE EXISTS (SELECT 1 FROM refunds r WHERE r.order_id = o.id)", []),
    ("SELECT id FROM orders ORDER BY total DESC LIMIT 2 OFFSET 1", []),
]


@pytest.mark.parametrize(("sql", "params"), POSTGRES_ROUND_TRIPS)
async def test_postgres_through_mysql_and_back_gives_the_same_rows(
    conn: asyncpg.Connection, sql: str, params: list[Any]
) -> None:
    original = [tuple(row) for row in await conn.fetch(sql, *params)]
    assert original  # a check over no rows would prove nothing
    to_mysql = _transpile(sql, PG, MY)
    back = ANALYZER.transpile(ANALYZER.analyze(MY, to_mysql.text), PG)
    assert to_mysql.param_order is not None
    mysql_params = [params[i] for i in to_mysql.param_order]
    assert await _run(conn, back, mysql_params) == original


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (
            "SELECT id FROM orders WHERE id = $1 FOR NO KEY UPDATE",
            "SELECT id FROM orders WHERE id = ? FOR UPDATE",
        ),
        ("SELECT id FROM orders WHERE id = $1 FOR KEY SHARE", "SELECT id FROM orders WHERE id = ? FOR SHARE"),
        (
            "SELECT id FROM orders WHERE id = $1 FOR UPDATE SKIP LOCKED",
            "SELECT id FROM orders WHERE id = ? FOR UPDATE SKIP LOCKED",
        ),
    ],
)
def test_postgres_only_row_locks_become_the_stronger_mysql_lock(sql: str, expected: str) -> None:
    assert _transpile(sql, PG, MY).text == expected
