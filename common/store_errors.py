"""The exceptions that mean a store did not answer, so a caller degrades (a 503, a skipped beat, a retry)
instead of failing: one definition, so a class added for one caller is caught by all of them.

PG_ERRORS       PostgreSQL unreachable (OSError, asyncpg.InterfaceError) or refusing (PostgresError);
                InternalClientError is asyncpg's "another operation is in progress", seen at shutdown on a
                pooled connection: the next attempt gets another connection, so it is a failed call too.
REDIS_ERRORS    Redis unreachable or refusing (redis-py raises RedisError, the socket layer OSError).
STORE_ERRORS    PG_ERRORS of a call bounded by a timeout (`asyncio.timeout`, a pool's acquire timeout).
BUFFER_ERRORS   REDIS_ERRORS of a call bounded by a timeout.
"""

from __future__ import annotations

import asyncpg

PG_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)
STORE_ERRORS: tuple[type[Exception], ...] = (*PG_ERRORS, TimeoutError)


def __getattr__(name: str) -> tuple[type[Exception], ...]:
    """REDIS_ERRORS and BUFFER_ERRORS, made on first use: importing redis costs some 0.2 s of CPU, and
    the shadow process (started with every serving process, and again after each restart) needs only
    the PostgreSQL ones."""
    if name not in ("REDIS_ERRORS", "BUFFER_ERRORS"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from redis.exceptions import RedisError  # lazy: redis, for the callers of the Redis tuples only

    redis_errors: tuple[type[Exception], ...] = (RedisError, OSError)
    globals().update(REDIS_ERRORS=redis_errors, BUFFER_ERRORS=(*redis_errors, TimeoutError))
    return globals()[name]  # type: ignore[no-any-return]
