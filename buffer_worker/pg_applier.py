"""Apply intents to a PostgreSQL mirror: one transaction per batch, idempotent through a ledger of intents.

Each configured resource maps a REST path (`/items/{key}`) to a table keyed by (tenant, key) with the
JSON body in a jsonb column. PUT/POST/PATCH upsert the row (PATCH merges into the stored document),
DELETE removes it. The batch's intent ids go into `cutover_applied_intent` first, in the same
transaction; only the ids that insert (were never applied) are applied, so a re-delivered batch, or a
batch re-read after a worker crash, changes nothing. Each batch first takes its tenants' mirror locks
(`buffer_worker.mirror_lock`), so a backfill chunk in flight is never interleaved with mirrored writes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from buffer_worker.http_applier import PermanentApplyError, TransientApplyError, UnreachableError
from buffer_worker.intent import Intent
from buffer_worker.mirror_lock import APPLIER_LOCK_SQL
from config.settings import PostgresApplierSettings, PostgresResource

LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS cutover_applied_intent (
    intent_id   text PRIMARY KEY,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""
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
    def __init__(self, settings: PostgresApplierSettings, *, id_field: str = "id") -> None:
        self._dsn = settings.url.get_secret_value()
        self._routes = [_route(resource) for resource in settings.resources]
        self._id_field = id_field
        self._pool: asyncpg.Pool | None = None

    async def start(self) -> None:
        self._pool = await asyncpg.create_pool(self._dsn, min_size=1, max_size=4)
        await self._pool.execute(LEDGER_DDL)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()

    async def apply(self, intent: Intent) -> None:
        await self.apply_batch([intent])

    async def apply_batch(self, intents: Sequence[Intent]) -> None:
        """Apply all of `intents`, in order, atomically; raise (and apply none) if any cannot be."""
        assert self._pool is not None, "PostgresApplier.start() was not awaited"
        statements = [self._statement(intent) for intent in intents]
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute(APPLIER_LOCK_SQL, sorted({intent.tenant for intent in intents}))
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
                run_sql: str | None = None
                for intent, (sql, args) in zip(intents, statements, strict=True):
                    if intent.intent_id not in fresh or sql is None:
                        continue
                    if sql != run_sql and run:
                        await conn.executemany(run_sql, run)
                        run = []
                    run_sql = sql
                    run.append(args)
                if run and run_sql is not None:
                    await conn.executemany(run_sql, run)
        except (OSError, asyncpg.InterfaceError, asyncpg.CannotConnectNowError) as exc:
            raise UnreachableError(intents[0], f"mirror database unreachable: {type(exc).__name__}") from exc
        except asyncpg.PostgresError as exc:
            sqlstate = getattr(exc, "sqlstate", "") or ""
            detail = f"mirror database refused the batch: {sqlstate} {exc}"
            if sqlstate[:2] in _PERMANENT_CLASSES:
                raise PermanentApplyError(intents[0], detail) from exc
            raise TransientApplyError(intents[0], detail) from exc

    def _statement(self, intent: Intent) -> tuple[str | None, tuple[Any, ...]]:
        for route in self._routes:
            match = route.pattern.match(intent.path)
            if match is None:
                continue
            key = match.group("key")
            if intent.method == "DELETE":
                return route.delete, (intent.tenant, key)
            document = _document(intent.body, intent)
            document.setdefault(self._id_field, key)
            sql = route.merge if intent.method == "PATCH" else route.upsert
            return sql, (intent.tenant, key, orjson.dumps(document).decode())
        if intent.method == "POST":
            created = _created_key(intent, self._id_field)
            if created is not None:
                return self._statement(_as_put(intent, created))
        raise PermanentApplyError(intent, f"no postgres resource maps {intent.method} {intent.path}")


def _document(body: bytes, intent: Intent) -> dict[str, Any]:
    try:
        document = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError:
        raise PermanentApplyError(intent, "the write's body is not JSON") from None
    if not isinstance(document, dict):
        raise PermanentApplyError(intent, "the write's body is not a JSON object")
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
