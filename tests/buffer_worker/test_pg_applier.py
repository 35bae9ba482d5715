"""The PostgreSQL applier against real PostgreSQL: the batch collapse, idempotency through the ledger, and
equivalence of its one-statement fast path with intent-by-intent apply in order."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from buffer_worker.apply_errors import PermanentApplyError, TransientApplyError, UnreachableError
from buffer_worker.intent import Intent
from buffer_worker.ledger import prune_ledger
from buffer_worker.mirror_lock import COPY_LOCK_SQL, lock_key
from buffer_worker.pg_applier import PostgresApplier
from buffer_worker.pg_batch import Change, RowWrite, collapse
from buffer_worker.pg_errors import database_error
from buffer_worker.pg_state import DatabaseState, HttpState
from buffer_worker.sql_apply import SqlIntents
from config.settings import BackendSettings, PostgresApplierSettings, Settings
from routing.phases import Side
from tests.support.asgi import Receive, Scope, Send
from tests.support.postgres import wait_for_lock_waiter
from tests.support.servers import backend_config, free_port, start_server

TABLE = "mirror_items"


# -- collapse (pure) ---------------------------------------------------------------------------------------
def write(method: str, key: str = "k", **document: Any) -> RowWrite:
    return RowWrite(0, "acme", key, method, None if method == "DELETE" else document)


@pytest.mark.parametrize(
    ("writes", "expected"),
    [
        ([write("PUT", a=1)], (Change.SET, {"a": 1})),
        ([write("POST", a=1)], (Change.SET, {"a": 1})),
        ([write("PUT", a=1), write("PUT", b=2)], (Change.SET, {"b": 2})),
        ([write("PATCH", a=1)], (Change.MERGE, {"a": 1})),
        ([write("PATCH", a=1), write("PATCH", a=2, b=3)], (Change.MERGE, {"a": 2, "b": 3})),
        ([write("PUT", a=1, b=1), write("PATCH", b=2)], (Change.SET, {"a": 1, "b": 2})),
        ([write("PUT", a=1), write("DELETE")], (Change.DELETE, None)),
        ([write("DELETE"), write("PATCH", a=1)], (Change.SET, {"a": 1})),
        ([write("PATCH", a=1), write("DELETE"), write("PUT", c=1)], (Change.SET, {"c": 1})),
    ],
)
def test_collapse_keeps_the_final_effect_per_row(
    writes: list[RowWrite], expected: tuple[Change, dict[str, Any] | None]
) -> None:
    assert collapse(writes) == {(0, "acme", "k"): expected}


def test_collapse_keeps_rows_apart_by_table_tenant_and_key() -> None:
    writes = [
        RowWrite(0, "acme", "k", "PUT", {"a": 1}),
        RowWrite(1, "acme", "k", "PUT", {"a": 2}),
        RowWrite(0, "globex", "k", "DELETE", None),
        RowWrite(0, "acme", "j", "PATCH", {"a": 3}),
    ]
    assert collapse(writes) == {
        (0, "acme", "k"): (Change.SET, {"a": 1}),
        (1, "acme", "k"): (Change.SET, {"a": 2}),
        (0, "globex", "k"): (Change.DELETE, None),
        (0, "acme", "j"): (Change.MERGE, {"a": 3}),
    }


# -- against PostgreSQL -----------------------------------------------------------------------------------
@pytest.fixture
async def applier(pg_url: str) -> AsyncIterator[PostgresApplier]:
    table = f"{TABLE}_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(pg_url)
    await conn.execute(
        f"CREATE TABLE {table} (tenant_id text, id text, doc jsonb, PRIMARY KEY (tenant_id, id))"
    )
    await conn.close()
    the_applier = PostgresApplier(
        PostgresApplierSettings.model_validate(
            {"url": pg_url, "resources": [{"path": "/items/{key}", "table": table}]}
        )
    )
    await the_applier.start()
    the_applier.table = table  # type: ignore[attr-defined]
    try:
        yield the_applier
    finally:
        await the_applier.close()
        conn = await asyncpg.connect(pg_url)
        await conn.execute(f"DROP TABLE {table}")
        await conn.close()


async def rows(pg_url: str, table: str) -> dict[tuple[str, str], dict[str, Any]]:
    conn = await asyncpg.connect(pg_url)
    try:
        records = await conn.fetch(f"SELECT tenant_id, id, doc FROM {table}")
    finally:
        await conn.close()
    return {(r["tenant_id"], r["id"]): orjson.loads(r["doc"]) for r in records}


def intent(tenant: str, method: str, key: str, body: dict[str, Any] | None = None) -> Intent:
    return Intent(
        tenant=tenant,
        target=Side.NEW,
        method=method,
        path=f"/items/{key}",
        query="",
        headers=(("content-type", "application/json"),),
        body=orjson.dumps(body) if body is not None else b"",
        status=200,
        response_body=b"{}",
    )


def model(intents: list[Intent]) -> dict[tuple[str, str], dict[str, Any]]:
    """The table after applying each distinct intent once, in order (the applier's documented effects)."""
    state: dict[tuple[str, str], dict[str, Any]] = {}
    seen: set[str] = set()
    for one in intents:
        if one.intent_id in seen:
            continue
        seen.add(one.intent_id)
        row = (one.tenant, one.path.rsplit("/", 1)[1])
        if one.method == "DELETE":
            state.pop(row, None)
            continue
        document = {**orjson.loads(one.body), "id": row[1]}
        state[row] = {**state.get(row, {}), **document} if one.method == "PATCH" else document
    return state


async def test_a_batch_applies_in_order_and_a_redelivery_changes_nothing(
    applier: PostgresApplier, pg_url: str
) -> None:
    table = applier.table  # type: ignore[attr-defined]
    batch = [
        intent("acme", "PUT", "a", {"v": 1, "keep": True}),
        intent("acme", "PATCH", "a", {"v": 2}),
        intent("acme", "PUT", "b", {"v": 1}),
        intent("acme", "DELETE", "b"),
        intent("globex", "PATCH", "a", {"v": 9}),
    ]
    await applier.apply_batch(batch)
    expected = {("acme", "a"): {"v": 2, "keep": True, "id": "a"}, ("globex", "a"): {"v": 9, "id": "a"}}
    assert await rows(pg_url, table) == expected
    # A later write, then the old batch delivered again (a worker crashed before XACK): no change.
    later = intent("acme", "PUT", "a", {"v": 3})
    await applier.apply_batch([later])
    await applier.apply_batch(batch)
    assert await rows(pg_url, table) == {**expected, ("acme", "a"): {"v": 3, "id": "a"}}


async def test_a_partly_applied_batch_applies_only_its_new_intents(
    applier: PostgresApplier, pg_url: str
) -> None:
    table = applier.table  # type: ignore[attr-defined]
    first = intent("acme", "PUT", "a", {"v": 1})
    second = intent("acme", "PATCH", "a", {"w": 1})
    await applier.apply_batch([first, second])
    overwrite = intent("acme", "PUT", "a", {"v": 2})
    await applier.apply_batch([overwrite])
    # `second` again, with a new PATCH behind it: re-applying `second` would bring `w` back.
    third = intent("acme", "PATCH", "a", {"x": 1})
    await applier.apply_batch([second, third])
    assert await rows(pg_url, table) == {("acme", "a"): {"v": 2, "x": 1, "id": "a"}}


async def test_an_intent_twice_in_one_batch_applies_once(applier: PostgresApplier, pg_url: str) -> None:
    table = applier.table  # type: ignore[attr-defined]
    old = intent("acme", "PUT", "a", {"v": 1})
    new = intent("acme", "PUT", "a", {"v": 2})
    await applier.apply_batch([old, new, old])  # `old` appended twice (a re-sent append)
    assert await rows(pg_url, table) == {("acme", "a"): {"v": 2, "id": "a"}}


async def test_a_batch_cancelled_mid_transaction_leaves_nothing_and_its_connection_is_reusable(
    applier: PostgresApplier, pg_url: str
) -> None:
    """The batch waits on its tenant's mirror lock (a backfill chunk holds it) and is cancelled: the
    pool's release rolls the open transaction back, with or without asyncpg's full reset query."""
    table = applier.table  # type: ignore[attr-defined]
    holder = await asyncpg.connect(pg_url)
    try:
        async with holder.transaction():
            await holder.execute(COPY_LOCK_SQL, lock_key("acme"))
            stuck = asyncio.create_task(applier.apply_batch([intent("acme", "PUT", "a", {"v": 1})]))
            await wait_for_lock_waiter(pg_url, stuck, "the batch did not wait for the mirror lock")
            stuck.cancel()
            with pytest.raises(asyncio.CancelledError):
                await stuck
    finally:
        await holder.close()
    # Every pooled connection is clean: more batches than the pool has connections all apply.
    later = [intent("acme", "PUT", f"k{n}", {"v": n}) for n in range(8)]
    await asyncio.gather(*(applier.apply_batch([one]) for one in later))
    assert await rows(pg_url, table) == {("acme", f"k{n}"): {"v": n, "id": f"k{n}"} for n in range(8)}


async def test_ledger_pruning_drops_only_ids_past_retention_and_recent_redelivery_stays_a_no_op(
    applier: PostgresApplier, pg_url: str
) -> None:
    table = applier.table  # type: ignore[attr-defined]
    old = [intent("acme", "PUT", f"o{n}", {"v": n}) for n in range(30)]
    recent = [intent("acme", "PUT", "r", {"v": 1}), intent("acme", "PATCH", "r", {"w": 2})]
    await applier.apply_batch(old)
    await applier.apply_batch(recent)
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute(
            "UPDATE cutover_applied_intent SET applied_at = now() - interval '8 days'"
            " WHERE intent_id = ANY($1::text[])",
            [one.intent_id for one in old],
        )
        pool = applier._pool  # noqa: SLF001 - the applier's own pool, as its pruning task uses it
        assert pool is not None
        assert await prune_ledger(pool, 7 * 24 * 3600, chunk=7) == 30  # several bounded chunks
        left = await conn.fetchval(
            "SELECT count(*) FROM cutover_applied_intent WHERE intent_id = ANY($1::text[])",
            [one.intent_id for one in old + recent],
        )
        assert left == len(recent)
    finally:
        await conn.close()
    # The recent batch delivered again changes nothing (its PATCH would otherwise be merged twice over a
    # newer PUT); a pruned id applies again, which is why retention must outlast the buffer.
    await applier.apply_batch([intent("acme", "PUT", "r", {"v": 3})])
    await applier.apply_batch(recent)
    assert (await rows(pg_url, table))[("acme", "r")] == {"v": 3, "id": "r"}
    await applier.apply_batch([old[0]])
    async with pool.acquire() as check:
        query = "SELECT count(*) FROM cutover_applied_intent WHERE intent_id = $1"
        assert await check.fetchval(query, old[0].intent_id) == 1


async def test_a_write_no_resource_maps_is_permanent(applier: PostgresApplier) -> None:
    stray = Intent(
        tenant="acme",
        target=Side.NEW,
        method="PUT",
        path="/orders/1",
        query="",
        headers=(),
        body=b"{}",
        status=200,
        response_body=b"{}",
    )
    with pytest.raises(PermanentApplyError, match="no postgres resource maps"):
        await applier.apply_batch([stray])


OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(["acme", "globex"]),
        st.sampled_from(["PUT", "PATCH", "DELETE"]),
        st.sampled_from(["a", "b", "c"]),
        st.dictionaries(st.sampled_from(["x", "y", "z"]), st.integers(0, 9), max_size=2),
    ),
    min_size=1,
    max_size=30,
)


CUTS = st.lists(st.integers(0, 30), max_size=4)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(operations=OPERATIONS, cuts=CUTS, replays=st.sets(st.integers(0, 12)))
async def test_any_batching_and_redelivery_equals_applying_each_intent_once_in_order(
    applier: PostgresApplier,
    pg_url: str,
    operations: list[tuple[str, str, str, dict[str, int]]],
    cuts: list[int],
    replays: set[int],
) -> None:
    table = applier.table  # type: ignore[attr-defined]
    conn = await asyncpg.connect(pg_url)
    await conn.execute(f"TRUNCATE {table}")
    await conn.close()
    intents = [intent(t, m, k, None if m == "DELETE" else body) for t, m, k, body in operations]
    bounds = sorted({0, len(intents), *(c % (len(intents) + 1) for c in cuts)})
    for number, (start, end) in enumerate(zip(bounds, bounds[1:], strict=False)):
        if 2 * number in replays and start > 0:
            # re-read with one applied intent in front: a partly applied batch (the slow path)
            await applier.apply_batch(intents[start - 1 : end])
        else:
            await applier.apply_batch(intents[start:end])
        if 2 * number + 1 in replays:
            await applier.apply_batch(intents[start:end])  # delivered again whole: changes nothing
    assert await rows(pg_url, table) == model(intents)


# -- state transfer ---------------------------------------------------------------------------------------
@dataclass
class Transfer:
    """An applier toward new under state transfer, reading the authoritative rows from `source` (old's
    table: another name, tenant column and document column than the mirror's)."""

    applier: PostgresApplier
    mirror: str
    source: str
    pg_url: str

    async def authoritative(self, tenant: str, key: str, doc: dict[str, Any] | None) -> None:
        conn = await asyncpg.connect(self.pg_url)
        try:
            if doc is None:
                await conn.execute(f"DELETE FROM {self.source} WHERE account = $1 AND item = $2", tenant, key)
            else:
                await conn.execute(
                    f"INSERT INTO {self.source} VALUES ($1, $2, $3::jsonb) ON CONFLICT (account, item)"
                    " DO UPDATE SET body = EXCLUDED.body",
                    tenant,
                    key,
                    orjson.dumps(doc).decode(),
                )
        finally:
            await conn.close()


def transfer_settings(pg_url: str, mirror: str, source: str, **extra: Any) -> PostgresApplierSettings:
    return PostgresApplierSettings.model_validate(
        {
            "new": {"url": pg_url, "resources": [{"path": "/items/{key}", "table": mirror}]},
            "old": {
                "url": pg_url,
                "resources": [
                    {
                        "path": "/items/{key}",
                        "table": source,
                        "tenant_column": "account",
                        "key_column": "item",
                        "document_column": "body",
                    }
                ],
            },
            **extra,
        }
    )


@pytest.fixture
async def transfer(pg_url: str) -> AsyncIterator[Transfer]:
    suffix = uuid.uuid4().hex[:8]
    mirror, source = f"{TABLE}_{suffix}", f"source_items_{suffix}"
    conn = await asyncpg.connect(pg_url)
    await conn.execute(
        f"CREATE TABLE {mirror} (tenant_id text, id text, doc jsonb, PRIMARY KEY (tenant_id, id));"
        f"CREATE TABLE {source} (account text, item text, body jsonb, PRIMARY KEY (account, item))"
    )
    await conn.close()
    settings = transfer_settings(pg_url, mirror, source)
    assert settings.old is not None
    state = DatabaseState(Side.OLD, settings.old, ["/items/{key}"])
    the_applier = PostgresApplier(settings, Side.NEW, state=state)
    await the_applier.start()
    try:
        yield Transfer(the_applier, mirror, source, pg_url)
    finally:
        await the_applier.close()
        conn = await asyncpg.connect(pg_url)
        await conn.execute(f"DROP TABLE {mirror}; DROP TABLE {source}")
        await conn.close()


async def test_state_transfer_writes_the_authoritative_row_not_the_body(
    transfer: Transfer, pg_url: str
) -> None:
    await transfer.authoritative("acme", "a", {"v": "final", "id": "a"})
    await transfer.authoritative("acme", "c", {"v": "still here", "id": "c"})
    await transfer.applier.apply_batch(
        [
            intent("acme", "PUT", "a", {"v": "stale: an earlier write that reached the stream last"}),
            intent("acme", "PUT", "b", {"v": "since deleted on old"}),
            intent("acme", "DELETE", "c"),  # re-created on old after this delete
            intent("globex", "PATCH", "a", {"v": 1}),  # nothing on old for globex
        ]
    )
    assert await rows(pg_url, transfer.mirror) == {
        ("acme", "a"): {"v": "final", "id": "a"},
        ("acme", "c"): {"v": "still here", "id": "c"},
    }


async def test_state_transfer_deletes_what_the_authoritative_side_no_longer_holds(
    transfer: Transfer, pg_url: str
) -> None:
    await transfer.authoritative("acme", "a", {"v": 1})
    await transfer.applier.apply_batch([intent("acme", "PUT", "a", {"v": 1})])
    await transfer.authoritative("acme", "a", None)
    await transfer.applier.apply_batch([intent("acme", "PUT", "a", {"v": 2})])  # its DELETE is still to come
    assert await rows(pg_url, transfer.mirror) == {}


async def test_a_create_transfers_the_row_the_authoritative_side_created(
    transfer: Transfer, pg_url: str
) -> None:
    await transfer.authoritative("acme", "old-7", {"id": "old-7", "name": "x"})
    created = Intent(
        tenant="acme",
        target=Side.NEW,
        method="POST",
        path="/items",
        query="",
        headers=(),
        body=b'{"name": "x"}',
        status=201,
        response_body=b'{"id": "old-7", "name": "x"}',
        response_headers=(("Location", "/items/old-7"),),
    )
    await transfer.applier.apply_batch([created])
    assert await rows(pg_url, transfer.mirror) == {("acme", "old-7"): {"id": "old-7", "name": "x"}}


async def test_a_late_delivery_under_state_transfer_changes_nothing(transfer: Transfer, pg_url: str) -> None:
    """A batch already applied comes again (a stalled worker, after the partition's new owner applied and
    acknowledged it): the ledger keeps it from copying old's state again, which after an authority switch
    would be the former authority's."""
    await transfer.authoritative("acme", "a", {"v": 1})
    batch = [intent("acme", "PUT", "a", {"v": 1})]
    await transfer.applier.apply_batch(batch)
    await transfer.authoritative("acme", "a", {"v": "old's, after new took over"})
    await transfer.applier.apply_batch(batch)
    await transfer.applier.apply_batch([intent("acme", "PATCH", "b", {}), *batch])  # partly applied
    assert (await rows(pg_url, transfer.mirror))[("acme", "a")] == {"v": 1}


async def test_state_transfer_with_sql_intents_in_the_batch(pg_url: str, transfer: Transfer) -> None:
    """A batch holding a SQL intent takes the intent-by-intent path: the rows still come from old."""
    settings = transfer_settings(pg_url, transfer.mirror, transfer.source)
    sql_settings = Settings.model_validate(
        {
            "backends": {
                "old": {"url": "http://old", "sql_dialect": "postgres"},
                "new": {"url": "http://new", "sql_dialect": "postgres"},
            },
            "sql": {"endpoints": [{"path": "/query"}]},
        }
    )
    assert settings.old is not None
    with_sql = PostgresApplier(
        settings,
        Side.NEW,
        sql=SqlIntents(sql_settings),
        state=DatabaseState(Side.OLD, settings.old, ["/items/{key}"]),
    )
    await with_sql.start()
    try:
        await transfer.authoritative("acme", "a", {"v": "old's"})
        statement = Intent(
            tenant="acme",
            target=Side.NEW,
            method="POST",
            path="/query",
            query="",
            headers=(),
            body=orjson.dumps(
                {
                    "sql": f"UPDATE {transfer.mirror} SET doc = doc || '{{\"sql\": 1}}' WHERE id = $1",
                    "params": ["a"],
                }
            ),
            status=200,
            response_body=b"{}",
        )
        await with_sql.apply_batch(
            [intent("acme", "PUT", "a", {"v": "body"}), statement, intent("acme", "DELETE", "z")]
        )
    finally:
        await with_sql.close()
    assert await rows(pg_url, transfer.mirror) == {("acme", "a"): {"v": "old's", "sql": 1}}


async def test_an_unreachable_source_applies_nothing_and_is_retried(pg_url: str, transfer: Transfer) -> None:
    down = transfer_settings(pg_url, transfer.mirror, transfer.source)
    assert down.old is not None
    source = down.old.model_copy(
        update={"url": SecretStr(f"postgresql://postgres@127.0.0.1:{free_port()}/x")}
    )
    blind = PostgresApplier(down, Side.NEW, state=DatabaseState(Side.OLD, source, ["/items/{key}"]))
    write = intent("acme", "PUT", "a", {"v": 1})
    await blind.start()  # the worker starts while old's database is down
    try:
        for _ in range(2):  # the mirror's transaction is rolled back each time, its connection reused
            with pytest.raises(
                UnreachableError, match="old database unreachable for the state-transfer read"
            ):
                await blind.apply_batch([write])
    finally:
        await blind.close()
    # Nothing applied, nothing in the ledger: once old answers, the intent applies.
    await transfer.authoritative("acme", "a", {"v": 2})
    await transfer.applier.apply_batch([write])
    assert await rows(pg_url, transfer.mirror) == {("acme", "a"): {"v": 2}}


def test_an_intent_toward_the_other_side_is_refused(pg_url: str) -> None:
    settings = transfer_settings(pg_url, "m", "s")
    toward_old = PostgresApplier(settings, Side.OLD)
    with pytest.raises(PermanentApplyError, match="an intent toward new reached the applier toward old"):
        toward_old._plan(intent("acme", "PUT", "a", {}))  # noqa: SLF001 - refused before any I/O


@dataclass
class StateBackend:
    """The authoritative side's backend as the HTTP state source sees it: canned answers per (tenant,
    path), and the headers of every request."""

    answers: dict[tuple[str, str], tuple[int, bytes]]
    seen: list[dict[str, str]]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.seen.append({"method": scope["method"], "path": scope["path"], **headers})
        status, body = self.answers.get((headers.get("x-tenant-id", ""), scope["path"]), (404, b"{}"))
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})


async def test_without_its_database_the_authoritative_state_is_read_over_http(
    applier: PostgresApplier, pg_url: str
) -> None:
    table = applier.table  # type: ignore[attr-defined]
    backend = StateBackend(
        {
            ("acme", "/items/a"): (200, b'{"v": "old\'s", "id": "a"}'),
            ("acme", "/items/odd"): (200, b'["not", "an", "object"]'),
            ("acme", "/items/busy"): (503, b"{}"),
        },
        [],
    )
    server = await start_server(backend_config(backend))
    settings = PostgresApplierSettings.model_validate(
        {"new": {"url": pg_url, "resources": [{"path": "/items/{key}", "table": table}]}}
    )
    old_backend = BackendSettings.model_validate(
        {"url": f"http://reader:pw@127.0.0.1:{server.port}", "headers": {"set": {"X-Side": "old"}}}
    )
    state = HttpState(Side.OLD, old_backend, ["/items/{key}"], tenant_header="X-Tenant-ID", timeout_s=5)
    over_http = PostgresApplier(settings, Side.NEW, state=state)
    await over_http.start()
    try:
        await applier.apply_batch([intent("acme", "PUT", "gone", {"v": 1})])  # on new, since deleted on old
        await over_http.apply_batch(
            [intent("acme", "PUT", "a", {"v": "body"}), intent("acme", "PUT", "gone", {"v": 2})]
        )
        assert await rows(pg_url, table) == {("acme", "a"): {"v": "old's", "id": "a"}}
        with pytest.raises(
            TransientApplyError, match="old answered 503 to the state-transfer read of /items/busy"
        ) as busy:
            await over_http.apply_batch([intent("acme", "PUT", "a", {}), intent("acme", "PUT", "busy", {})])
        assert (busy.value.status, busy.value.excerpt) == ("503", "{}")  # what a dead letter records
        with pytest.raises(PermanentApplyError, match="not a JSON object"):
            await over_http.apply_batch([intent("acme", "PUT", "odd", {})])
    finally:
        await over_http.close()
        await server.stop()
    reads = [r for r in backend.seen if r["method"] == "GET"]
    assert reads, "nothing was read over HTTP: the test proved nothing"
    # The shared backend client: old's credentials and header rewrites on every read.
    assert all(r["authorization"].startswith("Basic ") and r["x-side"] == "old" for r in reads)
    assert {r["path"] for r in reads} == {"/items/a", "/items/gone", "/items/busy", "/items/odd"}


async def test_a_database_error_names_its_sqlstate_and_the_servers_message(pg_url: str) -> None:
    """What a dead letter of the PostgreSQL applier records: the SQLSTATE as its status, the server's
    message as its excerpt (a statement timeout is transient, a data error permanent)."""
    conn = await asyncpg.connect(pg_url)
    try:
        caught: list[BaseException] = []
        for sql in ("SELECT 1 / 0", "SET statement_timeout = 1; SELECT pg_sleep(1)"):
            try:
                await conn.execute(sql)
            except asyncpg.PostgresError as exc:
                caught.append(exc)
    finally:
        await conn.close()
    write = intent("acme", "PUT", "a", {})
    data, timeout = (database_error(write, exc, "mirror database", "the batch") for exc in caught)
    assert isinstance(data, PermanentApplyError)
    assert not isinstance(timeout, PermanentApplyError)
    assert (data.status, data.excerpt, data.detail) == (
        "sqlstate 22012",
        "division by zero",
        "mirror database refused the batch (sqlstate 22012)",
    )
    assert timeout.status == "sqlstate 57014"
    assert timeout.excerpt == "canceling statement due to statement timeout"
