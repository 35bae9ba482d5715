"""SQL endpoints through the proxy, end to end: real uvicorn servers, real PostgreSQL phases.

Old speaks MySQL, new PostgreSQL. Both backends are small SQL-API stand-ins that record every body they
receive, so each test can check which side got what, in which dialect. Intents go to an in-memory sink.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from routing.phases import Phase, Side
from tests.support.asgi import Receive, Scope, Send, read_body
from tests.support.demo_backends import DemoBackend
from tests.support.proxies import MemorySink, Proxy, ProxyBuilder, Tokens
from tests.support.servers import RunningServer, backend_config, start_server
from tests.support.waits import wait_for

OLD, NEW = Side.OLD, Side.NEW
MIRRORING = (Phase.DUAL_WRITE, Phase.SHADOW, Phase.LIVE, Phase.RAMPDOWN)


@dataclass
class SqlBackend:
    """A data API that takes `{"sql", "params"}` and answers with what it received."""

    side: Side
    received: list[dict[str, Any]] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        document = orjson.loads(body) if body else None
        self.received.append({"path": scope["path"], "method": scope["method"], "body": document})
        payload = orjson.dumps({"rows": [[1]], "path": scope["path"]})
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    def bodies(self, marker: str) -> list[dict[str, Any]]:
        """Bodies whose SQL mentions `marker` (each test marks its statements with its tenant)."""
        return [
            r["body"]
            for r in self.received
            if r["body"] is not None and marker in orjson.dumps(r["body"]).decode()
        ]


@dataclass
class SqlEnv:
    proxy: Proxy
    sink: MemorySink
    backends: dict[Side, SqlBackend]

    async def post(self, tenant: str | None, sql: Any, params: Any = None, **extra: Any) -> httpx.Response:
        headers = {"X-Tenant-ID": tenant} if tenant else {}
        body: dict[str, Any] = {"sql": sql, **extra}
        if params is not None:
            body["params"] = params
        return await self.proxy.client.post("/query", json=body, headers=headers)


@pytest.fixture(scope="module")
async def _sql_env(
    demo_backends: dict[Side, DemoBackend],
    pg_url: str,
    module_redis_prefix: str,
    tokens: Tokens,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[SqlEnv]:
    backends = {side: SqlBackend(side) for side in Side}
    servers: list[RunningServer] = [await start_server(backend_config(backends[side])) for side in Side]
    builder = ProxyBuilder(
        demo_backends, pg_url, module_redis_prefix, tokens, Path(tmp_path_factory.mktemp("sql"))
    )
    sink = MemorySink()
    proxy = await builder.start(
        {
            "backends": {
                "old": {"url": servers[0].url, "sql_dialect": "mysql"},
                "new": {"url": servers[1].url, "sql_dialect": "postgres"},
            },
            "sql": {
                "endpoints": [{"path": "/query"}],
                "covered_tables": ["orders", "customers"],
                "primary_keys": {"orders": ["id"]},
                "max_text_chars": 2000,
                "max_statements": 4,
            },
        },
        sink=sink,
    )
    yield SqlEnv(proxy, sink, backends)
    await builder.close()
    for server in servers:
        await server.stop()


@pytest.fixture
def env(_sql_env: SqlEnv) -> SqlEnv:
    _sql_env.sink.intents.clear()
    _sql_env.sink.accepting = True
    return _sql_env


def served_by(response: httpx.Response) -> str | None:
    served: str | None = response.headers.get("x-cutover-served-by")
    return served


# -- reads and writes in every phase ---------------------------------------------------------------------
READ_SERVING = {
    Phase.LEGACY: OLD,
    Phase.DUAL_WRITE: OLD,
    Phase.SHADOW: OLD,
    Phase.LIVE: NEW,
    Phase.RAMPDOWN: NEW,
    Phase.COMPLETE: NEW,
}
WRITE_MIRROR = {Phase.DUAL_WRITE: NEW, Phase.SHADOW: NEW, Phase.LIVE: OLD, Phase.RAMPDOWN: OLD}


@pytest.mark.parametrize("phase", list(Phase), ids=[p.value for p in Phase])
async def test_a_post_that_reads_is_routed_as_a_read_and_new_gets_postgres(
    env: SqlEnv, tenant: str, phase: Phase
) -> None:
    await env.proxy.set_phase_direct(tenant, phase)
    sql = f"SELECT id FROM orders WHERE tenant_id = ? AND note = '{tenant}' LIMIT ?, ?"
    response = await env.post(tenant, sql, [tenant, 5, 10])
    assert response.status_code == 200, response.text
    assert served_by(response) == READ_SERVING[phase]
    assert response.headers["x-cutover-phase"] == phase.value
    assert not env.sink.intents  # a read is never mirrored
    if READ_SERVING[phase] is OLD:
        assert env.backends[OLD].bodies(tenant) == [{"sql": sql, "params": [tenant, 5, 10]}]
    if phase in (Phase.SHADOW, Phase.LIVE, Phase.RAMPDOWN, Phase.COMPLETE):
        # serving or shadowed on new: rewritten for PostgreSQL, parameters numbered as sent
        async def on_new() -> bool:
            return bool(env.backends[NEW].bodies(tenant))

        await wait_for(on_new)
        (body,) = env.backends[NEW].bodies(tenant)
        assert body == {
            "sql": f"SELECT id FROM orders WHERE tenant_id = $1 AND note = '{tenant}' LIMIT $3 OFFSET $2",
            "params": [tenant, 5, 10],
        }
    else:
        assert env.backends[NEW].bodies(tenant) == []


@pytest.mark.parametrize("phase", list(Phase), ids=[p.value for p in Phase])
async def test_a_write_goes_to_the_authoritative_side_and_its_intent_carries_the_mirrors_dialect(
    env: SqlEnv, tenant: str, phase: Phase
) -> None:
    await env.proxy.set_phase_direct(tenant, phase)
    sql = (
        "INSERT INTO orders (id, tenant_id, total) VALUES (?, ?, ?) "
        "ON DUPLICATE KEY UPDATE total = VALUES(total)"
    )
    response = await env.post(tenant, sql, [1, tenant, 9])
    assert response.status_code == 200, response.text
    assert served_by(response) == phase.authoritative
    mirror = WRITE_MIRROR.get(phase)
    if mirror is None:
        assert env.sink.intents == []
        return
    (intent,) = env.sink.intents
    assert (intent.tenant, intent.target, intent.method, intent.path) == (tenant, mirror, "POST", "/query")
    sent = orjson.loads(intent.body)
    if mirror is NEW:
        assert sent["sql"] == (
            "INSERT INTO orders (id, tenant_id, total) VALUES ($1, $2, $3) "
            "ON CONFLICT(id) DO UPDATE SET total = EXCLUDED.total"
        )
    else:
        assert sent["sql"] == sql  # old gets what the client sent
    assert sent["params"] == [1, tenant, 9]


async def test_the_tenant_comes_from_the_statement_when_there_is_no_header(env: SqlEnv, tenant: str) -> None:
    await env.proxy.set_phase_direct(tenant, Phase.LIVE)
    response = await env.post(None, "SELECT * FROM orders WHERE tenant_id = ?", [tenant])
    assert (response.status_code, served_by(response), response.headers["x-cutover-phase"]) == (
        200,
        "new",
        "live",
    )
    response = await env.post(None, f"UPDATE orders SET total = 1 WHERE tenant_id = '{tenant}' AND id = 3")
    assert (response.status_code, served_by(response)) == (200, "new")
    (intent,) = env.sink.intents
    assert (intent.tenant, intent.target) == (tenant, OLD)


async def test_a_statement_for_another_tenant_than_the_header_is_refused(env: SqlEnv, tenant: str) -> None:
    response = await env.post(tenant, "SELECT * FROM orders WHERE tenant_id = 'someone-else'")
    assert response.status_code == 400
    assert response.json()["error"] == "sql_tenant_mismatch"


# -- scope by table --------------------------------------------------------------------------------------
@pytest.mark.parametrize("phase", list(Phase), ids=[p.value for p in Phase])
async def test_statements_on_uncovered_tables_stay_on_old(env: SqlEnv, tenant: str, phase: Phase) -> None:
    await env.proxy.set_phase_direct(tenant, phase)
    for sql in (
        f"SELECT * FROM audit_log WHERE note = '{tenant}'",
        f"DELETE FROM audit_log WHERE note = '{tenant}'",
    ):
        response = await env.post(tenant, sql)
        assert (response.status_code, served_by(response)) == (200, "old"), response.text
    assert env.sink.intents == []
    assert env.backends[NEW].bodies(tenant) == []


@pytest.mark.parametrize("phase", list(Phase), ids=[p.value for p in Phase])
async def test_a_write_to_covered_and_uncovered_tables(env: SqlEnv, tenant: str, phase: Phase) -> None:
    await env.proxy.set_phase_direct(tenant, phase)
    sql = f"INSERT INTO audit_log (note) SELECT note FROM orders WHERE tenant_id = '{tenant}'"
    response = await env.post(tenant, sql)
    if phase is Phase.LEGACY:
        assert (response.status_code, served_by(response)) == (200, "old")
        return
    assert response.status_code == 422, response.text
    error = response.json()
    assert (error["error"], error["covered"], error["uncovered"]) == (
        "sql_mixed_tables",
        ["orders"],
        ["audit_log"],
    )
    assert env.backends[OLD].bodies(tenant) == []
    assert env.backends[NEW].bodies(tenant) == []
    assert env.sink.intents == []


@pytest.mark.parametrize("phase", list(Phase), ids=[p.value for p in Phase])
async def test_ddl_only_in_legacy_and_complete(env: SqlEnv, tenant: str, phase: Phase) -> None:
    await env.proxy.set_phase_direct(tenant, phase)
    response = await env.post(tenant, f"ALTER TABLE orders ADD COLUMN c_{tenant.replace('-', '_')} INT")
    if phase in (Phase.LEGACY, Phase.COMPLETE):
        assert (response.status_code, served_by(response)) == (200, phase.authoritative)
    else:
        assert response.status_code == 422
        assert response.json()["error"] == "sql_ddl_refused"
    assert env.sink.intents == []


# -- transpilation refusals ------------------------------------------------------------------------------
@pytest.mark.parametrize("phase", list(Phase), ids=[p.value for p in Phase])
async def test_a_write_with_no_safe_rewrite_is_refused_where_new_needs_it(
    env: SqlEnv, tenant: str, phase: Phase
) -> None:
    await env.proxy.set_phase_direct(tenant, phase)
    sql = f"REPLACE INTO orders (id, tenant_id) VALUES (1, '{tenant}')"
    response = await env.post(tenant, sql)
    if phase is Phase.LEGACY:
        assert (response.status_code, served_by(response)) == (200, "old")
        return
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "sql_untranspilable"
    assert "REPLACE" in body["detail"]
    assert (body["source_dialect"], body["target_dialect"]) == ("mysql", "postgres")
    assert env.backends[OLD].bodies(tenant) == []
    assert env.sink.intents == []


async def test_a_read_with_no_safe_rewrite_is_served_unshadowed_in_shadow_and_refused_in_live(
    env: SqlEnv, tenant: str
) -> None:
    sql = f"SELECT * FROM orders WHERE MATCH(note) AGAINST ('{tenant}')"
    await env.proxy.set_phase_direct(tenant, Phase.SHADOW)
    response = await env.post(tenant, sql)
    assert (response.status_code, served_by(response)) == (200, "old")
    await env.proxy.set_phase_direct(tenant, Phase.LIVE)
    response = await env.post(tenant, sql)
    assert response.status_code == 422
    assert response.json()["error"] == "sql_untranspilable"
    assert env.backends[NEW].bodies(tenant) == []


# -- values fixed once for both sides --------------------------------------------------------------------
@pytest.mark.parametrize("phase", list(Phase), ids=[p.value for p in Phase])
async def test_a_mirrored_write_sends_both_sides_the_same_literals(
    env: SqlEnv, tenant: str, phase: Phase
) -> None:
    await env.proxy.set_phase_direct(tenant, phase)
    sql = "INSERT INTO orders (id, tenant_id, at, token, r) VALUES (?, ?, NOW(), UUID(), RAND())"
    response = await env.post(tenant, sql, [1, tenant])
    assert response.status_code == 200, response.text
    authoritative = phase.authoritative
    (served,) = env.backends[authoritative].bodies(tenant)
    if phase not in MIRRORING:
        assert env.sink.intents == []
        assert "NOW()" in served["sql"]
        assert "UUID()" in served["sql"]
        return
    (intent,) = env.sink.intents
    replayed = orjson.loads(intent.body)
    old_sql, new_sql = (served, replayed) if authoritative is OLD else (replayed, served)
    # The client's MySQL, with literals in place of the calls; new's PostgreSQL with the same literals.
    prefix = "INSERT INTO orders (id, tenant_id, at, token, r) VALUES "
    assert old_sql["sql"].startswith(prefix + "(?, ?, CAST('")
    assert "NOW" not in old_sql["sql"]
    assert new_sql["sql"].startswith(prefix + "($1, $2, CAST('")
    assert "NOW" not in new_sql["sql"]
    at = old_sql["sql"].split("CAST('")[1].split("'")[0]
    token, r = old_sql["sql"].split("'")[3], old_sql["sql"].rsplit(", ", 1)[1].rstrip(")")
    assert f"CAST('{at}' AS TIMESTAMP)" in new_sql["sql"]
    assert f"'{token}'" in new_sql["sql"]
    assert float(r) == float(new_sql["sql"].split("CAST('")[-1].split("'")[0])
    assert str(uuid.UUID(token)) == token
    assert len(at) == len("2024-05-06 07:08:09")
    assert old_sql["params"] == new_sql["params"] == [1, tenant]


async def test_each_request_gets_its_own_values(env: SqlEnv, tenant: str) -> None:
    await env.proxy.set_phase_direct(tenant, Phase.DUAL_WRITE)
    for key in (1, 2):
        response = await env.post(
            tenant, "UPDATE orders SET token = UUID() WHERE id = ? AND tenant_id = ?", [key, tenant]
        )
        assert response.status_code == 200, response.text
    first, second = (body["sql"] for body in env.backends[OLD].bodies(tenant))
    assert first != second
    assert "UUID()" not in first + second


REFUSED_IN_MIRRORING = [
    (
        "INSERT INTO orders (id, tenant_id, parent) VALUES (?, ?, LAST_INSERT_ID())",
        {"error": "sql_unpinnable", "function": "LAST_INSERT_ID"},
    ),
    ("UPDATE orders SET token = UUID() WHERE tenant_id = ?", {"error": "sql_unpinnable", "function": "UUID"}),
    (
        "INSERT INTO orders (tenant_id, total) VALUES (?, 1)",
        {"error": "sql_generated_key", "table": "orders", "column": "id"},
    ),
]


@pytest.mark.parametrize(("sql", "expected"), REFUSED_IN_MIRRORING)
@pytest.mark.parametrize("phase", list(Phase), ids=[p.value for p in Phase])
async def test_writes_that_cannot_mean_the_same_on_both_sides_are_refused_while_mirrored(
    env: SqlEnv, tenant: str, phase: Phase, sql: str, expected: dict[str, str]
) -> None:
    await env.proxy.set_phase_direct(tenant, phase)
    params = [tenant] if sql.count("?") == 1 else [1, tenant]
    response = await env.post(tenant, sql, params)
    if phase not in MIRRORING:  # as before: served, or refused for another reason (no PostgreSQL twin)
        if response.status_code != 200:
            assert (phase, response.json()["error"]) == (Phase.COMPLETE, "sql_untranspilable")
        return
    assert response.status_code == 422, response.text
    body = response.json()
    assert {key: body[key] for key in expected} == expected
    assert body["phase"] == phase.value
    assert body["detail"]
    assert served_by(response) == "proxy"
    assert env.backends[OLD].bodies(tenant) == []
    assert env.backends[NEW].bodies(tenant) == []
    assert env.sink.intents == []


# -- locking reads ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "lock", ["FOR UPDATE", "FOR SHARE", "LOCK IN SHARE MODE", "FOR UPDATE NOWAIT"], ids=lambda lock: lock
)
@pytest.mark.parametrize("phase", list(Phase), ids=[p.value for p in Phase])
async def test_a_locking_read_is_served_by_the_side_that_takes_writes_alone(
    env: SqlEnv, tenant: str, phase: Phase, lock: str
) -> None:
    await env.proxy.set_phase_direct(tenant, phase)
    response = await env.post(
        tenant, f"SELECT * FROM orders WHERE tenant_id = ? AND id = ? {lock}", [tenant, 1]
    )
    assert (response.status_code, served_by(response)) == (200, phase.authoritative), response.text
    await asyncio.sleep(0.05)  # a shadow read, were there one, would have left by now
    assert len(env.backends[phase.authoritative].bodies(tenant)) == 1
    assert env.backends[phase.authoritative.other].bodies(tenant) == []  # never shadowed
    assert env.sink.intents == []  # never mirrored


# -- bad input -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"sql": "SELECT * FROM\n  WHERE x = 1"}, "sql_syntax"),
        ({"sql": ""}, "sql_empty"),
        ({"sql": "SELECT '" + "x" * 2000 + "'"}, "sql_too_long"),
        ({"sql": "SELECT 1; SELECT 2; SELECT 3; SELECT 4; SELECT 5"}, "sql_too_many_statements"),
        ({"sql": ["SELECT 1", "SELECT 2"], "params": [[]]}, "sql_params"),
        ({"sql": "SELECT * FROM orders WHERE id = ?"}, "sql_params"),
        ({"sql": 42}, "sql_body"),
        ({"query": "SELECT 1"}, "sql_body"),
    ],
)
async def test_bad_sql_is_refused_before_any_backend_sees_it(
    env: SqlEnv, body: dict[str, Any], code: str
) -> None:
    before = [len(env.backends[side].received) for side in Side]
    response = await env.proxy.client.post("/query", json=body, headers={"X-Tenant-ID": "bad-sql"})
    assert response.status_code == 400, response.text
    assert response.json()["error"] == code
    assert response.headers["x-cutover-served-by"] == "proxy"
    assert [len(env.backends[side].received) for side in Side] == before


async def test_a_syntax_error_names_the_position(env: SqlEnv) -> None:
    response = await env.post("bad-sql", "SELECT *\nFROM\n  WHERE x = 1")
    body = response.json()
    assert (response.status_code, body["error"], body["line"], body["col"]) == (400, "sql_syntax", 3, 7)
    assert "Expected table name" in body["detail"]


async def test_a_body_that_is_not_json_is_refused(env: SqlEnv) -> None:
    response = await env.proxy.client.post("/query", content=b"SELECT 1", headers={"X-Tenant-ID": "bad-sql"})
    assert (response.status_code, response.json()["error"]) == (400, "sql_body")


async def test_a_list_of_statements_is_rewritten_item_by_item(env: SqlEnv, tenant: str) -> None:
    await env.proxy.set_phase_direct(tenant, Phase.DUAL_WRITE)
    sql = [
        "UPDATE orders SET total = ? WHERE tenant_id = ? AND id = ?",
        f"SELECT * FROM customers WHERE note = '{tenant}' LIMIT ?, ?",
    ]
    response = await env.post(tenant, sql, [[5, tenant, 1], [0, 3]])
    assert (response.status_code, served_by(response)) == (200, "old")
    (intent,) = env.sink.intents
    assert orjson.loads(intent.body) == {
        "sql": [
            "UPDATE orders SET total = $1 WHERE tenant_id = $2 AND id = $3",
            f"SELECT * FROM customers WHERE note = '{tenant}' LIMIT $2 OFFSET $1",
        ],
        "params": [[5, tenant, 1], [0, 3]],
    }


async def test_other_paths_and_methods_are_not_sql(env: SqlEnv, tenant: str) -> None:
    await env.proxy.set_phase_direct(tenant, Phase.LIVE)
    response = await env.proxy.client.post(
        "/other", json={"sql": "SELECT 1"}, headers={"X-Tenant-ID": tenant}
    )
    assert (response.status_code, served_by(response)) == (200, "new")  # a plain POST: a write
    (intent,) = env.sink.intents
    assert intent.path == "/other"


# -- fuzz ------------------------------------------------------------------------------------------------
CORPUS = [
    "SELECT id, total FROM orders WHERE tenant_id = ? AND id = ?",
    "INSERT INTO orders (id, tenant_id, total) VALUES (?, ?, ?) ON DUPLICATE KEY UPDATE total = VALUES(t)",
    "UPDATE orders o JOIN customers c ON c.id = o.customer_id SET o.total = 0 WHERE c.tenant_id = 'fz'",
    "WITH x AS (SELECT * FROM orders WHERE total > 3) SELECT * FROM x JOIN audit_log a ON a.id = x.id",
    "DELETE FROM orders WHERE id IN (SELECT order_id FROM refunds) LIMIT 3",
    "SELECT * FROM orders WHERE note LIKE '%s' FOR UPDATE; COMMIT",
    "EXPLAIN ANALYZE SELECT COUNT(*) FROM customers GROUP BY tenant_id HAVING COUNT(*) > ?",
    "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10)); REPLACE INTO t VALUES (1, 'x')",
]
TOKENS = [
    "(",
    ")",
    "'",
    '"',
    "`",
    ";",
    "?",
    "%s",
    "$1",
    ":p",
    "--",
    "/*",
    "*/",
    "\\",
    ",",
    "SELECT",
    "FROM",
    "WHERE",
    "WITH",
    "AS",
    "JOIN",
    "ON",
    "INSERT",
    "INTO",
    "VALUES",
    "DELETE",
    "UPDATE",
    "SET",
    "=",
    "tenant_id",
    "orders",
    "audit_log",
    "EXPLAIN",
    "FOR UPDATE",
    "RETURNING",
    "\x00",
    "é",
    "\n",
]


@st.composite
def mutated_sql(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(CORPUS))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        action = draw(st.sampled_from(["insert", "delete", "duplicate", "truncate"]))
        if action == "insert":
            piece = draw(st.one_of(st.sampled_from(TOKENS), st.text(max_size=4)))
            text = f"{text[:at]} {piece} {text[at:]}"
        elif action == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 12)) :]
        elif action == "duplicate":
            text = text[:at] + text[max(0, at - 15) : at] + text[at:]
        else:
            text = text[:at]
    return text


SQL_VALUES = st.one_of(
    mutated_sql(),
    st.text(max_size=200),
    st.lists(mutated_sql(), min_size=0, max_size=3),
    st.integers(),
    st.none(),
    st.just("(" * 400 + "1" + ")" * 400),
    st.just("SELECT " + "(" * 3000),
)
PARAMS = st.one_of(
    st.none(),
    st.lists(
        st.one_of(st.text(max_size=8), st.integers(), st.none(), st.booleans(), st.floats()), max_size=5
    ),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=3),
    st.integers(),
    st.lists(st.lists(st.integers(), max_size=3), max_size=3),
)


@pytest.fixture(scope="module")
async def fuzz_tenants(_sql_env: SqlEnv) -> dict[Phase, str]:
    tenants = {phase: f"fz-{phase.value}" for phase in Phase}
    for phase, tenant in tenants.items():
        await _sql_env.proxy.set_phase_direct(tenant, phase)
    return tenants


@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(sql=SQL_VALUES, params=PARAMS, phase=st.sampled_from(list(Phase)), header=st.booleans())
async def test_random_and_mutated_sql_gets_4xx_or_is_forwarded_never_5xx(
    env: SqlEnv, fuzz_tenants: dict[Phase, str], sql: Any, params: Any, phase: Phase, header: bool
) -> None:
    body: dict[str, Any] = {"sql": sql}
    if params is not None:
        body["params"] = params
    headers = {"X-Tenant-ID": fuzz_tenants[phase]} if header else {}
    # json, not orjson: hypothesis draws integers beyond 64 bits
    response = await env.proxy.client.post("/query", content=json.dumps(body), headers=headers)
    assert response.status_code < 500, (response.status_code, response.text)
    if response.status_code >= 400:
        assert response.headers["x-cutover-served-by"] == "proxy"
        assert set(response.json()) >= {"error", "detail"}
    else:
        assert served_by(response) in ("old", "new")
    assert env.proxy.runtime.data_plane is not None  # the proxy is still up for the next example


async def test_the_proxy_still_serves_after_the_fuzz(env: SqlEnv, tenant: str) -> None:
    response = await env.post(tenant, "SELECT 1")
    assert (response.status_code, served_by(response)) == (200, "old")
