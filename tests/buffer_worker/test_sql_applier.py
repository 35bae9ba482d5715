"""The PostgreSQL applier executing mirrored SQL writes: transpiled, with parameters, one transaction per
batch, idempotent through the ledger. Real PostgreSQL (the session's test database) and, for the worker
path, real Redis. Both sides' appliers write into the session's database here (old speaks MySQL, new
PostgreSQL), so that either dialect's statements can be checked in one place."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
import pytest

from buffer_worker.apply_errors import PermanentApplyError
from buffer_worker.intent import Intent
from buffer_worker.producer import RedisIntentProducer
from buffer_worker.runner import build_applier
from buffer_worker.side_appliers import SideAppliers
from buffer_worker.sql_apply import coerce
from config.settings import Settings
from routing.phases import Side
from tests.buffer_worker.conftest import WorkerPool, make_settings, wait_until
from tests.support.redis_keys import REDIS_URL


@dataclass
class Db:
    conn: asyncpg.Connection
    orders: str  # table names unique to the test
    events: str
    items: str

    async def rows(self, sql: str) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in await self.conn.fetch(sql.format(o=self.orders, e=self.events))]


@pytest.fixture
async def db(pg_url: str) -> AsyncIterator[Db]:
    suffix = uuid.uuid4().hex[:8]
    orders, events, items = f"orders_{suffix}", f"events_{suffix}", f"items_{suffix}"
    conn = await asyncpg.connect(pg_url)
    await conn.execute(
        f"CREATE TABLE {orders} (id int PRIMARY KEY, tenant_id text NOT NULL,"
        " total numeric NOT NULL DEFAULT 0, n int NOT NULL DEFAULT 0, note text, at timestamptz, doc jsonb);"
        f"CREATE TABLE {events} (id int PRIMARY KEY, order_id int NOT NULL REFERENCES {orders} (id));"
        f"CREATE TABLE {items} (tenant_id text, id text, doc jsonb, PRIMARY KEY (tenant_id, id))"
    )
    try:
        yield Db(conn, orders, events, items)
    finally:
        await conn.execute(f"DROP TABLE {events}; DROP TABLE {orders}; DROP TABLE {items}")
        await conn.close()


def settings_for(pg_url: str, db: Db, prefix: str = "unused") -> Settings:
    return make_settings(
        prefix,
        "http://127.0.0.1:1",
        "http://127.0.0.1:2",
        backends={
            "old": {"url": "http://127.0.0.1:1", "sql_dialect": "mysql"},
            "new": {"url": "http://127.0.0.1:2", "sql_dialect": "postgres"},
        },
        sql={"endpoints": [{"path": "/query"}], "primary_keys": {db.orders: ["id"]}},
        worker={
            "applier": "postgres",
            "postgres": {
                side: {"url": pg_url, "resources": [{"path": "/items/{key}", "table": db.items}]}
                for side in ("old", "new")
            }
            | {"state_transfer": False},  # one database for both sides: nothing to read state from
        },
    )


def appliers(settings: Settings) -> SideAppliers:
    built = build_applier(settings)
    assert isinstance(built, SideAppliers)
    return built


@pytest.fixture
async def applier(pg_url: str, db: Db) -> AsyncIterator[SideAppliers]:
    instance = appliers(settings_for(pg_url, db))
    await instance.start()
    yield instance
    await instance.close()


def sql_intent(sql: Any, params: Any = None, *, target: Side = Side.NEW, tenant: str = "acme") -> Intent:
    body: dict[str, Any] = {"sql": sql}
    if params is not None:
        body["params"] = params
    return Intent(
        tenant=tenant,
        target=target,
        method="POST",
        path="/query",
        query="",
        headers=(("content-type", "application/json"),),
        body=orjson.dumps(body),
        status=200,
        response_body=b'{"rows": []}',
    )


async def test_postgres_statements_run_with_their_parameters(applier: SideAppliers, db: Db) -> None:
    o = db.orders
    await applier.apply_batch(
        [
            sql_intent(f"INSERT INTO {o} (id, tenant_id, total) VALUES ($1, $2, $3)", [1, "acme", 5]),
            sql_intent(
                f"INSERT INTO {o} (id, tenant_id, total) VALUES ($1, $2, $3) "
                "ON CONFLICT (id) DO UPDATE SET total = EXCLUDED.total",
                [1, "acme", 7],
            ),
            sql_intent(f"UPDATE {o} SET n = n + 1 WHERE tenant_id = $2 AND id = $1", [1, "acme"]),
            sql_intent(
                f"INSERT INTO {o} (id, tenant_id) VALUES (2, 'acme'); DELETE FROM {o} WHERE id = $1", [2]
            ),
        ]
    )
    assert await db.rows("SELECT id, tenant_id, total, n FROM {o} ORDER BY id") == [(1, "acme", 7, 1)]


async def test_rest_and_sql_intents_share_one_batch(applier: SideAppliers, db: Db) -> None:
    rest = Intent(
        tenant="acme",
        target=Side.NEW,
        method="PUT",
        path="/items/k1",
        query="",
        headers=(("content-type", "application/json"),),
        body=b'{"v": 1}',
        status=200,
        response_body=b"{}",
    )
    await applier.apply_batch(
        [rest, sql_intent(f"INSERT INTO {db.orders} (id, tenant_id) VALUES ($1, $2)", [50, "acme"])]
    )
    assert await db.rows(f"SELECT tenant_id, id, doc FROM {db.items}") == [
        ("acme", "k1", '{"v": 1, "id": "k1"}')
    ]
    assert await db.rows("SELECT id FROM {o}") == [(50,)]


async def test_mysql_writes_toward_a_postgres_mirror_are_transpiled(applier: SideAppliers, db: Db) -> None:
    o = db.orders
    upsert = (
        f"INSERT INTO {o} (id, tenant_id, total) VALUES (?, ?, ?) "
        "ON DUPLICATE KEY UPDATE total = total + VALUES(total)"
    )
    await applier.apply_batch(
        [
            sql_intent(upsert, [3, "acme", 2], target=Side.OLD),
            sql_intent(upsert, [3, "acme", 5], target=Side.OLD),
            sql_intent(
                f"INSERT IGNORE INTO {o} (id, tenant_id, total) VALUES (3, 'acme', 100)", target=Side.OLD
            ),
            sql_intent(f"UPDATE `{o}` SET note = %s WHERE id = %s", ["seen", 3], target=Side.OLD),
        ]
    )
    assert await db.rows("SELECT id, total, note FROM {o}") == [(3, 7, "seen")]


async def test_transaction_control_is_honoured_inside_the_batch(applier: SideAppliers, db: Db) -> None:
    o = db.orders
    await applier.apply_batch(
        [
            sql_intent(
                f"BEGIN; INSERT INTO {o} (id, tenant_id) VALUES (10, 'acme'); COMMIT;"
                f"BEGIN; INSERT INTO {o} (id, tenant_id) VALUES (11, 'acme'); ROLLBACK;"
                f"SET search_path = public; INSERT INTO {o} (id, tenant_id) VALUES (12, 'acme')"
            ),
            sql_intent(
                [f"INSERT INTO {o} (id, tenant_id) VALUES ($1, $2)", f"UPDATE {o} SET n = $1 WHERE id = $2"],
                [[13, "acme"], [4, 13]],
            ),
        ]
    )
    assert await db.rows("SELECT id, n FROM {o} ORDER BY id") == [(10, 0), (12, 0), (13, 4)]


async def test_json_parameters_are_converted_to_the_columns_types(applier: SideAppliers, db: Db) -> None:
    o = db.orders
    await applier.apply_batch(
        [
            sql_intent(
                f"INSERT INTO {o} (id, tenant_id, total, note, at, doc) VALUES ($1, $2, $3, $4, $5, $6)",
                ["20", 42, "12.50", 7, "2024-05-06T07:08:09Z", {"k": [1, 2]}],
            )
        ]
    )
    row = (await db.rows("SELECT id, tenant_id, total, note, at, doc FROM {o}"))[0]
    at = datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.UTC)
    assert row[:5] == (20, "42", 12.5, "7", at)
    assert orjson.loads(row[5]) == {"k": [1, 2]}


def test_coerce_leaves_what_does_not_convert_for_postgres_to_name() -> None:
    assert coerce(("x", "5", None, True), ["int4", "int8", "int4", "text"]) == ("x", 5, None, "true")


async def test_a_redelivered_batch_changes_nothing(applier: SideAppliers, db: Db) -> None:
    o = db.orders
    batch = [
        sql_intent(f"INSERT INTO {o} (id, tenant_id) VALUES (30, 'acme')"),
        sql_intent(f"UPDATE {o} SET n = n + 1 WHERE id = 30"),
    ]
    await applier.apply_batch(batch)
    await applier.apply_batch(batch)
    await applier.apply_batch(batch[1:])
    assert await db.rows("SELECT id, n FROM {o}") == [(30, 1)]


async def test_a_failing_statement_applies_nothing_of_its_batch(applier: SideAppliers, db: Db) -> None:
    o, e = db.orders, db.events
    batch = [
        sql_intent(f"INSERT INTO {o} (id, tenant_id) VALUES (40, 'acme')"),
        sql_intent(f"INSERT INTO {e} (id, order_id) VALUES (1, 999)"),  # foreign key violation
    ]
    with pytest.raises(PermanentApplyError) as caught:
        await applier.apply_batch(batch)
    assert "23503" in str(caught.value)
    assert await db.rows("SELECT id FROM {o}") == []
    await applier.apply_batch(batch[:1])  # the ledger rolled back too: the first intent is still fresh
    assert await db.rows("SELECT id FROM {o}") == [(40,)]


@pytest.mark.parametrize(
    ("sql", "target", "reason"),
    [
        ("REPLACE INTO t (id) VALUES (1)", Side.OLD, "REPLACE"),
        ("SELECT FROM WHERE", Side.NEW, "Expected"),
        ("UPDATE t SET a = $1", Side.NEW, "parameters"),  # no params sent
        (42, Side.NEW, "must hold the SQL text"),
    ],
)
async def test_an_intent_that_cannot_be_executed_is_permanent(
    applier: SideAppliers, sql: Any, target: Side, reason: str
) -> None:
    with pytest.raises(PermanentApplyError) as caught:
        await applier.apply_batch([sql_intent(sql, target=target)])
    assert reason in str(caught.value)


async def test_the_worker_drains_sql_intents_into_postgres(
    pg_url: str, db: Db, prefix: str, workers: WorkerPool
) -> None:
    settings = settings_for(pg_url, db, prefix)
    applier = appliers(settings)
    producer = RedisIntentProducer.from_url(REDIS_URL, prefix=prefix, partitions=settings.buffer.partitions)
    o = db.orders
    try:
        for i in range(50):
            await producer.append(
                sql_intent(
                    f"INSERT INTO {o} (id, tenant_id, n) VALUES (?, ?, 1) ON DUPLICATE KEY UPDATE n = n + 1",
                    [i % 10, f"tenant-{i % 3}"],
                    target=Side.OLD,
                    tenant=f"tenant-{i % 3}",
                )
            )
        running = workers.start(settings, applier=applier)

        async def drained() -> bool:
            return bool((await db.rows("SELECT sum(n) FROM {o}"))[0][0] == 50)

        await wait_until(drained, alive=[running])
        assert await db.rows("SELECT count(*) FROM {o}") == [(10,)]
    finally:
        await producer.close()
