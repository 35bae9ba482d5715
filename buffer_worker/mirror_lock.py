"""The per-tenant lock that keeps a bulk copy and the PostgreSQL applier from interleaving.

Both take a transaction-scoped advisory lock in the mirror database, keyed by (namespace, lock_key(tenant)):
the applier exclusively, around each batch; a backfill chunk shared (chunks do not exclude each other),
from before it reads the source rows until it commits. Every write the applier has committed was
acknowledged by the authoritative side first, so a chunk that reads the authoritative side after taking
the lock already sees it; every write applied later waits for the chunk to commit and lands on top. A
chunk may therefore rewrite a row the buffer wrote, but only with a value at least as new, and a
mirrored delete is never undone. Hash collisions between tenants only cost waiting.

The key is computed here, not by the server (`hashtext`), so the applier can send its locks as integer
literals together with its BEGIN in one round trip.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

MIRROR_LOCK_NAMESPACE = 0x6375_7401  # any fixed int4: keeps these locks apart from other advisory locks

# $1: lock_key(tenant being copied).
COPY_LOCK_SQL = f"SELECT pg_advisory_xact_lock_shared({MIRROR_LOCK_NAMESPACE}, $1::int4)"


def lock_key(tenant: str) -> int:
    """The tenant's lock key: crc32 of its id as a signed int4 (what pg_advisory_xact_lock takes)."""
    key = zlib.crc32(tenant.encode())
    return key - (1 << 32) if key >= 1 << 31 else key


def applier_locks_sql(tenants: Iterable[str]) -> str:
    """Statements taking the batch's tenant locks exclusively, in key order, so two batches never wait
    on each other in a cycle. Integer literals only: safe to send as a simple (multi-statement) query."""
    keys = sorted({lock_key(tenant) for tenant in tenants})
    return "".join(f"SELECT pg_advisory_xact_lock({MIRROR_LOCK_NAMESPACE}, {key});" for key in keys)
