"""Apply intents toward one side to that side's PostgreSQL database: one transaction per batch, idempotent
through a ledger of intents.

One applier serves one side (`target`): the worker's applier per side (`buffer_worker.side_appliers`)
hands it only the intents that name that side, and it refuses any other, so a write meant for old can
never land in new's database.

Each configured resource maps a REST path (`/items/{key}`) to a table keyed by (tenant, key) with the
JSON document in a jsonb column. With state transfer (`worker.postgres.state_transfer`, the default) a
write sets the row to the key's current state on the authoritative side, read under the tenant's mirror
lock (`buffer_worker.pg_state`); without it, the write's body is replayed: PUT/POST/PATCH upsert the row
(PATCH merges into the stored document), DELETE removes it. Every intent id goes into the ledger
`cutover_applied_intent` atomically with its effect, so a re-delivered batch, or a batch re-read after a
worker crash, changes nothing.

A batch is first tried as one statement (`pg_batch`: the batch collapsed to its final effect per row;
under state transfer, each touched row set to its authoritative state).
That is only right when no intent of it was applied before; the statement checks this and rolls itself
back otherwise, and the batch is then applied intent by intent in one transaction, skipping the intents
the ledger already holds. Either way the batch first takes its tenants' mirror locks
(`buffer_worker.mirror_lock`), so a backfill chunk in flight is never interleaved with mirrored writes.

Writes to a configured SQL endpoint (`sql.endpoints`) are not mapped to rows: the statements they carry
are executed as they are, transpiled to PostgreSQL when needed (`buffer_worker.sql_apply`), in the same
batch transaction and under the same ledger (always on the intent-by-intent path).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import msgspec
import orjson

from buffer_worker.apply_errors import ApplyError, PermanentApplyError, UnapplicableIntentError
from buffer_worker.intent import Intent
from buffer_worker.ledger import LEDGER_DDL, prune_or_log
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
from buffer_worker.pg_errors import UNREACHABLE, database_error
from buffer_worker.pg_state import RowKey, StateSource
from buffer_worker.sql_apply import SqlIntents, coerce
from common.periodic import Periodic
from config.pg_applier import PostgresApplierSettings, PostgresResource
from routing.phases import Side

# Creating the ledger and the check function from several workers at once races in the catalog: serialise.
_DDL_LOCK = "SELECT pg_advisory_xact_lock(hashtext('cutover_applier_ddl'))"
_PRUNE_INTERVAL_S = 600.0


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
        self,
        settings: PostgresApplierSettings,
        target: Side = Side.NEW,
        *,
        id_field: str = "id",
        sql: SqlIntents | None = None,
        state: StateSource | None = None,
    ) -> None:
        side = settings.side(target)
        if side is None:
            raise ValueError(f"worker.postgres.{target.value} is not configured")
        self._target = target
        self._dsn = side.url.get_secret_value()
        self._routes = [_route(resource) for resource in side.resources]
        tables = [Table(r.table, r.tenant_column, r.key_column, r.document_column) for r in side.resources]
        self._batch_sql = batch_statement(tables)
        self._state = state  # None: replay the write's body
        self._id_field = id_field
        self._sql = sql  # writes to SQL endpoints: executed as the statements they carry
        self._retention_s = settings.ledger_retention_h * 3600
        self._pool: asyncpg.Pool | None = None
        self._pruning: Periodic | None = None

    @property
    def target(self) -> Side:
        return self._target

    async def start(self) -> None:
        # Without mirrored SQL, a batch leaves nothing in the session (its locks are transaction-scoped),
        # so the pool's release need not send asyncpg's reset query: one round trip per batch less.
        # A transaction a cancelled batch left open is rolled back by the pool before `reset` either way.
        reset = None if self._sql is not None else _nothing_to_reset
        self._pool = await asyncpg.create_pool(self._dsn, min_size=1, max_size=4, reset=reset)
        if self._state is not None:
            await self._state.start()
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(_DDL_LOCK)
            await conn.execute(LEDGER_DDL)
            await conn.execute(REQUIRE_FRESH_DDL)
        if self._retention_s > 0:
            prune = functools.partial(prune_or_log, self._pool, self._retention_s)
            self._pruning = Periodic("ledger-pruning", _PRUNE_INTERVAL_S, prune)
            self._pruning.start()

    async def close(self) -> None:
        if self._pruning is not None:
            await self._pruning.stop()
        if self._pool is not None:
            await self._pool.close()
        if self._state is not None:
            await self._state.close()

    async def apply(self, intent: Intent) -> None:
        await self.apply_batch([intent])

    async def apply_batch(self, intents: Sequence[Intent]) -> None:
        """Apply all of `intents`, in order, atomically; raise (and apply none) if any cannot be."""
        assert self._pool is not None, "PostgresApplier.start() was not awaited"
        plans = [self._plan(intent) for intent in intents]
        writes = [plan for plan in plans if isinstance(plan, RowWrite)]
        try:
            async with self._pool.acquire() as conn:
                if len(writes) == len(plans):
                    collapsed = self._apply_collapsed if self._state is None else self._transfer_collapsed
                    if await collapsed(conn, intents, writes):
                        return
                await self._apply_in_order(conn, intents, plans)
        except (*UNREACHABLE, asyncpg.PostgresError) as exc:
            raise database_error(intents[0], exc, "mirror database", "the batch") from exc

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

    async def _transfer_collapsed(
        self, conn: asyncpg.Connection, intents: Sequence[Intent], writes: Sequence[RowWrite]
    ) -> bool:
        """The fast path under state transfer: the touched keys' current rows, read from the authoritative
        side once the locks are held, written by the batch statement (the keys not found there deleted).
        False when some intent was applied before (nothing changed then)."""
        assert self._state is not None
        touched = self._touched(writes)
        await conn.execute("BEGIN;" + applier_locks_sql(i.tenant for i in intents))
        try:
            found = await self._state.read(intents, touched)
            arguments = [orjson.dumps([i.intent_id for i in intents]).decode(), len(intents)]
            for keys, rows in zip(touched, found, strict=True):
                arguments += [_rows_json(rows), "[]", _deleted_json(keys, rows)]
            await conn.fetchval(self._batch_sql, *arguments)
        except (asyncpg.PostgresError, ApplyError) as exc:
            await conn.execute("ROLLBACK")
            if getattr(exc, "sqlstate", None) == STALE_SQLSTATE:
                return False
            raise
        await conn.execute("COMMIT")
        return True

    def _touched(self, writes: Sequence[RowWrite]) -> list[list[RowKey]]:
        """Per table, the (tenant, key) rows `writes` touch, each once."""
        touched: list[dict[RowKey, None]] = [{} for _ in self._routes]
        for write in writes:
            touched[write.table][(write.tenant, write.key)] = None
        return [list(keys) for keys in touched]

    async def _apply_in_order(
        self, conn: asyncpg.Connection, intents: Sequence[Intent], plans: Sequence[_Plan]
    ) -> None:
        """Intent by intent, in one transaction, skipping what the ledger holds already."""
        async with conn.transaction():
            await conn.execute(applier_locks_sql(intent.tenant for intent in intents))
            states = await self._states(intents, plans)
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
                statements = [self._statement(plan, states)] if isinstance(plan, RowWrite) else plan
                for sql, args in statements:
                    if run_sql is not None and sql != run_sql and run:
                        await _execute(conn, run_sql, run)
                        run = []
                    run_sql = sql
                    run.append(args)
            if run and run_sql is not None:
                await _execute(conn, run_sql, run)

    async def _states(
        self, intents: Sequence[Intent], plans: Sequence[_Plan]
    ) -> dict[tuple[int, str, str], str] | None:
        """Under state transfer, the current document (JSON text) of every row the batch's REST intents
        touch and the authoritative side holds, by (table, tenant, key); None when replaying."""
        writes = [plan for plan in plans if isinstance(plan, RowWrite)]
        if self._state is None or not writes:
            return None
        found = await self._state.read(intents, self._touched(writes))
        return {(table, t, k): document for table, rows in enumerate(found) for t, k, document in rows}

    def _plan(self, intent: Intent) -> _Plan:
        if intent.target is not self._target:
            # The per-side dispatch never does this; refusing it keeps any slip from writing the other
            # side's intent into this side's database.
            raise PermanentApplyError(
                intent, f"an intent toward {intent.target} reached the applier toward {self._target}"
            )
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
            if intent.method == "DELETE" or self._state is not None:  # state transfer reads no body
                return RowWrite(number, intent.tenant, key, intent.method, None)
            document = _document(intent.body, intent)
            document.setdefault(self._id_field, key)
            return RowWrite(number, intent.tenant, key, intent.method, document)
        if intent.method == "POST":
            created = _created_key(intent, self._id_field)
            if created is not None:
                return self._resolve(_as_put(intent, created))
        raise UnapplicableIntentError(intent, f"no postgres resource maps {intent.method} {intent.path}")

    def _statement(
        self, write: RowWrite, states: dict[tuple[int, str, str], str] | None
    ) -> tuple[_Sql, tuple[Any, ...]]:
        route = self._routes[write.table]
        if states is not None:
            current = states.get((write.table, write.tenant, write.key))
            if current is None:
                return _Sql(route.delete), (write.tenant, write.key)
            return _Sql(route.upsert), (write.tenant, write.key, current)
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


def _rows_json(rows: Sequence[tuple[str, str, str]]) -> str:
    """Found rows as the batch statement's set records; each document is JSON text already (jsonb's output
    on the source, or a body checked to be a JSON object) and is spliced in as it is, never decoded and
    encoded again."""
    dumps = orjson.dumps
    return (
        "["
        + ",".join(
            f'{{"t":{dumps(t).decode()},"k":{dumps(k).decode()},"d":{document}}}' for t, k, document in rows
        )
        + "]"
    )


def _deleted_json(touched: Sequence[RowKey], rows: Sequence[tuple[str, str, str]]) -> str:
    """The touched keys the authoritative side does not hold: deleted on the mirror."""
    found = {(t, k) for t, k, _document in rows}
    return orjson.dumps([{"t": t, "k": k} for t, k in touched if (t, k) not in found]).decode()


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
    """A create, as the PUT to the path the authoritative side gave the new resource; every other field
    (its id, trace context, the authoritative answer) is the create's."""
    return msgspec.structs.replace(intent, method="PUT", path=path)
