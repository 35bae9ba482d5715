"""Throw-away PostgreSQL databases on the shared server."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
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


@dataclass
class SessionDatabases:
    """The test session's databases: created when a fixture asks, dropped together when the session ends.
    Each DROP DATABASE waits for a checkpoint (a second or more on a busy server); drops made at once
    share one."""

    names: list[str] = field(default_factory=list)

    async def create(self, label: str) -> str:
        name = await create_database(label)
        self.names.append(name)
        return name

    async def drop_all(self) -> None:
        names, self.names = self.names, []
        await asyncio.gather(*(drop_database(name) for name in names))


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
