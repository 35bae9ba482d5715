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
from redis.exceptions import RedisError

PG_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)
REDIS_ERRORS: tuple[type[Exception], ...] = (RedisError, OSError)
STORE_ERRORS: tuple[type[Exception], ...] = (*PG_ERRORS, TimeoutError)
BUFFER_ERRORS: tuple[type[Exception], ...] = (*REDIS_ERRORS, TimeoutError)
