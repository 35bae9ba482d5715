"""`cutover verify`: reconcile every (or the named) table and REST resource of a tenant, optionally
repair, and store the report in the control-plane database.

A repair copies the differing keys from the phase's authoritative side to the other one (old → new up to
shadow, new → old in live and rampdown; see `backfill.phase.repair_source`), then verifies again. A table
or resource that cannot be repaired in that direction is reported as such; the others are repaired.

A table with a transform is compared against the *transformed* old rows: they are loaded into a
temporary table on the new side's server (the same function the backfill applied), so both sides of the
comparison are rendered by the same server with the same types.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import asyncpg

from backfill.catalog import TablePlan, quote_ident, resolve
from backfill.digest import element
from backfill.errors import DataError, RepairRefusedError
from backfill.pending import PendingIntents, PendingSnapshot
from backfill.phase import read_phase, repair_source
from backfill.report import TableReport, VerifyRun, store
from backfill.transform import RowFunction, apply_transform, load_transform, transform_label
from backfill.verify import TableVerifier
from backfill.verify_sql import VerifySide, choose_hash_mode, prepare_session, summable
from config.data import DataTable
from config.settings import Settings
from routing.phases import Side

_LOAD_BATCH = 10_000


@dataclass(frozen=True, slots=True)
class VerifyOptions:
    tenant: str
    tables: tuple[str, ...] = ()  # empty: every table and REST resource
    repair: bool = False
    store: bool = True


async def run_verify(settings: Settings, options: VerifyOptions) -> VerifyRun:
    data = settings.data
    known = [t.name for t in data.tables] + [r.name for r in data.rest.resources]
    if not known:
        raise DataError("nothing to verify: configure data.tables or data.rest.resources")
    unknown = sorted(set(options.tables) - set(known))
    if unknown:
        raise DataError(f"unknown table or resource {', '.join(unknown)} (configured: {', '.join(known)})")
    names = list(options.tables) or known
    control = await asyncpg.connect(settings.postgres_url.get_secret_value())
    try:
        state = await read_phase(control, options.tenant, settings.default_phase)
        source = repair_source(options.tenant, state) if options.repair else None
        run = VerifyRun(options.tenant, state.phase.value, datetime.now(UTC))
        buffer = settings.buffer
        pending = PendingIntents.from_url(
            settings.redis_url.get_secret_value(), prefix=buffer.key_prefix, partitions=buffer.partitions
        )
        try:
            for table in data.tables:
                if table.name in names:
                    run.tables.append(await _verify_table(settings, table, options.tenant, source, pending))
            rest = [r for r in data.rest.resources if r.name in names]
            if rest:
                # Imported here: HTTP clients and the worker's applier, for deployments that have REST
                # resources (`cutover verify` loads what it needs only; see proxy/cli/data.py).
                from backfill.rest_verify import verify_resources

                run.tables.extend(await verify_resources(settings, rest, options.tenant, pending, source))
        finally:
            await pending.close()
        if options.store:
            await store(control, run)
        return run
    finally:
        await control.close()


async def _verify_table(
    settings: Settings, table: DataTable, tenant: str, source: Side | None, pending: PendingIntents
) -> TableReport:
    """Verify `table`; with a `source`, repair what differs from it and verify again."""
    data = settings.data
    assert data.old is not None
    assert data.new is not None
    transform = load_transform(table)
    async with contextlib.AsyncExitStack() as stack:
        old, new, image = [
            await stack.enter_async_context(_connection(url.get_secret_value()))
            for url in (data.old.postgres_url, data.new.postgres_url, data.new.postgres_url)
        ]
        plan = await resolve(table, old, new)
        mode = await choose_hash_mode([old, new])
        new_side = _side("new", new, plan, plan.new.relation, new=True, mode=mode)
        refresh = None
        if transform is None:
            old_side = _side("old", old, plan, plan.old.relation, new=False, mode=mode)
        else:
            relation = quote_ident(f"cutover_verify_{table.name}")

            async def refresh() -> None:
                await _load_image(plan, tenant, old, image, relation, transform)

            await refresh()
            old_side = _side("old", image, plan, relation, new=True, mode=mode)

        async def snapshot() -> PendingSnapshot:
            return await pending.snapshot(tenant)

        verifier = TableVerifier(
            table,
            tenant,
            old_side,
            new_side,
            data.verify,
            snapshot=snapshot,
            wait_drained=pending.wait_drained,
            refresh_old=refresh,
        )
        report = TableReport(table.name, transform=transform_label(table))
        found = await verifier.run(report)
        if source is None:
            return report
        # The backfill's copy path: only to repair.
        from backfill.repair import RepairResult, left_to_verification, refused_json, repair_keys

        left = tuple(left_to_verification(verifier.unsettled, verifier.changed))
        max_keys = data.verify.max_keys
        if not found:
            if left:  # nothing to repair, but say what was left out and why
                report.repair = RepairResult(source, 0, 0, skipped=left).as_json(
                    0, report.counts, max_keys=max_keys
                )
            return report
        try:
            result = await repair_keys(plan, tenant, source, old, new, sorted(found), transform)
        except RepairRefusedError as exc:
            report.repair = refused_json(source, len(found), exc.detail)
            return report
        after = TableReport(table.name, transform=transform_label(table))
        await verifier.run(after)
        result = replace(result, skipped=left)
        after.repair = result.as_json(len(found), report.counts, max_keys=max_keys)
        after.warnings = report.warnings + after.warnings
        return after


@contextlib.asynccontextmanager
async def _connection(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(dsn)
    try:
        await prepare_session(conn)
        yield conn
    finally:
        await conn.close()


def _side(
    label: str, conn: asyncpg.Connection, plan: TablePlan, relation: str, *, new: bool, mode: str
) -> VerifySide:
    """A side of the comparison; `new`: a relation with the new table's column names and types."""
    tenant_column = plan.table.new.tenant_column
    indexes = [i for i, c in enumerate(plan.columns) if c != tenant_column]
    columns = tuple(plan.columns[i] for i in indexes)
    shape = plan.new if new else plan.old
    exprs = (
        tuple(quote_ident(c) for c in columns) if new else tuple(plan.old_verify_exprs[i] for i in indexes)
    )
    numeric = tuple(columns.index(c) for c in plan.numeric_columns)
    # Both sides digest the new column's type (the old side's expressions are cast to it).
    elements = tuple(
        element(expr, plan.new_columns[column].type_oid) for expr, column in zip(exprs, columns, strict=True)
    )
    return VerifySide(
        label=label,
        conn=conn,
        relation=relation,
        tenant=plan.new.tenant if new else plan.old.tenant,
        key=shape.key,
        key_types=shape.key_types,
        columns=columns,
        exprs=exprs,
        elements=elements,
        numeric=numeric,
        summed=tuple(summable(exprs[i], plan.new_columns[columns[i]].type_oid) for i in numeric),
        hash_mode=mode,
    )


async def _load_image(
    plan: TablePlan,
    tenant: str,
    old: asyncpg.Connection,
    image: asyncpg.Connection,
    relation: str,
    transform: RowFunction,
) -> None:
    """The tenant's old rows, transformed, in a temporary table on the new side's server."""
    await image.execute(f"DROP TABLE IF EXISTS {relation}")
    await image.execute(
        f"CREATE TEMP TABLE {relation} AS SELECT {plan.quoted_columns} FROM {plan.new.relation} WITH NO DATA"
    )
    after: tuple[str, ...] | None = None
    side = plan.old
    while True:
        where, args = side.range_args(after, None)
        rows = await old.fetch(
            f"SELECT *, {side.key_text} FROM {side.relation} WHERE {where} ORDER BY {side.order_by}"
            f" LIMIT {_LOAD_BATCH}",
            tenant,
            *args,
        )
        if not rows:
            break
        width = len(side.key)
        after = tuple(rows[-1].values())[-width:]
        originals = [dict(list(row.items())[:-width]) for row in rows]
        records = apply_transform(plan.name, transform, originals, plan.columns)
        await image.copy_records_to_table(relation.strip('"'), records=records, columns=list(plan.columns))
    key = ", ".join([plan.new.tenant, *plan.new.key])
    await image.execute(f"CREATE INDEX ON {relation} ({key})")
    await image.execute(f"ANALYZE {relation}")
