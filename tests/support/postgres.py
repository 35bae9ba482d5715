"""Throw-away PostgreSQL databases on the shared server."""

from __future__ import annotations

import uuid

import asyncpg

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
