"""Re-copy differing keys from the authoritative side (old, while it takes writes first), through the
backfill's path: staging table, upsert, under the tenant's mirror lock, in one transaction. A key the old
side no longer has is deleted from new. Reading old after taking the lock keeps the repair from undoing
a mirrored write, exactly as for a backfill chunk (see `buffer_worker.mirror_lock`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from backfill.catalog import TablePlan, quote_ident
from backfill.copier import ChunkCopier, pipe_copy
from backfill.transform import RowFunction, apply_transform
from buffer_worker.mirror_lock import COPY_LOCK_SQL, lock_key

_BATCH = 5_000


@dataclass(frozen=True, slots=True)
class RepairResult:
    copied: int  # rows upserted from old (changed or inserted)
    deleted: int  # rows removed from new because old does not have them

    def as_json(self, keys: int) -> dict[str, object]:
        return {"from": "old", "keys": keys, "copied": self.copied, "deleted": self.deleted}


async def repair_keys(
    plan: TablePlan,
    tenant: str,
    old: asyncpg.Connection,
    new: asyncpg.Connection,
    keys: Sequence[tuple[str, ...]],
    transform: RowFunction | None,
) -> RepairResult:
    copier = ChunkCopier(plan, tenant, old, new, transform)
    await copier.prepare()
    staging = quote_ident(copier.staging)
    copied = deleted = 0
    for start in range(0, len(keys), _BATCH):
        batch = keys[start : start + _BATCH]
        async with new.transaction():
            await new.execute(COPY_LOCK_SQL, lock_key(tenant))
            await _fill(plan, tenant, old, new, copier.staging, batch, transform)
            status = await new.execute(plan.upsert_sql(staging))
            copied += int(status.rsplit(" ", 1)[-1])
            where, args = plan.new.keys_where(batch)
            key_columns = ", ".join([plan.new.tenant, *plan.new.key])
            status = await new.execute(
                f"DELETE FROM {plan.new.relation} WHERE {where}"
                f" AND ({key_columns}) NOT IN (SELECT {key_columns} FROM {staging})",
                tenant,
                *args,
            )
            deleted += int(status.rsplit(" ", 1)[-1])
    return RepairResult(copied, deleted)


async def _fill(
    plan: TablePlan,
    tenant: str,
    old: asyncpg.Connection,
    new: asyncpg.Connection,
    staging: str,
    keys: Sequence[tuple[str, ...]],
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
