"""One tuple of store failures for every caller: asyncpg's InternalClientError ("another operation is in
progress", seen at shutdown on a pooled connection) is a failed call wherever PostgreSQL is read, not only
in the heartbeat that first met it. Pure: no server is started (about 0.01 s)."""

from __future__ import annotations

import asyncpg

from proxy.admin.status_data import guarded


async def _store_busy() -> None:
    raise asyncpg.InternalClientError("cannot perform operation: another operation is in progress")


async def test_the_status_page_shows_a_busy_connection_as_the_store_unavailable() -> None:
    assert await guarded(_store_busy()) == {"error": "the phase store is unavailable (InternalClientError)"}
