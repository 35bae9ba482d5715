"""A mirrored SQL write that calls now(), UUID(), random() lands the same values on both sides.

Both sides are real PostgreSQL schemas of the test database. The authoritative side is a SQL data API
that executes the body it receives; the mirror is written by the worker's PostgreSQL applier from the
intent the proxy buffered (its SQL in the mirror's dialect, transpiled to PostgreSQL by the applier).
Two set-ups cover both directions: old speaks PostgreSQL and new MySQL (dual_write: old executes, the
intent carries MySQL), and old speaks MySQL and new PostgreSQL (live: new executes, the intent carries
the client's MySQL).
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from buffer_worker.pg_applier import PostgresApplier
from buffer_worker.sql_apply import SqlIntents
from config.settings import Settings
from routing.phases import Phase, Side
from tests.support.asgi import Receive, Scope, Send, read_body
from tests.support.demo_backends import DemoBackend
from tests.support.proxies import MemorySink, Proxy, ProxyBuilder, Tokens
from tests.support.servers import RunningServer, backend_config, start_server

TABLE = (
    "CREATE TABLE events (id text PRIMARY KEY, tenant_id text NOT NULL, at timestamptz, at_local timestamp,"
    " day date, token uuid, token_text text, r double precision, n int NOT NULL DEFAULT 0)"
)


@dataclass
class PostgresSqlApi:
    """A SQL data API over one PostgreSQL schema: runs `{"sql", "params"}` ($n parameters), in UTC."""

    pool: asyncpg.Pool

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        document = orjson.loads(await read_body(receive))
        try:
            result = await self.pool.execute(document["sql"], *document.get("params", []))
            status, payload = 200, orjson.dumps({"status": result})
        except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            status, payload = 500, orjson.dumps({"error": str(exc)})
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


@dataclass
class Side2:
    """One direction: a proxy, the authoritative side's API, the applier writing the mirror."""

    proxy: Proxy
    sink: MemorySink
    applier: PostgresApplier
    authoritative: str  # schema
    mirror: str  # schema


@dataclass
class Env:
    conn: asyncpg.Connection
    setups: dict[str, Side2]

    async def row(self, schema: str, key: str) -> tuple[Any, ...]:
        found = await self.conn.fetchrow(
            f"SELECT at, at_local, day, token, token_text, r FROM {schema}.events WHERE id = $1", key
        )
        assert found is not None, f"no row {key!r} in {schema}"
        return tuple(found)


@pytest.fixture(scope="module")
async def env(
    demo_backends: dict[Side, DemoBackend],
    pg_url: str,
    module_redis_prefix: str,
    tokens: Tokens,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Env]:
    suffix = uuid.uuid4().hex[:8]
    schemas = {name: f"pin_{name}_{suffix}" for name in ("a_old", "a_new", "b_old", "b_new")}
    conn = await asyncpg.connect(pg_url)
    for schema in schemas.values():
        await conn.execute(f"CREATE SCHEMA {schema}; SET search_path = {schema}; {TABLE}")
    pools = {
        name: await asyncpg.create_pool(
            pg_url, min_size=1, max_size=2, server_settings={"search_path": schema, "TimeZone": "UTC"}
        )
        for name, schema in schemas.items()
    }
    servers: list[RunningServer] = []
    builder = ProxyBuilder(
        demo_backends, pg_url, module_redis_prefix, tokens, Path(tmp_path_factory.mktemp("pin"))
    )
    appliers: list[PostgresApplier] = []
    setups: dict[str, Side2] = {}
    try:
        # a: old speaks PostgreSQL (authoritative in dual_write), new MySQL (the applier writes it).
        # b: old speaks MySQL (the applier writes it in live), new PostgreSQL (authoritative in live).
        for name, dialects, api, mirror in (
            ("a", ("postgres", "mysql"), "a_old", "a_new"),
            ("b", ("mysql", "postgres"), "b_new", "b_old"),
        ):
            server = await start_server(backend_config(PostgresSqlApi(pools[api])))
            servers.append(server)
            mirror_side = Side.NEW if name == "a" else Side.OLD  # the side the applier writes
            old_url = server.url if name == "a" else "http://127.0.0.1:1"
            new_url = server.url if name == "b" else "http://127.0.0.1:1"
            config: dict[str, Any] = {
                "backends": {
                    "old": {"url": old_url, "sql_dialect": dialects[0]},
                    "new": {"url": new_url, "sql_dialect": dialects[1]},
                },
                "sql": {"endpoints": [{"path": "/query"}], "covered_tables": ["events"]},
            }
            sink = MemorySink()
            proxy = await builder.start(config, sink=sink)
            worker = Settings.model_validate(
                {
                    **config,
                    "worker": {
                        "applier": "postgres",
                        "postgres": {
                            mirror_side.value: {
                                "url": f"{pg_url}?search_path={schemas[mirror]}&TimeZone=UTC",
                                # SQL intents need no resource; the setting wants one (REST writes).
                                "resources": [{"path": "/items/{key}", "table": "items_unused"}],
                            }
                        },
                    },
                }
            )
            assert worker.worker.postgres is not None
            applier = PostgresApplier(worker.worker.postgres, mirror_side, sql=SqlIntents(worker))
            await applier.start()
            appliers.append(applier)
            setups[name] = Side2(proxy, sink, applier, schemas[api], schemas[mirror])
        yield Env(conn, setups)
    finally:
        for applier in appliers:
            await applier.close()
        await builder.close()
        for server in servers:
            await server.stop()
        for pool in pools.values():
            await pool.close()
        await conn.execute("".join(f"DROP SCHEMA {schema} CASCADE;" for schema in schemas.values()))
        await conn.close()


async def _write(setup: Side2, tenant: str, sql: str, params: list[Any]) -> None:
    setup.sink.intents.clear()
    response = await setup.proxy.client.post(
        "/query", json={"sql": sql, "params": params}, headers={"X-Tenant-ID": tenant}
    )
    assert response.status_code == 200, response.text
    (intent,) = setup.sink.intents
    await setup.applier.apply_batch([intent])


def _recent(at: datetime.datetime) -> None:
    now = datetime.datetime.now(datetime.UTC)
    assert now - datetime.timedelta(minutes=5) < at.replace(tzinfo=datetime.UTC) <= now


async def test_a_postgres_write_pinned_in_dual_write_lands_the_same_values_on_new(
    env: Env, tenant: str
) -> None:
    setup = env.setups["a"]
    await setup.proxy.set_phase_direct(tenant, Phase.DUAL_WRITE)
    key = f"{tenant}-1"
    await _write(
        setup,
        tenant,
        "INSERT INTO events (id, tenant_id, at, at_local, day, token, r) "
        "VALUES ($1, $2, now(), LOCALTIMESTAMP, CURRENT_DATE, gen_random_uuid(), random())",
        [key, tenant],
    )
    assert setup.sink.intents[0].target is Side.NEW
    authoritative, mirrored = await env.row(setup.authoritative, key), await env.row(setup.mirror, key)
    assert authoritative == mirrored
    at, _local, _day, token, _text, r = authoritative
    _recent(at)
    assert token is not None, "values were not written: the test proved nothing"
    assert r is not None, "values were not written: the test proved nothing"


async def test_a_mysql_write_pinned_in_live_lands_the_same_values_on_old(env: Env, tenant: str) -> None:
    setup = env.setups["b"]
    await setup.proxy.set_phase_direct(tenant, Phase.LIVE)
    key = f"{tenant}-1"
    await _write(
        setup,
        tenant,
        "INSERT INTO events (id, tenant_id, at_local, day, token_text, r) "
        "VALUES (?, ?, NOW(), CURDATE(), UUID(), RAND())",
        [key, tenant],
    )
    assert setup.sink.intents[0].target is Side.OLD
    await _write(setup, tenant, "UPDATE events SET at = UTC_TIMESTAMP(), n = n + 1 WHERE id = ?", [key])
    authoritative, mirrored = await env.row(setup.authoritative, key), await env.row(setup.mirror, key)
    assert authoritative == mirrored
    at, local, _day, _token, text, r = authoritative
    _recent(at)
    _recent(local)
    assert uuid.UUID(text), "values were not written: the test proved nothing"
    assert r is not None, "values were not written: the test proved nothing"
