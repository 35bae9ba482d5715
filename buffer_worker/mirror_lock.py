"""The per-tenant lock that keeps a bulk copy and the PostgreSQL applier from interleaving.

Both take a transaction-scoped advisory lock in the mirror database, keyed by (namespace, hashtext(tenant)):
the applier exclusively, around each batch; a backfill chunk shared (chunks do not exclude each other),
from before it reads the source rows until it commits. Every write the applier has committed was
acknowledged by the authoritative side first, so a chunk that reads the authoritative side after taking
the lock already sees it; every write applied later waits for the chunk to commit and lands on top. A
chunk may therefore rewrite a row the buffer wrote, but only with a value at least as new, and a
mirrored delete is never undone. Hash collisions between tenants only cost waiting.
"""

from __future__ import annotations

MIRROR_LOCK_NAMESPACE = 0x6375_7401  # any fixed int4: keeps these locks apart from other advisory locks

# $1: the batch's tenants. Taken in hash order, so two batches never wait on each other in a cycle.
APPLIER_LOCK_SQL = (
    f"SELECT pg_advisory_xact_lock({MIRROR_LOCK_NAMESPACE}, h)"
    " FROM (SELECT DISTINCT hashtext(t) AS h FROM unnest($1::text[]) AS t ORDER BY h) AS locks"
)
# $1: the tenant being copied.
COPY_LOCK_SQL = f"SELECT pg_advisory_xact_lock_shared({MIRROR_LOCK_NAMESPACE}, hashtext($1::text))"
