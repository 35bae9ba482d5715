"""Table tests of SQL classification: kind, tables, tenant (and keys) for statements of both dialects."""

from __future__ import annotations

from typing import Any

import pytest

from routing.classify import RequestKind
from routing.sql import SqlAnalyzer, SqlLimits, SqlRequest
from routing.sql_classify import Rules
from routing.sql_errors import (
    SqlLimitError,
    SqlParamsError,
    SqlSyntaxError,
    SqlTenantError,
)

RULES = Rules(primary_keys={"orders": ("id",), "order_items": ("order_id", "line")})
MY, PG = "mysql", "postgres"

# (dialect, sql, params, kind, tables, tenant); kind "ddl" means a DDL request (routed as a write).
CASES: list[tuple[str, str, Any, str, set[str], str | None]] = [
    # -- reads ---------------------------------------------------------------------------------------
    (MY, "SELECT * FROM orders WHERE tenant_id = 'acme'", None, "read", {"orders"}, "acme"),
    (PG, "SELECT * FROM orders WHERE tenant_id = 'acme'", None, "read", {"orders"}, "acme"),
    (MY, "SELECT id FROM orders WHERE tenant_id = ? AND id = ?", ["acme", 1], "read", {"orders"}, "acme"),
    (
        PG,
        "SELECT id FROM orders WHERE tenant_id = $1 AND id = $2",
        ["globex", 1],
        "read",
        {"orders"},
        "globex",
    ),
    (
        PG,
        "SELECT id FROM orders WHERE id = $1 AND tenant_id = $2",
        [1, "initech"],
        "read",
        {"orders"},
        "initech",
    ),
    (PG, "SELECT id FROM orders WHERE tenant_id = %s", ["acme"], "read", {"orders"}, "acme"),
    (
        MY,
        "SELECT id FROM orders WHERE tenant_id = %s AND total > %s",
        ["acme", 3],
        "read",
        {"orders"},
        "acme",
    ),
    (PG, "SELECT * FROM orders WHERE tenant_id = :t", {"t": "acme"}, "read", {"orders"}, "acme"),
    (PG, "SELECT * FROM orders WHERE tenant_id = $1::text", ["acme"], "read", {"orders"}, "acme"),
    (MY, "SELECT * FROM `orders` WHERE `tenant_id` = 'acme'", None, "read", {"orders"}, "acme"),
    (PG, 'SELECT * FROM "orders" WHERE "tenant_id" = \'acme\'', None, "read", {"orders"}, "acme"),
    (PG, "SELECT * FROM public.orders WHERE tenant_id = 'acme'", None, "read", {"public.orders"}, "acme"),
    (MY, "SELECT * FROM shop.orders", None, "read", {"shop.orders"}, None),
    (PG, "SELECT 1", None, "read", set(), None),
    (PG, "SELECT now()", None, "read", set(), None),
    (MY, "SELECT COUNT(*) FROM customers WHERE tenant_id = 42", None, "read", {"customers"}, "42"),
    (
        PG,
        "SELECT * FROM orders WHERE tenant_id = 'acme' OR tenant_id = 'globex'",
        None,
        "read",
        {"orders"},
        None,
    ),
    (PG, "SELECT * FROM orders WHERE NOT tenant_id = 'acme'", None, "read", {"orders"}, None),
    (PG, "SELECT * FROM orders WHERE tenant_id IN ('acme', 'globex')", None, "read", {"orders"}, None),
    (
        PG,
        "SELECT * FROM orders WHERE (tenant_id = 'acme' AND total > 1) AND id < 9",
        None,
        "read",
        {"orders"},
        "acme",
    ),
    # joins and subqueries
    (
        MY,
        "SELECT o.id, c.name FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.tenant_id = ?",
        ["acme"],
        "read",
        {"orders", "customers"},
        "acme",
    ),
    (
        PG,
        "SELECT * FROM orders o LEFT JOIN order_items i ON i.order_id = o.id AND i.tenant_id = 'acme'",
        None,
        "read",
        {"orders", "order_items"},
        "acme",
    ),
    (
        PG,
        "SELECT * FROM customers WHERE id IN (SELECT customer_id FROM orders WHERE total > 10)",
        None,
        "read",
        {"customers", "orders"},
        None,
    ),
    (
        MY,
        "SELECT * FROM (SELECT * FROM orders WHERE tenant_id = 'acme') AS recent WHERE recent.total > 5",
        None,
        "read",
        {"orders"},
        "acme",
    ),
    (
        PG,
        "SELECT c.id, (SELECT MAX(total) FROM orders o WHERE o.customer_id = c.id) FROM customers c",
        None,
        "read",
        {"customers", "orders"},
        None,
    ),
    (
        PG,
        "SELECT * FROM orders WHERE EXISTS (SELECT 1 FROM refunds r WHERE r.order_id = orders.id)",
        None,
        "read",
        {"orders", "refunds"},
        None,
    ),
    (
        PG,
        "SELECT id FROM orders UNION SELECT id FROM archived_orders",
        None,
        "read",
        {"orders", "archived_orders"},
        None,
    ),
    (MY, "SELECT id FROM orders ORDER BY id LIMIT ?, ?", [10, 5], "read", {"orders"}, None),
    # CTEs: their names are not tables
    (
        PG,
        "WITH recent AS (SELECT * FROM orders WHERE tenant_id = $1) SELECT * FROM recent",
        ["acme"],
        "read",
        {"orders"},
        "acme",
    ),
    (
        MY,
        "WITH big AS (SELECT customer_id FROM orders WHERE total > 100), "
        "vip AS (SELECT * FROM customers WHERE id IN (SELECT customer_id FROM big)) SELECT * FROM vip",
        None,
        "read",
        {"orders", "customers"},
        None,
    ),
    (
        PG,
        "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t WHERE n < 3) SELECT * FROM t",
        None,
        "read",
        set(),
        None,
    ),
    # SHOW / EXPLAIN / DESCRIBE
    (MY, "SHOW TABLES", None, "read", set(), None),
    (MY, "SHOW COLUMNS FROM orders", None, "read", {"orders"}, None),
    (PG, "SHOW search_path", None, "read", set(), None),
    (PG, "EXPLAIN SELECT * FROM orders WHERE tenant_id = 'acme'", None, "read", {"orders"}, "acme"),
    (PG, "EXPLAIN (FORMAT JSON) SELECT * FROM orders", None, "read", {"orders"}, None),
    (MY, "EXPLAIN DELETE FROM orders WHERE id = 1", None, "read", {"orders"}, None),
    (PG, "EXPLAIN ANALYZE SELECT * FROM orders", None, "read", {"orders"}, None),
    (PG, "EXPLAIN ANALYZE DELETE FROM orders WHERE id = 1", None, "write", {"orders"}, None),
    (MY, "DESCRIBE orders", None, "read", {"orders"}, None),
    # -- writes --------------------------------------------------------------------------------------
    (
        MY,
        "INSERT INTO orders (id, tenant_id, total) VALUES (?, ?, ?)",
        [1, "acme", 3],
        "write",
        {"orders"},
        "acme",
    ),
    (
        PG,
        "INSERT INTO orders (id, tenant_id, total) VALUES ($1, $2, $3)",
        [1, "acme", 3],
        "write",
        {"orders"},
        "acme",
    ),
    (
        PG,
        "INSERT INTO orders (id, tenant_id) VALUES (1, 'acme'), (2, 'acme') RETURNING id",
        None,
        "write",
        {"orders"},
        "acme",
    ),
    (
        PG,
        "INSERT INTO orders (id, tenant_id, total) VALUES ($1, $2, $3) "
        "ON CONFLICT (id) DO UPDATE SET total = EXCLUDED.total RETURNING id",
        [1, "acme", 5],
        "write",
        {"orders"},
        "acme",
    ),
    (
        PG,
        "INSERT INTO orders (id, tenant_id) VALUES (1, 'acme') ON CONFLICT DO NOTHING",
        None,
        "write",
        {"orders"},
        "acme",
    ),
    (
        MY,
        "INSERT INTO orders (id, tenant_id, total) VALUES (?, ?, ?) "
        "ON DUPLICATE KEY UPDATE total = VALUES(total)",
        [1, "acme", 5],
        "write",
        {"orders"},
        "acme",
    ),
    (MY, "INSERT IGNORE INTO orders (id, tenant_id) VALUES (1, 'acme')", None, "write", {"orders"}, "acme"),
    (MY, "REPLACE INTO orders (id, tenant_id) VALUES (1, 'acme')", None, "write", {"orders"}, "acme"),
    (
        PG,
        "INSERT INTO archived_orders SELECT * FROM orders WHERE tenant_id = 'acme'",
        None,
        "write",
        {"archived_orders", "orders"},
        "acme",
    ),
    (
        MY,
        "UPDATE orders SET total = ? WHERE tenant_id = ? AND id = ?",
        [9, "acme", 1],
        "write",
        {"orders"},
        "acme",
    ),
    (PG, "UPDATE orders SET total = total + 1 WHERE id = $1 RETURNING total", [1], "write", {"orders"}, None),
    (
        PG,
        "UPDATE orders o SET total = c.credit FROM customers c "
        "WHERE c.id = o.customer_id AND o.tenant_id = 'acme'",
        None,
        "write",
        {"orders", "customers"},
        "acme",
    ),
    (
        MY,
        "UPDATE orders o JOIN customers c ON c.id = o.customer_id SET o.total = 0 WHERE c.tenant_id = 'acme'",
        None,
        "write",
        {"orders", "customers"},
        "acme",
    ),
    (MY, "DELETE FROM orders WHERE tenant_id = 'acme' AND id = 7", None, "write", {"orders"}, "acme"),
    (PG, "DELETE FROM orders WHERE id = $1 RETURNING *", [7], "write", {"orders"}, None),
    (
        PG,
        "DELETE FROM orders USING refunds r WHERE r.order_id = orders.id",
        None,
        "write",
        {"orders", "refunds"},
        None,
    ),
    (
        MY,
        "DELETE o FROM orders o JOIN refunds r ON r.order_id = o.id",
        None,
        "write",
        {"orders", "refunds"},
        None,
    ),
    (
        PG,
        "MERGE INTO orders o USING staged s ON o.id = s.id WHEN MATCHED THEN UPDATE SET total = s.total "
        "WHEN NOT MATCHED THEN INSERT (id, total) VALUES (s.id, s.total)",
        None,
        "write",
        {"orders", "staged"},
        None,
    ),
    (PG, "SELECT * FROM orders WHERE id = 1 FOR UPDATE", None, "write", {"orders"}, None),
    (MY, "SELECT * FROM orders WHERE id = ? FOR UPDATE", [1], "write", {"orders"}, None),
    (PG, "SELECT * FROM orders o WHERE o.id = 1 FOR UPDATE OF o", None, "write", {"orders"}, None),
    (MY, "SELECT * FROM orders WHERE id = 1 LOCK IN SHARE MODE", None, "write", {"orders"}, None),
    # a data-modifying CTE makes the whole statement a write
    (
        PG,
        "WITH gone AS (DELETE FROM orders WHERE tenant_id = 'acme' RETURNING id) SELECT count(*) FROM gone",
        None,
        "write",
        {"orders"},
        "acme",
    ),
    (
        PG,
        "WITH moved AS (DELETE FROM orders WHERE total = 0 RETURNING *) "
        "INSERT INTO archived_orders SELECT * FROM moved",
        None,
        "write",
        {"orders", "archived_orders"},
        None,
    ),
    (PG, "COPY orders FROM STDIN", None, "write", {"orders"}, None),
    # -- multi-statement ------------------------------------------------------------------------------
    (MY, "SELECT 1 FROM orders; SELECT 2 FROM customers", None, "read", {"orders", "customers"}, None),
    (
        PG,
        "BEGIN; UPDATE orders SET total = 1 WHERE tenant_id = 'acme'; COMMIT",
        None,
        "write",
        {"orders"},
        "acme",
    ),
    (
        MY,
        "SELECT * FROM orders WHERE tenant_id = ?; DELETE FROM refunds WHERE tenant_id = ?;",
        ["acme", "acme"],
        "write",
        {"orders", "refunds"},
        "acme",
    ),
    (PG, "START TRANSACTION; SELECT 1; ROLLBACK", None, "read", set(), None),
    # -- DDL ------------------------------------------------------------------------------------------
    (PG, "CREATE TABLE refunds (id int PRIMARY KEY, order_id int)", None, "ddl", {"refunds"}, None),
    (MY, "ALTER TABLE orders ADD COLUMN note TEXT", None, "ddl", {"orders"}, None),
    (PG, "DROP TABLE orders, customers", None, "ddl", {"orders", "customers"}, None),
    (MY, "CREATE INDEX orders_total ON orders (total)", None, "ddl", {"orders"}, None),
    (PG, "TRUNCATE orders", None, "ddl", {"orders"}, None),
    (PG, "SELECT * INTO orders_copy FROM orders", None, "ddl", {"orders_copy", "orders"}, None),
    (PG, "VACUUM orders", None, "ddl", set(), None),
    (MY, "RENAME TABLE orders TO old_orders", None, "ddl", set(), None),
    (PG, "GRANT SELECT ON orders TO reporting", None, "ddl", {"orders"}, None),
    (PG, "CREATE TABLE t2 AS SELECT * FROM orders", None, "ddl", {"t2", "orders"}, None),
    (PG, "SELECT 1; CREATE TABLE t3 (id int)", None, "ddl", {"t3"}, None),
]


def _ids() -> list[str]:
    return [f"{i:02d}-{dialect}-{sql[:40]}" for i, (dialect, sql, *_rest) in enumerate(CASES)]


@pytest.fixture(scope="module")
def analyzer() -> SqlAnalyzer:
    return SqlAnalyzer(RULES, SqlLimits(max_text_chars=4000, max_statements=5), cache_size=256)


def _request(analyzer: SqlAnalyzer, dialect: str, sql: str, params: Any = None) -> SqlRequest:
    return analyzer.request(dialect, [sql], [params])


def test_the_table_is_large_enough() -> None:
    assert len(CASES) >= 60
    assert {dialect for dialect, *_ in CASES} == {MY, PG}


@pytest.mark.parametrize(("dialect", "sql", "params", "kind", "tables", "tenant"), CASES, ids=_ids())
def test_classification(
    analyzer: SqlAnalyzer,
    dialect: str,
    sql: str,
    params: Any,
    kind: str,
    tables: set[str],
    tenant: str | None,
) -> None:
    request = _request(analyzer, dialect, sql, params)
    got = "ddl" if request.ddl else request.kind.value
    assert (got, set(request.tables), request.tenant) == (kind, tables, tenant)
    assert request.kind is (RequestKind.READ if kind == "read" else RequestKind.WRITE)


@pytest.mark.parametrize(
    ("dialect", "sql", "params", "keys"),
    [
        (MY, "INSERT INTO orders (id, tenant_id) VALUES (?, ?)", [41, "acme"], (("orders", (41,)),)),
        (PG, "UPDATE orders SET total = 1 WHERE tenant_id = 'a' AND id = $1", [7], (("orders", (7,)),)),
        (PG, "DELETE FROM orders WHERE id = 'k-1'", None, (("orders", ("k-1",)),)),
        (PG, "DELETE FROM orders WHERE id = 1 OR id = 2", None, ()),
        (PG, "INSERT INTO orders (id) VALUES (1), (2)", None, ()),
        (
            PG,
            "UPDATE order_items SET qty = 2 WHERE order_id = $1 AND line = $2",
            [5, 3],
            (("order_items", (5, 3)),),
        ),
        (PG, "UPDATE order_items SET qty = 2 WHERE order_id = 5", None, ()),  # half a composite key
        (
            PG,
            "UPDATE customers SET name = 'x' WHERE id = -3",
            None,
            (("customers", (-3,)),),
        ),  # default key: id
        (PG, "SELECT * FROM orders WHERE id = 1", None, ()),  # reads carry no key
    ],
)
def test_single_row_keys(analyzer: SqlAnalyzer, dialect: str, sql: str, params: Any, keys: Any) -> None:
    assert _request(analyzer, dialect, sql, params).keys == keys


def test_a_list_of_texts_is_one_request(analyzer: SqlAnalyzer) -> None:
    request = analyzer.request(
        PG,
        ["SELECT * FROM orders WHERE tenant_id = $1", "UPDATE customers SET n = 1 WHERE tenant_id = $1"],
        [["acme"], ["acme"]],
    )
    assert (request.kind, request.tables, request.tenant) == (
        RequestKind.WRITE,
        frozenset({"orders", "customers"}),
        "acme",
    )


# -- errors ----------------------------------------------------------------------------------------------
def test_bad_sql_reports_the_parsers_message_and_position(analyzer: SqlAnalyzer) -> None:
    with pytest.raises(SqlSyntaxError) as caught:
        _request(analyzer, PG, "SELECT *\nFROM\n  WHERE x = 1")
    assert (caught.value.line, caught.value.col) == (3, 7)
    assert "Expected table name" in caught.value.detail
    assert "WHERE" in caught.value.detail
    assert "\x1b" not in caught.value.detail
    assert "<Token" not in caught.value.detail


def test_positions_refer_to_the_text_sent_even_with_positional_placeholders(analyzer: SqlAnalyzer) -> None:
    with pytest.raises(SqlSyntaxError) as caught:
        _request(analyzer, MY, "SELECT * FROM t WHERE a = ? AND b = ? ORDER", [1, 2])
    assert (caught.value.line, caught.value.col) == (1, 43)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 'unterminated",
        "SELECT * FROM",
        "SELEC 1 FROM t",
        "SELECT (1",
        "SELECT " + "(" * 3000 + "1",
        "orders",  # sqlglot reads these as bare expressions, not statements
        "1 + 1",
        "f(tenant_id)",
        "\x1d\x8e",
    ],
)
def test_unparseable_text_is_a_syntax_error(analyzer: SqlAnalyzer, sql: str) -> None:
    big = SqlAnalyzer(RULES, SqlLimits(max_text_chars=100_000, max_statements=5))
    with pytest.raises(SqlSyntaxError):
        _request(big, PG, sql)


@pytest.mark.parametrize(
    ("texts", "code"),
    [
        ([""], "sql_empty"),
        (["   \n"], "sql_empty"),
        ([";;"], "sql_empty"),
        ([], "sql_empty"),
        (["SELECT 1;" * 6], "sql_too_many_statements"),
        (["SELECT 1; SELECT 2; SELECT 3", "SELECT 4; SELECT 5; SELECT 6"], "sql_too_many_statements"),
        (["SELECT '" + "x" * 4000 + "'"], "sql_too_long"),
        (["SELECT '" + "x" * 2500 + "'", "SELECT '" + "x" * 2500 + "'"], "sql_too_long"),
    ],
)
def test_limits(analyzer: SqlAnalyzer, texts: list[str], code: str) -> None:
    with pytest.raises(SqlLimitError) as caught:
        analyzer.request(PG, texts, [None] * len(texts))
    assert caught.value.code == code


@pytest.mark.parametrize(
    ("sql", "params", "error"),
    [
        (
            "SELECT * FROM t WHERE tenant_id = 'a'; SELECT * FROM t WHERE tenant_id = 'b'",
            None,
            SqlTenantError,
        ),
        ("UPDATE t SET tenant_id = 'b' WHERE tenant_id = 'a'", None, SqlTenantError),
        ("SELECT * FROM t WHERE tenant_id = $1", [None], SqlTenantError),
        ("SELECT * FROM t WHERE tenant_id = $1", ["no spaces allowed"], SqlTenantError),
        ("SELECT * FROM t WHERE id = $2", ["only one"], SqlParamsError),
        ("SELECT * FROM t WHERE id = $1", None, SqlParamsError),
        ("SELECT * FROM t WHERE id = :k", ["positional"], SqlParamsError),
        ("SELECT * FROM t WHERE id = :k", {"j": 1}, SqlParamsError),
    ],
)
def test_tenant_and_parameter_errors(analyzer: SqlAnalyzer, sql: str, params: Any, error: type) -> None:
    with pytest.raises(error):
        _request(analyzer, PG, sql, params)


def test_same_tenant_pinned_twice_is_fine(analyzer: SqlAnalyzer) -> None:
    request = _request(analyzer, PG, "UPDATE t SET tenant_id = $1 WHERE tenant_id = 'acme'", ["acme"])
    assert request.tenant == "acme"


# -- cache -----------------------------------------------------------------------------------------------
def test_a_repeated_statement_is_a_cache_hit_and_the_cache_is_bounded() -> None:
    analyzer = SqlAnalyzer(RULES, SqlLimits(), cache_size=2)
    first = analyzer.analyze(MY, "SELECT * FROM orders WHERE id = ?")
    assert analyzer.analyze(MY, "SELECT * FROM orders WHERE id = ?") is first
    assert analyzer.analyze(PG, "SELECT * FROM orders WHERE id = ?") is not first  # keyed by dialect too
    # params are resolved per request, after the lookup
    a = analyzer.request(MY, ["SELECT * FROM t WHERE tenant_id = ?"], [["acme"]])
    b = analyzer.request(MY, ["SELECT * FROM t WHERE tenant_id = ?"], [["globex"]])
    assert (a.tenant, b.tenant) == ("acme", "globex")
    info = analyzer.cache_info()
    assert info.hits >= 2
    assert info.currsize == 2
    assert info.maxsize == 2


def test_errors_are_cached_and_raised_fresh_each_time() -> None:
    analyzer = SqlAnalyzer(RULES, SqlLimits(), cache_size=8)
    for _ in range(3):
        with pytest.raises(SqlSyntaxError) as caught:
            analyzer.analyze(PG, "SELECT FROM WHERE")
        depth = 0
        tb = caught.value.__traceback__
        while tb is not None:
            depth, tb = depth + 1, tb.tb_next
        assert depth <= 3  # the traceback does not grow with every raise
    assert analyzer.cache_info().hits == 2


# -- tenant columns named per table ----------------------------------------------------------------------
TPCC = SqlAnalyzer(
    Rules(
        tenant_columns=("tenant_id", "w_id"),
        table_tenant_columns={
            "district": ("d_w_id",),
            "customer": ("c_w_id",),
            "order_line": ("ol_w_id",),
            "new_order": ("no_w_id",),
        },
    ),
    SqlLimits(),
)
TENANT_CASES: list[tuple[str, str, Any, str | None]] = [
    (PG, "SELECT * FROM warehouse WHERE w_id = 5", None, "5"),  # the default list
    (PG, "SELECT * FROM orders WHERE tenant_id = 'acme'", None, "acme"),
    (PG, "SELECT * FROM district WHERE d_w_id = 5 AND d_id = 3", None, "5"),  # the table's own column
    (PG, "SELECT * FROM district WHERE w_id = 5", None, None),  # not district's tenant column
    (PG, "SELECT * FROM warehouse WHERE d_w_id = 5", None, None),  # not warehouse's
    (
        PG,
        "SELECT c.c_last FROM customer c JOIN district d ON d.d_id = c.c_d_id AND d.d_w_id = c.c_w_id "
        "WHERE c.c_w_id = $1 AND c.c_d_id = $2",
        ["7", 3],
        "7",
    ),
    (PG, "SELECT * FROM customer c JOIN orders o ON o.id = c.c_id WHERE o.c_w_id = 4", None, None),
    (PG, "SELECT * FROM customer JOIN history ON h_c_id = c_id WHERE c_w_id = 9", None, "9"),  # unqualified
    (PG, "SELECT * FROM order_line ol, stock s WHERE ol.ol_w_id = 3 AND s.s_w_id = 4", None, "3"),
    (
        PG,
        "SELECT * FROM customer c "
        "WHERE EXISTS (SELECT 1 FROM oorder o WHERE o.o_c_id = c.c_id AND c.c_w_id = 8)",
        None,
        "8",
    ),  # correlated: `c` is the outer query's customer
    (MY, "INSERT INTO new_order (no_o_id, no_d_id, no_w_id) VALUES (?, ?, ?)", [1, 2, 3], "3"),
    (MY, "INSERT INTO warehouse (w_id, w_name) VALUES (6, 'x')", None, "6"),
    (PG, "UPDATE district SET d_next_o_id = d_next_o_id + 1 WHERE d_w_id = $1 AND d_id = $2", [2, 1], "2"),
    (
        MY,
        "UPDATE customer c JOIN district d ON d.d_id = c.c_d_id SET c.c_balance = 0 WHERE d.d_w_id = 2",
        None,
        "2",
    ),
    (PG, "DELETE FROM new_order WHERE no_w_id = 11 AND no_o_id = 1", None, "11"),
    (PG, "WITH d AS (SELECT * FROM district WHERE d_w_id = 4) SELECT * FROM d WHERE d.w_id = 4", None, "4"),
]


@pytest.mark.parametrize(("dialect", "sql", "params", "tenant"), TENANT_CASES)
def test_the_tenant_column_of_each_table(dialect: str, sql: str, params: Any, tenant: str | None) -> None:
    assert TPCC.request(dialect, [sql], [params]).tenant == tenant


def test_different_pins_through_different_tenant_columns_conflict() -> None:
    with pytest.raises(SqlTenantError) as caught:
        TPCC.request(
            PG,
            ["SELECT * FROM customer c JOIN district d ON true WHERE c.c_w_id = 1 AND d.d_w_id = 2"],
            [None],
        )
    assert caught.value.code == "sql_tenant_conflict"
