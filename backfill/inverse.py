"""How rows of new are written back to old, for a repair while new is authoritative.

The backfill maps old → new through the table's column mapping (`columns`, new column → old column, the
tenant column to old's tenant column) or through a transform. The mapping runs backwards: every copied
new column goes to the old column it is copied from, cast to that column's type. A transform does not: it
is a Python function old row → new row with no inverse, so its table is refused. Old columns that no new
column maps to are left as they are on an update and take their defaults on an insert.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from backfill.catalog import (
    TablePlan,
    has_unique_key,
    old_source,
    quote_ident,
    table_columns,
    unbounded_type,
    upsert_sql,
)
from backfill.digest import exact_equality
from backfill.errors import RepairRefusedError


@dataclass(frozen=True, slots=True)
class InversePlan:
    plan: TablePlan
    columns: tuple[str, ...]  # old columns written, unquoted: columns[i] is where plan.columns[i] goes
    new_exprs: tuple[str, ...]  # per column: a new-side expression of the old column's type
    identity_always: bool
    text_compared: frozenset[str]  # old columns compared by their text (see `TablePlan.text_compared`)

    @property
    def quoted_columns(self) -> str:
        return ", ".join(quote_ident(c) for c in self.columns)

    def new_select(self) -> str:
        pairs = zip(self.new_exprs, self.columns, strict=True)
        return ", ".join(f"{expr} AS {quote_ident(column)}" for expr, column in pairs)

    def upsert_sql(self, staging: str) -> str:
        old = self.plan.old
        return upsert_sql(
            old.relation,
            self.columns,
            (old.tenant, *old.key),
            staging,
            identity_always=self.identity_always,
            text_compared=self.text_compared,
        )


async def resolve_inverse(plan: TablePlan, old: asyncpg.Connection) -> InversePlan:
    """The plan of writing `plan`'s new rows to old; `RepairRefusedError` naming the table when the rows
    cannot be mapped back."""
    table = plan.table
    if table.transform is not None:
        raise RepairRefusedError(
            table.name,
            f"its transform {table.transform.function} (version {table.transform.version}) turns old rows"
            " into new ones and has no inverse, so new's rows cannot be written back to old; correct the"
            " listed keys on old by hand",
        )
    sources = tuple(old_source(table, c) for c in plan.columns)
    shared = sorted({s for s in sources if sources.count(s) > 1})
    if shared:
        raise RepairRefusedError(
            table.name,
            f"old column(s) {', '.join(shared)} are each copied to several new columns, so the way back is"
            " ambiguous",
        )
    old_columns = await table_columns(old, table.name, table.old.table)
    key = [table.old.tenant_column, *(old_source(table, c) for c in table.key)]
    if not await has_unique_key(old, table.old.table, set(key)):
        raise RepairRefusedError(
            table.name,
            f"{table.old.table!r} needs a unique index on exactly ({', '.join(key)}) for the upsert",
        )
    exprs = []
    for column, source in zip(plan.columns, sources, strict=True):
        target = old_columns[source]  # resolve() checked every source exists (no transform)
        same = target.type_oid == plan.new_columns[column].type_oid
        # The base type only, as the backfill does: the staging column's modifier refuses what does not fit.
        exprs.append(quote_ident(column) if same else f"{quote_ident(column)}::{unbounded_type(target)}")
    return InversePlan(
        plan=plan,
        columns=sources,
        new_exprs=tuple(exprs),
        identity_always=any(old_columns[s].identity_always for s in sources),
        text_compared=frozenset(s for s in sources if not exact_equality(old_columns[s].type_oid)),
    )
