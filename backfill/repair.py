"""Re-copy differing keys from the authoritative side through the backfill's path: staging table, upsert,
and delete of the keys the authoritative side does not have, one transaction per batch on the repaired
side, under the tenant's mirror lock.

From old (up to shadow), rows go old → new exactly as a backfill chunk copies them (transform included).
From new (live, rampdown), they go back to old through the column mapping (`backfill.inverse`).

Either way the lock is taken in the *repaired* database, which is the one the PostgreSQL applier writes
mirrored writes to (new up to shadow, old from live on), before the authoritative side is read. Every
mirrored write the applier committed there was acknowledged by the authoritative side first, so the read
already has it (or something newer); every later one waits for the batch to commit and lands on top. So
the repair never undoes a mirrored write (see `buffer_worker.mirror_lock`), and its upsert may overwrite
whatever differs: under the lock the authoritative row is at least as new as the mirror's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

import asyncpg

from backfill.catalog import SideShape, TablePlan, quote_ident
from backfill.copier import ChunkCopier, pipe_copy
from backfill.inverse import InversePlan, resolve_inverse
from backfill.transform import RowFunction, apply_transform
from buffer_worker.mirror_lock import COPY_LOCK_SQL, lock_key
from routing.phases import Side

Key = tuple[str, ...]
_BATCH = 5_000


# Why a key the verification found was left as it was (`SkippedKey.reason`).
PENDING_INTENTS = "pending_intents"  # its intents were still in the buffer: the worker applies them
CHANGED_DURING_VERIFY = "changed_during_verify"  # differed, then was equal when compared again
SIDE_UNREACHABLE = "side_unreachable"  # REST: a side gave no answer to the transfer
TRANSFER_FAILED = "transfer_failed"  # REST: a side answered the transfer with an error


@dataclass(frozen=True, slots=True)
class SkippedKey:
    key: tuple[str, ...]
    reason: str
    detail: str

    def as_json(self) -> dict[str, object]:
        return {"key": list(self.key), "reason": self.reason, "detail": self.detail}


def left_to_verification(
    unsettled: Iterable[tuple[str, ...]], changed: Iterable[tuple[str, ...]]
) -> list[SkippedKey]:
    """The keys a repair leaves out because the verification did not report them as differing."""
    pending = "intents for it were still pending in the buffer: the worker applies them; verify again"
    equal = "differed when first compared, equal when compared again (written meanwhile): nothing to repair"
    return [SkippedKey(key, PENDING_INTENTS, pending) for key in sorted(unsettled)] + [
        SkippedKey(key, CHANGED_DURING_VERIFY, equal) for key in sorted(changed)
    ]


@dataclass(frozen=True, slots=True)
class RepairResult:
    source: Side  # the authoritative side the rows were read from
    copied: int  # rows upserted on the other side (changed or inserted)
    deleted: int  # rows removed from the other side because the source does not have them
    failed: int = 0  # keys left as they were (REST: the transfer failed; a database error aborts instead)
    skipped: tuple[SkippedKey, ...] = ()  # every key found but not repaired, with why

    def as_json(self, keys: int, before: dict[str, int], *, max_keys: int = 10_000) -> dict[str, object]:
        """The report's `repair` entry; `before`: the counts of the verification that found the keys.
        `skipped` lists up to `max_keys` of the keys left as they were, `skipped_counts` counts them all
        by reason."""
        counts: dict[str, int] = {}
        for item in self.skipped:
            counts[item.reason] = counts.get(item.reason, 0) + 1
        return {
            "from": self.source.value,
            "keys": keys,
            "copied": self.copied,
            "deleted": self.deleted,
            "failed": self.failed,
            "skipped": [item.as_json() for item in self.skipped[:max_keys]],
            "skipped_counts": counts,
            "before": before,
        }


def refused_json(source: Side, keys: int, detail: str) -> dict[str, object]:
    """The report's `repair` entry of a table or resource that cannot be repaired from `source`."""
    return {"from": source.value, "keys": keys, "refused": detail}


async def repair_keys(
    plan: TablePlan,
    tenant: str,
    source: Side,
    old: asyncpg.Connection,
    new: asyncpg.Connection,
    keys: Sequence[Key],
    transform: RowFunction | None,
) -> RepairResult:
    """Make `keys` (new-side keys) on the side other than `source` equal to `source`. Raises
    `RepairRefusedError` (before writing anything) when the table cannot be repaired in that direction."""
    if source is Side.OLD:
        copier = ChunkCopier(plan, tenant, old, new, transform)
        await copier.prepare()

        async def fill_new(batch: Sequence[Key]) -> None:
            await _fill_new(plan, tenant, old, new, copier.staging, batch, transform)

        upsert = plan.upsert_sql(quote_ident(copier.staging))
        copied, deleted = await _batches(new, plan.new, tenant, keys, copier.staging, fill_new, upsert)
        return RepairResult(source, copied, deleted)
    inverse = await resolve_inverse(plan, old)
    staging = f"cutover_repair_{plan.name}"
    # Temporary and emptied at every commit, like the backfill's staging table on new.
    await old.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {quote_ident(staging)} ON COMMIT DELETE ROWS AS"
        f" SELECT {inverse.quoted_columns} FROM {plan.old.relation} WITH NO DATA"
    )

    async def fill_old(batch: Sequence[Key]) -> None:
        await _fill_old(inverse, tenant, new, old, staging, batch)

    upsert = inverse.upsert_sql(quote_ident(staging))
    copied, deleted = await _batches(old, plan.old, tenant, keys, staging, fill_old, upsert)
    return RepairResult(source, copied, deleted)


async def _batches(
    target: asyncpg.Connection,
    shape: SideShape,
    tenant: str,
    keys: Sequence[Key],
    staging: str,
    fill: Callable[[Sequence[Key]], Awaitable[None]],
    upsert: str,
) -> tuple[int, int]:
    """Per batch, in one transaction on `target`: lock, fill staging from the source, upsert, delete the
    batch's keys staging does not hold. Rows (copied, deleted)."""
    copied = deleted = 0
    key_columns = ", ".join([shape.tenant, *shape.key])
    for start in range(0, len(keys), _BATCH):
        batch = keys[start : start + _BATCH]
        async with target.transaction():
            await target.execute(COPY_LOCK_SQL, lock_key(tenant))
            await fill(batch)  # reads the source only now, under the lock
            copied += _rows(await target.execute(upsert))
            where, args = shape.keys_where(batch)
            status = await target.execute(
                f"DELETE FROM {shape.relation} WHERE {where}"
                f" AND ({key_columns}) NOT IN (SELECT {key_columns} FROM {quote_ident(staging)})",
                tenant,
                *args,
            )
            deleted += _rows(status)
    return copied, deleted


def _rows(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


async def _fill_new(
    plan: TablePlan,
    tenant: str,
    old: asyncpg.Connection,
    new: asyncpg.Connection,
    staging: str,
    keys: Sequence[Key],
    transform: RowFunction | None,
) -> None:
    # The keys are new-side keys; they are looked up through the old key columns they map from (a
    # transform is expected to keep keys as they are).
    where, args = plan.old.keys_where(keys)
    if transform is None:
        query = f"SELECT {plan.old_select()} FROM {plan.old.relation} WHERE {where}"
        await pipe_copy(old, query, [tenant, *args], new, staging, plan.columns)
        return
    rows = await old.fetch(f"SELECT * FROM {plan.old.relation} WHERE {where}", tenant, *args)
    records = apply_transform(plan.name, transform, rows, plan.columns)
    await new.copy_records_to_table(staging, records=records, columns=list(plan.columns))


async def _fill_old(
    inverse: InversePlan,
    tenant: str,
    new: asyncpg.Connection,
    old: asyncpg.Connection,
    staging: str,
    keys: Sequence[Key],
) -> None:
    plan = inverse.plan
    where, args = plan.new.keys_where(keys)
    query = f"SELECT {inverse.new_select()} FROM {plan.new.relation} WHERE {where}"
    await pipe_copy(new, query, [tenant, *args], old, staging, inverse.columns)
