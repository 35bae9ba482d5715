"""Apply intents to a PostgreSQL mirror: one transaction per batch, idempotent through a ledger of intents.

Each configured resource maps a REST path (`/items/{key}`) to a table keyed by (tenant, key) with the
JSON body in a jsonb column. PUT/POST/PATCH upsert the row (PATCH merges into the stored document),
DELETE removes it. Every intent id goes into the ledger `cutover_applied_intent` atomically with its
effect, so a re-delivered batch, or a batch re-read after a worker crash, changes nothing.

A batch is first tried as one statement (`pg_batch`: the batch collapsed to its final effect per row).
That is only right when no intent of it was applied before; the statement checks this and rolls itself
back otherwise, and the batch is then applied intent by intent in one transaction, skipping the intents
the ledger already holds. Either way the batch first takes its tenants' mirror locks
(`buffer_worker.mirror_lock`), so a backfill chunk in flight is never interleaved with mirrored writes.

Writes to a configured SQL endpoint (`sql.endpoints`) are not mapped to rows: the statements they carry
are executed as they are, transpiled to PostgreSQL when needed (`buffer_worker.sql_apply`), in the same
batch transaction and under the same ledger (always on the intent-by-intent path).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from buffer_worker.apply_errors import (
    PermanentApplyError,
    TransientApplyError,
    UnapplicableIntentError,
    UnreachableError,
)
from buffer_worker.intent import Intent
from buffer_worker.ledger import LEDGER_DDL, prune_forever
from buffer_worker.mirror_lock import applier_locks_sql
from buffer_worker.pg_batch import (
    REQUIRE_FRESH_DDL,
    STALE_SQLSTATE,
    RowWrite,
    Table,
    batch_arguments,
    batch_statement,
    collapse,
)
from buffer_worker.sql_apply import SqlIntents, coerce
from config.settings import PostgresApplierSettings, PostgresResource

# Creating the ledger and the check function from several workers at once races in the catalog: serialise.
_DDL_LOCK = "SELECT pg_advisory_xact_lock(hashtext('cutover_applier_ddl'))"
_PRUNE_INTERVAL_S = 600.0
# SQLSTATE classes that retrying cannot fix: data exceptions, integrity violations, syntax/access rules.
_PERMANENT_CLASSES = ("22", "23", "42")


@dataclass(frozen=True, slots=True)
class _Route:
    pattern: re.Pattern[str]
    upsert: str
    merge: str
    delete: str


def _route(resource: PostgresResource) -> _Route:
    prefix, _, suffix = resource.path.partition("{key}")
    pattern = re.compile("^" + re.escape(prefix) + "(?P<key>[^/]+)" + re.escape(suffix) + "$")
    table, tenant, key, doc = (
        resource.table,
        resource.tenant_column,
        resource.key_column,
        resource.document_column,
    )
    return _Route(
        pattern=pattern,
        upsert=(
            f"INSERT INTO {table} ({tenant}, {key}, {doc}) VALUES ($1, $2, $3::jsonb)"
            f" ON CONFLICT ({tenant}, {key}) DO UPDATE SET {doc} = EXCLUDED.{doc}"
        ),
        merge=(
            f"INSERT INTO {table} ({tenant}, {key}, {doc}) VALUES ($1, $2, $3::jsonb)"
            f" ON CONFLICT ({tenant}, {key}) DO UPDATE SET {doc} = {table}.{doc} || EXCLUDED.{doc}"
        ),
        delete=f"DELETE FROM {table} WHERE {tenant} = $1 AND {key} = $2",
    )


class PostgresApplier:
    def __init__(
        self, settings: PostgresApplierSettings, *, id_field: str = "id", sql: SqlIntents | None = None
    ) -> None:
        self._dsn = settings.url.get_secret_value()
        self._routes = [_route(resource) for resource in settings.resources]
        self._batch_sql = batch_statement(
            [Table(r.table, r.tenant_column, r.key_column, r.document_column) for r in settings.resources]
        )
        self._id_field = id_field
        self._sql = sql  # writes to SQL endpoints: executed as the statements they carry
        self._retention_s = settings.ledger_retention_h * 3600
        self._pool: asyncpg.Pool | None = None
        self._pruning: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # Without mirrored SQL, a batch leaves nothing in the session (its locks are transaction-scoped),
        # so the pool's release need not send asyncpg's reset query: one round trip per batch less.
        # A transaction a cancelled batch left open is rolled back by the pool before `reset` either way.
        reset = None if self._sql is not None else _nothing_to_reset
        self._pool = await asyncpg.create_pool(self._dsn, min_size=1, max_size=4, reset=reset)
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(_DDL_LOCK)
            await conn.execute(LEDGER_DDL)
            await conn.execute(REQUIRE_FRESH_DDL)
        if self._retention_s > 0:
            self._pruning = asyncio.create_task(
                prune_forever(self._pool, self._retention_s, _PRUNE_INTERVAL_S), name="ledger-pruning"
            )

    async def close(self) -> None:
        if self._pruning is not None:
            self._pruning.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pruning
        if self._pool is not None:
            await self._pool.close()

    async def apply(self, intent: Intent) -> None:
        await self.apply_batch([intent])

    async def apply_batch(self, intents: Sequence[Intent]) -> None:
        """Apply all of `intents`, in order, atomically; raise (and apply none) if any cannot be."""
        assert self._pool is not None, "PostgresApplier.start() was not awaited"
        plans = [self._plan(intent) for intent in intents]
        writes = [plan for plan in plans if isinstance(plan, RowWrite)]
        try:
            async with self._pool.acquire() as conn:
                if len(writes) == len(plans) and await self._apply_collapsed(conn, intents, writes):
                    return
                await self._apply_in_order(conn, intents, plans)
        except (OSError, asyncpg.InterfaceError, asyncpg.CannotConnectNowError) as exc:
            raise UnreachableError(intents[0], f"mirror database unreachable: {type(exc).__name__}") from exc
        except asyncpg.PostgresError as exc:
            sqlstate = getattr(exc, "sqlstate", "") or ""
            detail = f"mirror database refused the batch: {sqlstate} {exc}"
            if sqlstate[:2] in _PERMANENT_CLASSES:
                raise PermanentApplyError(intents[0], detail) from exc
            raise TransientApplyError(intents[0], detail) from exc

    async def _apply_collapsed(
        self, conn: asyncpg.Connection, intents: Sequence[Intent], writes: Sequence[RowWrite]
    ) -> bool:
        """The fast path: the whole batch in one statement. False when some intent was applied before
        (nothing changed then); errors of the batch itself propagate."""
        arguments = batch_arguments([i.intent_id for i in intents], collapse(writes), len(self._routes))
        # BEGIN and the locks in one simple-protocol round trip; the batch statement must run after the
        # locks are held (its snapshot then includes any backfill chunk that held them), so it is a
        # statement of its own; then COMMIT. A cancelled or broken connection is rolled back by the
        # pool when it is released.
        await conn.execute("BEGIN;" + applier_locks_sql(i.tenant for i in intents))
        try:
            await conn.fetchval(self._batch_sql, *arguments)
        except asyncpg.PostgresError as exc:
            await conn.execute("ROLLBACK")
            if getattr(exc, "sqlstate", None) == STALE_SQLSTATE:
                return False
            raise
        await conn.execute("COMMIT")
        return True

    async def _apply_in_order(
        self, conn: asyncpg.Connection, intents: Sequence[Intent], plans: Sequence[_Plan]
    ) -> None:
        """Intent by intent, in one transaction, skipping what the ledger holds already."""
        async with conn.transaction():
            await conn.execute(applier_locks_sql(intent.tenant for intent in intents))
            fresh = {
                row["intent_id"]
                for row in await conn.fetch(
                    "INSERT INTO cutover_applied_intent (intent_id) SELECT unnest($1::text[])"
                    " ON CONFLICT DO NOTHING RETURNING intent_id",
                    [intent.intent_id for intent in intents],
                )
            }
            # Consecutive statements of one kind go in one executemany; order is kept throughout.
            run: list[tuple[Any, ...]] = []
            run_sql: _Sql | None = None
            for intent, plan in zip(intents, plans, strict=True):
                if intent.intent_id not in fresh:
                    continue
                # An intent twice in one batch (an append that was sent again) applies once.
                fresh.discard(intent.intent_id)
                for sql, args in [self._statement(plan)] if isinstance(plan, RowWrite) else plan:
                    if run_sql is not None and sql != run_sql and run:
                        await _execute(conn, run_sql, run)
                        run = []
                    run_sql = sql
                    run.append(args)
            if run and run_sql is not None:
                await _execute(conn, run_sql, run)

    def _plan(self, intent: Intent) -> _Plan:
        if self._sql is not None and self._sql.matches(intent):
            return [(_Sql(text, typed=True), args) for text, args in self._sql.statements(intent)]
        return self._resolve(intent)

    def _resolve(self, intent: Intent) -> RowWrite:
        """The row `intent` writes and how; a write no resource maps is an error no retry can fix."""
        for number, route in enumerate(self._routes):
            match = route.pattern.match(intent.path)
            if match is None:
                continue
            key = match.group("key")
            if intent.method == "DELETE":
                return RowWrite(number, intent.tenant, key, "DELETE", None)
            document = _document(intent.body, intent)
            document.setdefault(self._id_field, key)
            return RowWrite(number, intent.tenant, key, intent.method, document)
        if intent.method == "POST":
            created = _created_key(intent, self._id_field)
            if created is not None:
                return self._resolve(_as_put(intent, created))
        raise UnapplicableIntentError(intent, f"no postgres resource maps {intent.method} {intent.path}")

    def _statement(self, write: RowWrite) -> tuple[_Sql, tuple[Any, ...]]:
        route = self._routes[write.table]
        if write.method == "DELETE":
            return _Sql(route.delete), (write.tenant, write.key)
        sql = route.merge if write.method == "PATCH" else route.upsert
        return _Sql(sql), (write.tenant, write.key, orjson.dumps(write.document).decode())


@dataclass(frozen=True, slots=True)
class _Sql:
    text: str
    typed: bool = False  # a mirrored SQL statement: its JSON arguments are converted to the inferred types


# What one intent does: a row write (REST resources), or the SQL statements it carries.
_Plan = RowWrite | list[tuple[_Sql, tuple[Any, ...]]]


async def _execute(conn: asyncpg.Connection, sql: _Sql, run: list[tuple[Any, ...]]) -> None:
    if not sql.typed:
        await conn.executemany(sql.text, run)
        return
    statement = await conn.prepare(sql.text)
    types = [parameter.name for parameter in statement.get_parameters()]
    await statement.executemany([coerce(args, types) for args in run])


async def _nothing_to_reset(_conn: asyncpg.Connection) -> None:
    """Pool reset for connections that only ran the applier's own statements."""


def _document(body: bytes, intent: Intent) -> dict[str, Any]:
    try:
        document = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError:
        raise UnapplicableIntentError(intent, "the write's body is not JSON") from None
    if not isinstance(document, dict):
        raise UnapplicableIntentError(intent, "the write's body is not a JSON object")
    return document


def _created_key(intent: Intent, id_field: str) -> str | None:
    for name, value in intent.response_headers:
        if name.lower() == "location" and value.startswith("/"):
            return value
    try:
        response = orjson.loads(intent.response_body) if intent.response_body else None
    except orjson.JSONDecodeError:
        return None
    if isinstance(response, dict) and response.get(id_field) is not None:
        return f"{intent.path.rstrip('/')}/{response[id_field]}"
    return None


def _as_put(intent: Intent, path: str) -> Intent:
    """A create, as the PUT to the path the authoritative side gave the new resource."""
    return Intent(
        tenant=intent.tenant,
        target=intent.target,
        method="PUT",
        path=path,
        query=intent.query,
        headers=intent.headers,
        body=intent.body,
        status=intent.status,
        response_body=intent.response_body,
        intent_id=intent.intent_id,
        created_ms=intent.created_ms,
    )
