"""Fixtures for backfill and verification: an old-side and a new-side database per session (dropped at
the end), the session's control-plane database with the phase tables, and table builders."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml

from backfill import checkpoint
from config.settings import Settings
from proxy.control.schema import ensure_schema
from routing.phases import Phase
from tests.support.postgres import SessionDatabases

PG_BASE = "postgresql://postgres@127.0.0.1:5432/"


@dataclass(frozen=True)
class DataEnv:
    old_url: str
    new_url: str
    control_url: str

    def raw_settings(self, tables: list[dict[str, Any]], **data: Any) -> dict[str, Any]:
        return {
            "backends": {"old": {"url": "http://127.0.0.1:9"}, "new": {"url": "http://127.0.0.1:9"}},
            "postgres_url": self.control_url,
            "data": {
                "old": {"postgres_url": self.old_url},
                "new": {"postgres_url": self.new_url},
                "tables": tables,
                **data,
            },
        }

    def settings(self, tables: list[dict[str, Any]], **data: Any) -> Settings:
        return Settings.model_validate(self.raw_settings(tables, **data))

    def config_file(self, directory: Path, tables: list[dict[str, Any]], **data: Any) -> Path:
        path = directory / f"cutover-{uuid.uuid4().hex[:8]}.yaml"
        path.write_text(yaml.safe_dump(self.raw_settings(tables, **data)))
        return path

    async def old(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.old_url)

    async def new(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.new_url)

    async def execute(self, url: str, sql: str, *args: Any) -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(sql, *args)
        finally:
            await conn.close()

    async def set_phase(self, tenant: str, phase: Phase) -> None:
        """Straight into the phase table (what the admin API would have written)."""
        await self.execute(
            self.control_url,
            "INSERT INTO cutover_tenant_phase (tenant, phase, version, updated_by)"
            " VALUES ($1, $2, 1, 'tests')"
            " ON CONFLICT (tenant) DO UPDATE SET phase = $2, version = cutover_tenant_phase.version + 1,"
            " updated_at = now()",
            tenant,
            phase.value,
        )


@pytest.fixture(scope="session")
async def data_env(pg_url: str, session_databases: SessionDatabases) -> DataEnv:
    old = await session_databases.create("cutover_data")
    new = await session_databases.create("cutover_data")
    conn = await asyncpg.connect(pg_url)
    try:
        await ensure_schema(conn)
    finally:
        await conn.close()
    conn = await asyncpg.connect(PG_BASE + new)
    try:
        await checkpoint.ensure_schema(conn)
    finally:
        await conn.close()
    return DataEnv(PG_BASE + old, PG_BASE + new, pg_url)


ORDERS_OLD = """
CREATE TABLE {name} (
    account   text NOT NULL,
    order_no  bigint NOT NULL,
    customer  text NOT NULL,
    qty       integer NOT NULL,
    price     numeric(12,2),
    note      text,
    created   timestamptz NOT NULL,
    PRIMARY KEY (account, order_no)
)"""
ORDERS_NEW = """
CREATE TABLE {name} (
    tenant_id  text NOT NULL,
    id         bigint NOT NULL,
    customer   text NOT NULL,
    quantity   integer NOT NULL,
    price      numeric(12,2),
    note       text,
    created    timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id)
)"""
# About 200 bytes a row.
ORDERS_FILL = """
INSERT INTO {name} SELECT $1, g, 'customer-' || (g % 997), g % 50, (g % 100000) / 100.0,
       repeat(md5(g::text), 4), timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second'
FROM generate_series(1, $2::int) AS g"""


def orders_table(name: str, old_name: str, new_name: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "old": {"table": old_name, "tenant_column": "account"},
        "new": {"table": new_name},
        "key": ["id"],
        "columns": {"id": "order_no", "quantity": "qty"},
        **extra,
    }


async def create_orders(env: DataEnv, old_name: str, new_names: list[str]) -> None:
    await env.execute(env.old_url, ORDERS_OLD.format(name=old_name))
    for name in new_names:
        await env.execute(env.new_url, ORDERS_NEW.format(name=name))


async def fill_orders(env: DataEnv, old_name: str, tenant: str, rows: int) -> None:
    await env.execute(env.old_url, ORDERS_FILL.format(name=old_name), tenant, rows)
    await env.execute(env.old_url, f"ANALYZE {old_name}")


async def table_digest(url: str, table: str, tenant_column: str, tenant: str, key: str) -> tuple[int, str]:
    """Row count and md5 over every row of `tenant` in key order, tenant column left out."""
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow(
            f"SELECT count(*) AS n, md5(string_agg((to_jsonb(t) - '{tenant_column}')::text, '|'"
            f" ORDER BY {key})) AS digest FROM {table} t WHERE {tenant_column} = $1",
            tenant,
        )
        assert row is not None
        return int(row["n"]), str(row["digest"])
    finally:
        await conn.close()


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def prefix(redis_prefix: str) -> str:
    """The test's own Redis key prefix (tests/conftest.py deletes its keys afterwards)."""
    return redis_prefix
