"""State transfer for the PostgreSQL applier: a mirrored REST write sets the mirror's row to the key's
*current* state on the authoritative side (upserted, or deleted when absent there), not to the body the
write carried.

Why: replay applies writes in stream order, and the stream order of two writes of one key can differ
from the order the authoritative side committed them (each intent is appended after its write's
response came back, and two proxies, or two connections of one, race between the two). Replayed, the
earlier write can land last and the sides stay different for good.

Why this converges: every intent is appended after its write committed on the authoritative side, and
a partition is applied in stream order, one batch at a time, each batch reading the authoritative state
after it took the tenant's mirror lock. So the last batch that touches a key reads after every commit of
that key whose intent was appended before it; a commit whose intent comes later gets its own, later
read. After the buffer drains, every key written through the proxy equals its authoritative state.

Why the ledger stays: re-applying a state transfer is harmless only while the source is still the
authority. An intent that arrives late (a stalled worker's batch that the partition's new owner has
already applied and acknowledged, so the authority-switch barrier saw nothing pending) would copy the
former authority over the current one. The ledger turns it into a no-op. SQL intents, which are
replayed as statements, need it in any case.

Sources of the authoritative state, per direction: that side's database when `worker.postgres.<side>`
is configured (`DatabaseState`: one statement per batch for every table, each table read with its
key pairs), otherwise a GET of the resource's item path on that side's backend (`HttpState`).

Both hand the applier, per mirror table, the touched rows they found, each document as JSON text: the
applier writes those rows (and deletes the touched keys not found) with the same one-statement batch as
a replay (`pg_batch`); a document read from a database is passed on as text, never decoded in Python.
The database source costs one round trip per batch and, on the authoritative database, one index lookup
per touched key.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

import asyncpg
import orjson

from backends import BackendClient, BackendFailure
from backends.content import excerpt
from buffer_worker.apply_errors import PermanentApplyError, TransientApplyError, UnreachableError
from buffer_worker.intent import Intent
from buffer_worker.pg_errors import UNREACHABLE, database_error
from config.pg_applier import PostgresSide
from config.settings import BackendSettings
from routing.phases import Side

RowKey = tuple[str, str]  # (tenant, key)
_KEYS = "jsonb_to_recordset(${}::jsonb) AS {}(t text, k text)"


# Per mirror table (by index): the touched rows the authoritative side holds, as (tenant, key, document
# as JSON text). The text is passed on as it is, never decoded here.
Found = list[list[tuple[str, str, str]]]


class StateSource(Protocol):
    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def read(self, intents: Sequence[Intent], touched: Sequence[Sequence[RowKey]]) -> Found:
        """The current rows of the `touched` keys (per mirror table) that exist on the authoritative side.
        Raises `ApplyError`s naming the source; `intents` are the batch's."""
        ...


class DatabaseState:
    """The authoritative side's database, read with one statement per batch: per table, the rows whose
    (tenant, key) is in that table's list, found through the table's unique index."""

    def __init__(self, side: Side, source: PostgresSide, paths: Sequence[str]) -> None:
        """`paths`: the mirror's resources, in its table order."""
        self._side = side
        self._dsn = source.url.get_secret_value()
        selects = []
        for number, path in enumerate(paths):
            # The source's table is its resource of the same path (the settings check that every path is
            # mapped on both sides).
            r = source.resource(path)
            if r is None:
                raise ValueError(f"worker.postgres.{side.value} maps no resource for {path}")
            t, k, d = r.tenant_column, r.key_column, r.document_column
            selects.append(
                f"SELECT {number} AS r, s.{t}::text AS t, s.{k}::text AS k, s.{d}::text AS d FROM {r.table} s"
                f" WHERE (s.{t}, s.{k}) IN (SELECT q.t, q.k FROM {_KEYS.format(number + 1, 'q')})"
            )
        self._sql = " UNION ALL ".join(selects)
        self._count = len(paths)
        self._pool: asyncpg.Pool | None = None

    async def start(self) -> None:
        # No connection at start: a worker must start (and apply toward the other side, or retry) while
        # this database is down; a read then fails as unreachable and is retried.
        self._pool = await asyncpg.create_pool(self._dsn, min_size=0, max_size=4, reset=_nothing_to_reset)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()

    async def read(self, intents: Sequence[Intent], touched: Sequence[Sequence[RowKey]]) -> Found:
        assert self._pool is not None, "DatabaseState.start() was not awaited"
        arguments = [orjson.dumps([{"t": t, "k": k} for t, k in keys]).decode() for keys in touched]
        try:
            async with self._pool.acquire() as conn:
                records = await conn.fetch(self._sql, *arguments)
        except (*UNREACHABLE, asyncpg.PostgresError) as exc:
            raise database_error(
                intents[0], exc, f"{self._side} database", "the state-transfer read"
            ) from exc
        found: Found = [[] for _ in range(self._count)]
        for record in records:
            found[record[0]].append((record[1], record[2], record[3]))
        return found


class HttpState:
    """The authoritative side's backend, when its database is not configured (e.g. MariaDB): a GET of each
    touched key's item path (the resource's path with the key), at most `_READS_AT_ONCE` at a time,
    through the shared backend client, so it carries that side's credentials and header rewrites. 200
    with a JSON object: the row; 404/410: absent; any other answer is retried."""

    _READS_AT_ONCE = 32  # per batch; the backend client's own pool bounds the connections

    def __init__(
        self,
        side: Side,
        backend: BackendSettings,
        paths: Sequence[str],
        *,
        tenant_header: str,
        timeout_s: float,
    ) -> None:
        self._side = side
        self._client = BackendClient(side, backend)
        self._paths = [path.partition("{key}") for path in paths]
        self._tenant_header = tenant_header
        self._timeout_s = timeout_s

    async def start(self) -> None:
        await self._client.start()

    async def close(self) -> None:
        await self._client.close()

    async def read(self, intents: Sequence[Intent], touched: Sequence[Sequence[RowKey]]) -> Found:
        gate = asyncio.Semaphore(self._READS_AT_ONCE)
        intent = intents[0]  # named in errors (the batch fails or applies as a whole)

        async def one(table: int, tenant: str, key: str) -> tuple[str, str, str] | None:
            prefix, _, suffix = self._paths[table]
            path = f"{prefix}{key}{suffix}"
            async with gate:
                try:
                    answer = await self._client.call(
                        "GET", path, headers=[(self._tenant_header, tenant)], timeout_s=self._timeout_s
                    )
                except BackendFailure as exc:
                    if exc.kind == "invalid_request":
                        raise PermanentApplyError(intent, exc.detail, status=exc.kind) from exc
                    raise UnreachableError(
                        intent, f"{self._side} unreachable for state transfer: {exc.kind}", status=exc.kind
                    ) from exc
            if answer.status in (404, 410):
                return None
            if answer.status != 200:
                raise TransientApplyError(
                    intent,
                    f"{self._side} answered {answer.status} to the state-transfer read of {path}",
                    status=str(answer.status),
                    excerpt=excerpt(answer.body, answer.headers),
                )
            try:
                document = answer.json()
            except ValueError:
                document = None
            if not isinstance(document, dict):
                raise PermanentApplyError(
                    intent,
                    f"{self._side}'s answer to GET {path} is not a JSON object",
                    status="200",
                    excerpt=excerpt(answer.body, answer.headers),
                )
            return tenant, key, answer.body.decode()

        counts = [len(keys) for keys in touched]
        # Every read runs to its end (no orphan left running), then the first failure is raised.
        results = await asyncio.gather(
            *(one(table, tenant, key) for table, keys in enumerate(touched) for tenant, key in keys),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        found: Found = []
        start = 0
        for count in counts:
            found.append([row for row in results[start : start + count] if isinstance(row, tuple)])
            start += count
        return found


async def _nothing_to_reset(_conn: asyncpg.Connection) -> None:
    """Pool reset for connections that only ran the one read-only statement (no session state)."""
