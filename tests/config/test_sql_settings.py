"""Settings of SQL-aware routing: defaults, the backends' dialects, and the keys that fail at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.loader import ConfigError, load_settings
from config.settings import Settings

BASE = """\
backends:
  old:
    url: http://old.internal:9000
    {old}
  new:
    url: https://new.internal
    {new}
{sql}
"""
ENDPOINTS = "sql:\n  endpoints:\n    - {path: /query}\n"


def _load(
    tmp_path: Path, *, old: str = "", new: str = "", sql: str = "", environ: dict[str, str] | None = None
) -> Settings:
    path = tmp_path / "cutover.yaml"
    path.write_text(BASE.format(old=old, new=new, sql=sql))
    return load_settings(path, environ=environ or {})


def test_defaults_route_nothing_as_sql(tmp_path: Path) -> None:
    settings = _load(tmp_path)
    assert settings.sql.endpoints == []
    assert settings.sql.covered_tables == []
    assert settings.backends.old.sql_dialect is None
    assert settings.backends.new.sql_dialect is None
    assert (settings.sql.tenant_column, settings.sql.max_text_chars, settings.sql.max_statements) == (
        "tenant_id",
        65_536,
        32,
    )


def test_a_full_sql_section(tmp_path: Path) -> None:
    settings = _load(
        tmp_path,
        old="sql_dialect: mysql",
        new="sql_dialect: postgres",
        sql=(
            "sql:\n"
            "  endpoints:\n"
            "    - {path: /query, method: post, sql_field: q, params_field: args}\n"
            "  covered_tables: [Orders, shop.Customers]\n"
            "  primary_keys: {Order_Lines: [Order_Id, line]}\n"
            "  max_text_chars: 1000\n"
            "  max_statements: 3\n"
        ),
    )
    endpoint = settings.sql.endpoints[0]
    assert (endpoint.path, endpoint.method, endpoint.sql_field, endpoint.params_field) == (
        "/query",
        "POST",
        "q",
        "args",
    )
    assert settings.sql.covered_tables == ["orders", "shop.customers"]
    assert settings.sql.primary_keys == {"order_lines": ["order_id", "line"]}
    assert (settings.backends.old.sql_dialect, settings.backends.new.sql_dialect) == ("mysql", "postgres")


def test_dialects_from_the_environment(tmp_path: Path) -> None:
    settings = _load(
        tmp_path,
        sql=ENDPOINTS,
        environ={
            "CUTOVER_BACKENDS__OLD__SQL_DIALECT": "postgres",
            "CUTOVER_BACKENDS__NEW__SQL_DIALECT": "mysql",
        },
    )
    assert (settings.backends.old.sql_dialect, settings.backends.new.sql_dialect) == ("postgres", "mysql")


def test_endpoints_need_both_dialects(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, old="sql_dialect: mysql", sql=ENDPOINTS)
    assert any("backends.new.sql_dialect must be set" in problem for problem in caught.value.problems)
    assert not any("backends.old.sql_dialect" in problem for problem in caught.value.problems)


@pytest.mark.parametrize(
    ("old", "sql", "key"),
    [
        ("sql_dialect: oracle", "", "backends.old.sql_dialect"),
        ("", "sql:\n  endpoints: [{path: query}]\n", "sql.endpoints.0.path"),
        ("", "sql:\n  covered_tables: ['orders; drop']\n", "sql.covered_tables.0"),
        ("", "sql:\n  max_statements: 0\n", "sql.max_statements"),
        ("", "sql:\n  tenant_colum: t\n", "sql.tenant_colum"),
    ],
)
def test_bad_keys_are_named(tmp_path: Path, old: str, sql: str, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, old=old, sql=sql)
    assert any(problem.startswith(key + ":") for problem in caught.value.problems), caught.value.problems


def test_tenant_columns_as_one_name_a_list_or_per_table(tmp_path: Path) -> None:
    settings = _load(
        tmp_path,
        sql=(
            "sql:\n"
            "  tenant_column: [tenant_id, W_ID]\n"
            "  tenant_columns: {District: d_w_id, order_line: [ol_w_id, ol_supply_w_id]}\n"
        ),
    )
    rules = settings.sql.analyzer().rules
    assert rules.tenant_columns == ("tenant_id", "w_id")
    assert rules.table_tenant_columns == {
        "district": ("d_w_id",),
        "order_line": ("ol_w_id", "ol_supply_w_id"),
    }
    assert _load(tmp_path, sql="sql:\n  tenant_column: account\n").sql.analyzer().rules.tenant_columns == (
        "account",
    )


@pytest.mark.parametrize(
    ("sql", "key"),
    [
        ("sql:\n  tenant_column: []\n", "sql.tenant_column"),
        ("sql:\n  tenant_column: ['w id']\n", "sql.tenant_column"),
        ("sql:\n  tenant_columns: {district: 'd-w-id'}\n", "sql.tenant_columns.district"),
    ],
)
def test_bad_tenant_columns_are_named(tmp_path: Path, sql: str, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, sql=sql)
    assert any(problem.startswith(key) for problem in caught.value.problems), caught.value.problems
