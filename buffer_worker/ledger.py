"""The PostgreSQL applier's ledger of applied intent ids, and its pruning.

Every id is written in the transaction that applies the intent, so an intent delivered again (a batch
re-read after a crash) or appended again (a proxy's spool re-sending an append whose answer it never got)
changes nothing. An intent can come back only while it can still be in the buffer: pending in a stream or
held in a proxy's spool. Ids older than that are dead weight that grows with every write, so they are
deleted after `ledger_retention_h` (default 7 days; 0 keeps them). Rows arrive in time order, so a BRIN
index on `applied_at` finds the old ones while costing inserts almost nothing, unlike a b-tree.
"""

from __future__ import annotations

import logging

import asyncpg

from common.store_errors import PG_ERRORS

LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS cutover_applied_intent (
    intent_id   text PRIMARY KEY,
    applied_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS cutover_applied_intent_applied_at ON cutover_applied_intent USING brin (applied_at)
"""

# Bounded deletes, so pruning a large backlog never holds many row locks or one long transaction.
_PRUNE_SQL = """
DELETE FROM cutover_applied_intent WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM cutover_applied_intent WHERE applied_at < now() - make_interval(secs => $1) LIMIT $2
))
"""
_CHUNK = 10_000

log = logging.getLogger("cutover.worker")


async def prune_ledger(pool: asyncpg.Pool, retention_s: float, *, chunk: int = _CHUNK) -> int:
    """Delete the ids applied more than `retention_s` ago; how many."""
    deleted = 0
    while True:
        async with pool.acquire() as conn:
            status = await conn.execute(_PRUNE_SQL, retention_s, chunk)
        count = int(status.rsplit(" ", 1)[-1])
        deleted += count
        if count < chunk:
            return deleted


async def prune_or_log(pool: asyncpg.Pool, retention_s: float) -> None:
    """`prune_ledger` run periodically: a failure is logged and waits for the next run."""
    try:
        deleted = await prune_ledger(pool, retention_s)
    except PG_ERRORS as exc:
        log.warning("ledger pruning failed (%s); trying again at the next interval", type(exc).__name__)
        return
    if deleted:
        log.info("pruned %d applied-intent ids older than %.0f h", deleted, retention_s / 3600)
