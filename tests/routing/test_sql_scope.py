"""Scope by table: every phase × statement shape → plan or refusal, written out by hand from the table in
`routing/sql_scope.py`'s docstring."""

from __future__ import annotations

import pytest

from routing.decide import Plan
from routing.phases import Phase, Side
from routing.sql import SqlAnalyzer, SqlLimits
from routing.sql_classify import Rules
from routing.sql_errors import SqlRefusedError
from routing.sql_scope import needs_new, route_sql

ANALYZER = SqlAnalyzer(Rules(), SqlLimits())
COVERED = frozenset({"orders", "customers"})
OLD, NEW = Side.OLD, Side.NEW
L, D, S, LI, R, C = Phase.LEGACY, Phase.DUAL_WRITE, Phase.SHADOW, Phase.LIVE, Phase.RAMPDOWN, Phase.COMPLETE

SHAPES = {
    "covered read": "SELECT * FROM orders o JOIN customers c ON c.id = o.customer_id",
    "covered write": "UPDATE orders SET total = 1 WHERE id = 2",
    "covered locking read": "SELECT * FROM orders WHERE id = 2 FOR UPDATE",
    "uncovered read": "SELECT * FROM audit_log",
    "uncovered write": "INSERT INTO audit_log (id) VALUES (1)",
    "no table": "SELECT 1",
    "mixed read": "SELECT * FROM orders o JOIN audit_log a ON a.order_id = o.id",
    "mixed write": "INSERT INTO audit_log SELECT id FROM orders",
    "covered ddl": "ALTER TABLE orders ADD COLUMN note text",
    "uncovered ddl": "CREATE TABLE scratch (id int)",
    "opaque ddl": "VACUUM",
}
# Expected: (serving, shadow, fallback, mirror) or the refusal code.
Expected = tuple[Side, Side | None, Side | None, Side | None] | str
OLD_ONLY: Expected = (OLD, None, None, None)
TABLE: dict[str, dict[Phase, Expected]] = {
    "covered read": {
        L: OLD_ONLY,
        D: OLD_ONLY,
        S: (OLD, NEW, None, None),
        LI: (NEW, OLD, OLD, None),
        R: (NEW, None, OLD, None),
        C: (NEW, None, None, None),
    },
    "covered write": {
        L: OLD_ONLY,
        D: (OLD, None, None, NEW),
        S: (OLD, None, None, NEW),
        LI: (NEW, None, None, OLD),
        R: (NEW, None, None, OLD),
        C: (NEW, None, None, None),
    },
    "covered locking read": {
        L: OLD_ONLY,
        D: OLD_ONLY,
        S: OLD_ONLY,
        LI: (NEW, None, None, None),
        R: (NEW, None, None, None),
        C: (NEW, None, None, None),
    },
    "uncovered read": dict.fromkeys(Phase, OLD_ONLY),
    "uncovered write": dict.fromkeys(Phase, OLD_ONLY),
    "no table": dict.fromkeys(Phase, OLD_ONLY),
    "mixed read": {
        L: OLD_ONLY,
        D: OLD_ONLY,
        S: OLD_ONLY,
        LI: "sql_mixed_tables",
        R: "sql_mixed_tables",
        C: "sql_mixed_tables",
    },
    "mixed write": {L: OLD_ONLY, **dict.fromkeys((D, S, LI, R, C), "sql_mixed_tables")},
    "covered ddl": {
        L: OLD_ONLY,
        C: (NEW, None, None, None),
        **dict.fromkeys((D, S, LI, R), "sql_ddl_refused"),
    },
    "uncovered ddl": dict.fromkeys(Phase, OLD_ONLY),
    "opaque ddl": {
        L: OLD_ONLY,
        C: (NEW, None, None, None),
        **dict.fromkeys((D, S, LI, R), "sql_ddl_refused"),
    },
}


def test_the_table_covers_every_cell() -> None:
    assert set(TABLE) == set(SHAPES)
    assert all(set(row) == set(Phase) for row in TABLE.values())


@pytest.mark.parametrize(("shape", "phase"), [(shape, phase) for shape in SHAPES for phase in Phase])
def test_scope(shape: str, phase: Phase) -> None:
    request = ANALYZER.request("postgres", [SHAPES[shape]], [None])
    expected = TABLE[shape][phase]
    if isinstance(expected, str):
        with pytest.raises(SqlRefusedError) as caught:
            route_sql(phase, request, COVERED)
        assert caught.value.code == expected
        return
    plan = route_sql(phase, request, COVERED)
    assert isinstance(plan, Plan)
    assert plan.phase is phase
    assert (plan.serving, plan.shadow, plan.fallback, plan.mirror) == expected
    assert needs_new(plan) == (NEW in expected)


def test_a_mixed_write_names_both_kinds_of_table() -> None:
    request = ANALYZER.request("postgres", [SHAPES["mixed write"]], [None])
    with pytest.raises(SqlRefusedError) as caught:
        route_sql(Phase.SHADOW, request, COVERED)
    assert caught.value.fields["covered"] == ["orders"]
    assert caught.value.fields["uncovered"] == ["audit_log"]
    assert "orders" in caught.value.detail
    assert "audit_log" in caught.value.detail


# -- locking reads: writes without a mirror --------------------------------------------------------------
LOCKING = [
    ("postgres", "SELECT * FROM orders WHERE id = 2 FOR UPDATE"),
    ("postgres", "SELECT * FROM orders WHERE id = 2 FOR SHARE"),
    ("postgres", "SELECT * FROM orders WHERE id = 2 FOR NO KEY UPDATE"),
    ("postgres", "SELECT * FROM orders WHERE id = 2 FOR KEY SHARE"),
    ("postgres", "SELECT * FROM orders o WHERE o.total > 1 FOR UPDATE OF o SKIP LOCKED"),
    (
        "postgres",
        "WITH x AS (SELECT * FROM orders FOR UPDATE) SELECT * FROM x JOIN customers c ON c.id = x.id",
    ),
    ("postgres", "SELECT nextval('orders_id_seq') FROM orders LIMIT 1"),
    ("mysql", "SELECT * FROM orders WHERE id = 2 LOCK IN SHARE MODE"),
    ("mysql", "SELECT * FROM orders WHERE id = 2 FOR UPDATE NOWAIT"),
    ("mysql", "SELECT * FROM orders WHERE id = 2 FOR SHARE"),
]
# The side that takes writes serves them; never a shadow, a fallback or a mirror.
LOCKING_SERVED = {L: OLD, D: OLD, S: OLD, LI: NEW, R: NEW, C: NEW}


@pytest.mark.parametrize(("dialect", "sql"), LOCKING)
@pytest.mark.parametrize("phase", list(Phase), ids=[p.value for p in Phase])
def test_locking_reads_are_served_by_the_side_that_takes_writes(dialect: str, sql: str, phase: Phase) -> None:
    request = ANALYZER.request(dialect, [sql], [None])
    assert (request.kind.value, request.mutates) == ("write", False)
    plan = route_sql(phase, request, COVERED)
    assert (plan.serving, plan.shadow, plan.fallback, plan.mirror) == (
        LOCKING_SERVED[phase],
        None,
        None,
        None,
    )
    assert plan.serving is phase.authoritative


MIXED_LOCKING: dict[Phase, Expected] = {
    L: OLD_ONLY,
    D: OLD_ONLY,
    S: OLD_ONLY,
    LI: "sql_mixed_tables",
    R: "sql_mixed_tables",
    C: "sql_mixed_tables",
}


@pytest.mark.parametrize("phase", list(Phase), ids=[p.value for p in Phase])
def test_a_locking_read_of_covered_and_uncovered_tables_is_served_by_old_while_old_takes_writes(
    phase: Phase,
) -> None:
    request = ANALYZER.request(
        "postgres", ["SELECT * FROM orders o JOIN audit_log a ON a.order_id = o.id FOR UPDATE"], [None]
    )
    expected = MIXED_LOCKING[phase]
    if isinstance(expected, str):
        with pytest.raises(SqlRefusedError) as caught:
            route_sql(phase, request, COVERED)
        assert caught.value.code == expected
        assert "no side holds both current" in caught.value.detail
        return
    plan = route_sql(phase, request, COVERED)
    assert (plan.serving, plan.shadow, plan.fallback, plan.mirror) == expected
