"""The `data` settings: what a valid table mapping looks like and what is refused, by key."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from config.data import DataSettings, RestResource, path_key_pattern
from config.loader import ConfigError, load_settings

SIDES = {"old": {"postgres_url": "postgresql://o@h/old"}, "new": {"postgres_url": "postgresql://n@h/new"}}
TABLE = {"name": "items", "old": {"table": "legacy.items"}, "new": {"table": "items"}}


def data(**overrides: Any) -> DataSettings:
    return DataSettings.model_validate({**SIDES, "tables": [TABLE], **overrides})


def test_defaults_and_column_mapping() -> None:
    settings = data(tables=[{**TABLE, "columns": {"title": "name"}, "key": ["id"]}])
    table = settings.table("items")
    assert settings.chunk_rows == 10_000
    assert table.old.tenant_column == table.new.tenant_column == "tenant_id"
    assert table.old_column("title") == "name"
    assert table.old_column("id") == "id"
    assert settings.covered == ["items"]
    assert settings.gate.require_verify
    assert settings.gate.since_last_phase_change


def test_settings_without_data_have_nothing_covered() -> None:
    assert DataSettings().covered == []


@pytest.mark.parametrize(
    ("overrides", "where"),
    [
        ({"chunk_rows": 999}, "chunk_rows"),
        ({"chunk_rows": 50_001}, "chunk_rows"),
        ({"old": None}, "both"),
        ({"old": {"postgres_url": "mysql://h/db"}}, "postgres_url"),
        ({"tables": [{**TABLE, "old": {"table": "items; drop table x"}}]}, "table"),
        ({"tables": [{**TABLE, "key": []}]}, "key"),
        ({"tables": [{**TABLE, "key": ["a", "a"]}]}, "distinct"),
        ({"tables": [{**TABLE, "exclude_columns": ["id"]}]}, "excluded"),
        ({"tables": [{**TABLE, "transform": {"function": "nodots", "version": "1"}}]}, "function"),
        ({"tables": [{**TABLE, "transform": {"function": "a.b", "version": ""}}]}, "version"),
        ({"tables": [{**TABLE, "key": ["a", "b"], "path": "/x/{key}"}]}, "single-column"),
        ({"tables": [TABLE, TABLE]}, "unique"),
        ({"tables": [TABLE], "rest": {"resources": [{"name": "items", "list_path": "/items"}]}}, "unique"),
    ],
)
def test_refused(overrides: dict[str, Any], where: str) -> None:
    with pytest.raises(ValidationError, match=where):
        data(**overrides)


def test_tables_need_both_databases() -> None:
    with pytest.raises(ValidationError, match="tables need"):
        DataSettings.model_validate({"tables": [TABLE]})


def test_rest_only_configuration() -> None:
    settings = DataSettings.model_validate({"rest": {"resources": [{"name": "api", "list_path": "/items"}]}})
    assert settings.covered == ["api"]


def test_a_rest_resource_record_path_is_its_item_path_else_under_the_list() -> None:
    plain = RestResource(name="api", list_path="/items/")
    assert plain.item_path is None
    assert plain.record_path == "/items/{key}"
    assert (
        RestResource(name="api", list_path="/items", item_path="/item/{key}/v2").record_path
        == "/item/{key}/v2"
    )
    for bad in ("/items/{id}", "items/{key}", "/a/{key}/{key}"):
        with pytest.raises(ValidationError, match="item_path"):
            RestResource(name="api", list_path="/items", item_path=bad)


def test_unknown_table_names_the_configured_ones() -> None:
    with pytest.raises(KeyError, match="configured: items"):
        data().table("orders")


def test_loaded_from_yaml_and_environment(tmp_path: Any) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "backends: {old: {url: 'http://o'}, new: {url: 'http://n'}}\n"
        "data:\n  old: {postgres_url: 'postgresql://h/old'}\n  new: {postgres_url: 'postgresql://h/new'}\n"
        "  tables: [{name: items, old: {table: items}, new: {table: items}}]\n"
    )
    settings = load_settings(path, environ={"CUTOVER_DATA__CHUNK_ROWS": "2000"})
    assert settings.data.chunk_rows == 2000
    with pytest.raises(ConfigError, match="data.chunk_rows"):
        load_settings(path, environ={"CUTOVER_DATA__CHUNK_ROWS": "5"})


def test_path_key_pattern() -> None:
    match = path_key_pattern("/items/{key}").match("/items/abc")
    assert match is not None
    assert match.group("key") == "abc"
    assert path_key_pattern("/items/{key}").match("/items/a/b") is None
