"""Throw-away PostgreSQL databases on the shared server."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg

from tests.support.waits import wait_for

PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def database_url(name: str) -> str:
    return f"postgresql://postgres@127.0.0.1:5432/{name}"


async def create_database(label: str) -> str:
    """Create a database named `<label>_<random>`; return its name."""
    name = f"{label}_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name


async def drop_database(name: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        try:  # a test may have closed it to connections
            await conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        except asyncpg.InvalidCatalogNameError:
            return
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def wait_for_lock_waiter(url: str, task: asyncio.Task[Any], what: str) -> None:
    """Wait until some session of the database at `url` waits for an advisory lock, which `task` (still
    running) is expected to be: fails with `what` if it finishes first or nothing waits within 10 s."""
    conn = await asyncpg.connect(url)
    try:

        def running() -> None:
            assert not task.done(), f"{what}: it finished instead"

        async def waiting() -> bool:
            return bool(
                await conn.fetchval(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                )
            )

        await wait_for(waiting, what, timeout_s=10, still_valid=running)
    finally:
        await conn.close()
