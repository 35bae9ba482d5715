"""`cutover backfill`: copy one tenant's rows of every (or the named) table old → new, resumably, and its
records of every (or the named) REST resource (`backfill.rest_runner`).

Each table's key space is cut into ranges (one per `--parallel` worker, fixed at the first run and kept in
the checkpoints); each range is copied in key order, chunk by chunk (`copier.ChunkCopier`). Before every
chunk the tenant's phase is read again: a tenant moved out of dual_write/shadow stops the copy at once.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import asyncpg

from backfill import checkpoint
from backfill.catalog import TablePlan, resolve
from backfill.checkpoint import RangeState
from backfill.copier import ChunkCopier, Key
from backfill.errors import CheckpointMismatchError, DataError
from backfill.phase import check_backfill_allowed, read_phase
from backfill.progress import NoProgress, Progress
from backfill.rate import RateLimit
from backfill.rest_copy import PageHook, ResourceRun
from backfill.transform import load_transform, transform_label
from config.data import DataTable, RestResource
from config.limits import CHUNK_ROWS_MAX, CHUNK_ROWS_MIN
from config.settings import Settings

if TYPE_CHECKING:  # the REST copy's modules load HTTP clients and Redis: imported when it runs
    from backfill.rest_copy import PageHook, ResourceRun


@dataclass(frozen=True, slots=True)
class BackfillOptions:
    tenant: str
    tables: tuple[str, ...] = ()  # neither tables nor resources: every configured table and resource
    chunk_rows: int | None = None  # None: data.chunk_rows
    rows_per_s: float | None = None  # None or 0: no limit (REST: records per second)
    parallel: int = 1  # key ranges (and tables) copied at once
    restart: bool = False  # forget the checkpoints and copy again from the first key
    resources: tuple[str, ...] = ()
    concurrency: int | None = None  # REST record writes in flight; None: data.rest.copy.concurrency
    dry_run: bool = False  # say what would be copied; copy nothing


@dataclass
class TableRun:
    name: str
    transform: str | None
    ranges: int
    resumed: bool
    rows_copied: int = 0  # by this run
    rows_written: int = 0
    chunks: int = 0
    chunks_direct: int = 0  # chunks copied straight into the table (their range was empty on new)
    total_rows_copied: int = 0  # by every run of this backfill, from the checkpoints
    seconds: float = 0.0
    rows_pending: int | None = None  # a dry run: rows a run would copy

    def as_json(self) -> dict[str, Any]:
        return {
            "table": self.name,
            "transform": self.transform,
            "ranges": self.ranges,
            "resumed": self.resumed,
            "rows_pending": self.rows_pending,
            "rows_copied": self.rows_copied,
            "rows_written": self.rows_written,
            "chunks": self.chunks,
            "chunks_direct": self.chunks_direct,
            "total_rows_copied": self.total_rows_copied,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class BackfillReport:
    tenant: str
    phase: str
    chunk_rows: int
    tables: list[TableRun] = field(default_factory=list)
    seconds: float = 0.0
    resources: list[ResourceRun] = field(default_factory=list)
    dry_run: bool = False

    def as_json(self) -> dict[str, Any]:
        records = sum(r.items_copied for r in self.resources)
        return {
            "tenant": self.tenant,
            "phase": self.phase,
            "dry_run": self.dry_run,
            "chunk_rows": self.chunk_rows,
            "seconds": round(self.seconds, 3),
            "rows_per_s": round(sum(t.rows_copied for t in self.tables) / self.seconds)
            if self.seconds
            else 0,
            "records_per_s": round(records / self.seconds) if self.seconds else 0,
            "tables": [t.as_json() for t in self.tables],
            "resources": [r.as_json() for r in self.resources],
        }


def selected_tables(settings: Settings, names: Sequence[str]) -> list[DataTable]:
    data = settings.data
    if data.old is None or data.new is None or not data.tables:
        raise DataError("no tables to copy: configure data.old, data.new and data.tables")
    try:
        return [data.table(name) for name in names] if names else list(data.tables)
    except KeyError as exc:
        raise DataError(str(exc.args[0])) from None


def selected(settings: Settings, options: BackfillOptions) -> tuple[list[DataTable], list[RestResource]]:
    """The tables and resources to copy: those named, or every one configured when none is."""
    data = settings.data
    if not options.tables and not options.resources:
        if not data.tables and not data.rest.resources:
            raise DataError(
                "nothing to copy: configure data.tables (with data.old and data.new) or data.rest.resources"
            )
        return list(data.tables), list(data.rest.resources)
    tables = selected_tables(settings, options.tables) if options.tables else []
    try:
        return tables, [data.rest.resource(name) for name in options.resources]
    except KeyError as exc:
        raise DataError(str(exc.args[0])) from None


async def run_backfill(
    settings: Settings,
    options: BackfillOptions,
    progress: Progress | None = None,
    *,
    hook: PageHook | None = None,
) -> BackfillReport:
    """Copy the tables, then the REST resources; `hook` is the REST copy's test seam."""
    tables, resources = selected(settings, options)
    chunk_rows = options.chunk_rows or settings.data.chunk_rows
    if not CHUNK_ROWS_MIN <= chunk_rows <= CHUNK_ROWS_MAX:
        raise DataError(f"chunk rows must be {CHUNK_ROWS_MIN}-{CHUNK_ROWS_MAX}, not {chunk_rows}")
    if options.parallel < 1:
        raise DataError("parallel must be at least 1")
    started = time.monotonic()
    progress = progress or NoProgress()
    report = BackfillReport(options.tenant, settings.default_phase.value, chunk_rows, dry_run=options.dry_run)
    if tables:
        if options.dry_run:
            report = await _dry_run_tables(settings, options, tables, report)
        else:
            run = _Run(settings, options, chunk_rows, progress)
            try:
                report = await run.execute(tables)
            finally:
                await run.close()
    if resources:
        from backfill.rest_runner import RestCopyOptions, copy_resources  # HTTP and Redis: REST only

        rest = RestCopyOptions(
            options.tenant,
            records_per_s=options.rows_per_s,
            concurrency=options.concurrency,
            restart=options.restart,
            dry_run=options.dry_run,
        )
        state, report.resources = await copy_resources(settings, resources, rest, progress, hook=hook)
        report.phase = state.phase.value
    report.dry_run = options.dry_run
    report.seconds = time.monotonic() - started
    return report


async def _dry_run_tables(
    settings: Settings, options: BackfillOptions, tables: list[DataTable], report: BackfillReport
) -> BackfillReport:
    """Each table's rows on old and what its checkpoints say was copied: the rows a run would copy."""
    data = settings.data
    assert data.old is not None
    assert data.new is not None
    control = await asyncpg.connect(settings.postgres_url.get_secret_value())
    old = await asyncpg.connect(data.old.postgres_url.get_secret_value())
    new = await asyncpg.connect(data.new.postgres_url.get_secret_value())
    try:
        report.phase = (await read_phase(control, options.tenant, settings.default_phase)).phase.value
        for table in tables:
            plan = await resolve(table, old, new)
            rows = int(
                await old.fetchval(
                    f"SELECT count(*) FROM {plan.old.relation} WHERE {plan.old.tenant} = $1", options.tenant
                )
            )
            try:
                states = [] if options.restart else await checkpoint.load(new, options.tenant, table.name)
            except asyncpg.UndefinedTableError:  # no backfill has run against this database
                states = []
            copied = sum(s.rows_copied for s in states)
            run = TableRun(table.name, transform_label(table), len(states), bool(states))
            run.total_rows_copied = copied
            run.rows_pending = 0 if states and all(s.done for s in states) else max(rows - copied, 0)
            report.tables.append(run)
    finally:
        for conn in (control, old, new):
            await conn.close()
    return report


class _Run:
    def __init__(
        self, settings: Settings, options: BackfillOptions, chunk_rows: int, progress: Progress
    ) -> None:
        self._settings = settings
        self._options = options
        self._tenant = options.tenant
        self._chunk_rows = chunk_rows
        self._progress = progress
        self._limit = RateLimit(options.rows_per_s)
        self._control: asyncpg.Connection | None = None
        self._control_lock = asyncio.Lock()
        self._holder: asyncpg.Connection | None = None  # holds the run locks for the whole run
        self._old: asyncpg.Pool | None = None
        self._new: asyncpg.Pool | None = None

    async def close(self) -> None:
        self._progress.close()
        for conn in (self._control, self._holder):
            if conn is not None:
                await conn.close()
        for pool in (self._old, self._new):
            if pool is not None:
                await pool.close()

    async def execute(self, tables: list[DataTable]) -> BackfillReport:
        started = time.monotonic()
        data = self._settings.data
        assert data.old is not None
        assert data.new is not None
        self._control = await asyncpg.connect(self._settings.postgres_url.get_secret_value())
        state = await read_phase(self._control, self._tenant, self._settings.default_phase)
        check_backfill_allowed(self._tenant, state)
        size = self._options.parallel + 1
        self._old = await asyncpg.create_pool(
            data.old.postgres_url.get_secret_value(), min_size=1, max_size=size
        )
        self._new = await asyncpg.create_pool(
            data.new.postgres_url.get_secret_value(), min_size=1, max_size=size
        )
        self._holder = await asyncpg.connect(data.new.postgres_url.get_secret_value())
        await checkpoint.ensure_schema(self._holder)
        report = BackfillReport(self._tenant, state.phase.value, self._chunk_rows)
        work: list[tuple[TablePlan, TableRun, RangeState]] = []
        total = 0
        for table in tables:
            if not await checkpoint.try_lock_run(self._holder, self._tenant, table.name):
                raise DataError(
                    f"another backfill of tenant {self._tenant!r}, table {table.name!r} is running"
                )
            plan, run, ranges, remaining = await self._prepare(table)
            report.tables.append(run)
            total += remaining
            work.extend((plan, run, state) for state in ranges if not state.done)
        self._progress.start(f"backfill {self._tenant}", total)
        gate = asyncio.Semaphore(self._options.parallel)

        async def copy(plan: TablePlan, run: TableRun, state: RangeState) -> None:
            async with gate:
                await self._copy_range(plan, run, state)

        await _all_or_nothing([copy(*item) for item in work])
        for run in report.tables:
            states = await checkpoint.load(self._holder, self._tenant, run.name)
            run.total_rows_copied = sum(s.rows_copied for s in states)
        report.seconds = time.monotonic() - started
        return report

    async def _prepare(self, table: DataTable) -> tuple[TablePlan, TableRun, list[RangeState], int]:
        assert self._old is not None
        assert self._new is not None
        assert self._holder is not None
        async with self._old.acquire() as old, self._new.acquire() as new:
            plan = await resolve(table, old, new)
            label = transform_label(table)
            states = (
                [] if self._options.restart else await checkpoint.load(self._holder, self._tenant, table.name)
            )
            resumed = bool(states)
            if states:
                if states[0].transform != label:
                    raise CheckpointMismatchError(
                        table.name,
                        f"the checkpoint was made with transform {states[0].transform or 'none'},"
                        f" the configuration now says {label or 'none'}",
                    )
                if states[0].columns != plan.columns:
                    raise CheckpointMismatchError(
                        table.name, "the copied columns changed since the checkpoint"
                    )
            else:
                bounds = await _plan_ranges(old, plan, self._tenant, self._options.parallel, self._chunk_rows)
                states = await checkpoint.create(
                    self._holder, self._tenant, table.name, bounds, transform=label, columns=plan.columns
                )
            rows = int(
                await old.fetchval(
                    f"SELECT count(*) FROM {plan.old.relation} WHERE {plan.old.tenant} = $1", self._tenant
                )
            )
        remaining = 0 if all(s.done for s in states) else max(rows - sum(s.rows_copied for s in states), 0)
        return plan, TableRun(table.name, label, len(states), resumed), states, remaining

    async def _copy_range(self, plan: TablePlan, run: TableRun, state: RangeState) -> None:
        assert self._old is not None
        assert self._new is not None
        transform = load_transform(plan.table)
        started = time.monotonic()
        async with self._old.acquire() as old, self._new.acquire() as new:
            copier = ChunkCopier(plan, self._tenant, old, new, transform)
            await copier.prepare()
            after: Key | None = state.resume_after
            while True:
                await self._check_phase()
                upper, more = await copier.next_bound(after, state.hi, self._chunk_rows)
                result = await copier.copy(state.range_no, after, upper, state.hi, last=not more)
                run.rows_copied += result.copied
                run.rows_written += result.written
                run.chunks += 1
                run.chunks_direct += result.direct
                self._progress.advance(result.copied)
                if result.done:
                    break
                after = result.last_key
                await self._limit.take(result.copied)
        run.seconds += time.monotonic() - started

    async def _check_phase(self) -> None:
        assert self._control is not None
        async with self._control_lock:
            state = await read_phase(self._control, self._tenant, self._settings.default_phase)
        check_backfill_allowed(self._tenant, state)


async def _plan_ranges(
    old: asyncpg.Connection, plan: TablePlan, tenant: str, parallel: int, chunk_rows: int
) -> list[tuple[Key | None, Key | None]]:
    """`parallel` ranges of about equal row counts, as (exclusive lo, inclusive hi) pairs."""
    if parallel > 1:
        side = plan.old
        count = int(
            await old.fetchval(f"SELECT count(*) FROM {side.relation} WHERE {side.tenant} = $1", tenant)
        )
        ways = min(parallel, math.ceil(count / chunk_rows))
        if ways > 1:
            step = math.ceil(count / ways)
            rows = await old.fetch(
                f"SELECT {side.key_text} FROM (SELECT {side.order_by}, row_number() OVER (ORDER BY"
                f" {side.order_by}) AS rn FROM {side.relation} WHERE {side.tenant} = $1) AS s"
                " WHERE rn % $2 = 0 ORDER BY rn LIMIT $3",
                tenant,
                step,
                ways - 1,
            )
            cuts: list[Key | None] = [None, *(tuple(row.values()) for row in rows), None]
            return list(zip(cuts[:-1], cuts[1:], strict=True))
    return [(None, None)]


async def _all_or_nothing(calls: Sequence[Coroutine[Any, Any, None]]) -> None:
    """Run `calls` concurrently; on the first failure cancel the rest and raise that failure itself.

    A task group's ExceptionGroup is unwrapped to its first error (the group records them in the order
    they happened), so a caller catches the error the copy raised, as it would from a single copy; its
    cause chain is kept, and the group is not shown as its context."""
    try:
        async with asyncio.TaskGroup() as group:
            for call in calls:
                group.create_task(call)
    except BaseExceptionGroup as failed:
        first = failed.exceptions[0]
        first.__suppress_context__ = True
        raise first  # noqa: B904 - not `from`: that would replace the cause the error carries
