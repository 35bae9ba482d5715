"""`cutover backfill` for REST resources (`data.rest.resources`): copy one tenant's records of every (or
the named) resource old → new, resumably, while mirroring runs.

Runs only in dual_write or shadow, as the table copy does: old is authoritative and every write since
dual_write reaches new through the buffer, so the copy has only the records written before. Each
resource's copy is opened for the worker's marks before its first page is listed (`buffer_worker.
copy_marks`), copied page by page (`backfill.rest_copy`) from its checkpoint (`backfill.rest_checkpoint`),
and closed when its last page is written. Resources are copied one after the other, each with
`concurrency` writes in flight; the records of every resource share one throttle.

A dry run lists what a run would copy (from the checkpoints, in any phase) and writes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import asyncpg
import redis.asyncio as aioredis

from backends.client import BackendClient
from backfill import rest_checkpoint
from backfill.errors import DataError
from backfill.phase import PhaseState, check_backfill_allowed, read_phase
from backfill.progress import NoProgress, Progress
from backfill.rate import RateLimit
from backfill.rest_checkpoint import PageDone
from backfill.rest_copy import PageHook, Pass, ResourceCopy, ResourceRun
from backfill.rest_pages import Page, Position, RestLister, decode_verbatim
from backfill.rest_writer import RecordWriter
from buffer_worker.copy_marks import CopyClaims
from common.tasks import stop_if_cancelled
from config.data import RestResource
from config.settings import Settings
from routing.phases import Side


@dataclass(frozen=True, slots=True)
class RestCopyOptions:
    tenant: str
    records_per_s: float | None = None  # None or 0: no limit
    concurrency: int | None = None  # None: data.rest.copy.concurrency
    restart: bool = False
    dry_run: bool = False


@dataclass
class _Prepared:
    resource: RestResource
    report: ResourceRun
    claims: CopyClaims | None
    pages: AsyncIterator[Page] | None
    first: Page | None
    listed_before: int = 0  # by earlier runs (resumed)
    start: Pass = Pass(0)  # the pass the checkpoint is in


async def copy_resources(
    settings: Settings,
    resources: Sequence[RestResource],
    options: RestCopyOptions,
    progress: Progress | None = None,
    *,
    hook: PageHook | None = None,
) -> tuple[PhaseState, list[ResourceRun]]:
    """Copy `resources` of `options.tenant`; the tenant's phase at the start, and a report per resource."""
    run = _RestRun(settings, options, progress or NoProgress(), hook)
    try:
        return await run.execute(resources)
    finally:
        await run.close()


class _RestRun:
    def __init__(
        self, settings: Settings, options: RestCopyOptions, progress: Progress, hook: PageHook | None
    ) -> None:
        self._settings = settings
        self._options = options
        self._tenant = options.tenant
        self._progress = progress
        self._hook = hook
        self._copy = settings.data.rest.copy_
        self._concurrency = options.concurrency or self._copy.concurrency
        self._limit = RateLimit(options.records_per_s)
        self._run_id = uuid.uuid4().hex[:12]
        self._stack = contextlib.AsyncExitStack()
        self._control: asyncpg.Connection | None = None
        self._control_lock = asyncio.Lock()
        self._redis: aioredis.Redis | None = None
        self._clients: dict[Side, BackendClient] = {}

    async def close(self) -> None:
        self._progress.close()
        await self._stack.aclose()

    async def execute(self, resources: Sequence[RestResource]) -> tuple[PhaseState, list[ResourceRun]]:
        settings = self._settings
        self._control = await asyncpg.connect(settings.postgres_url.get_secret_value())
        self._stack.push_async_callback(self._control.close)
        state = await read_phase(self._control, self._tenant, settings.default_phase)
        if not self._options.dry_run:
            check_backfill_allowed(self._tenant, state)
            await rest_checkpoint.ensure_schema(self._control)
            self._redis = aioredis.Redis.from_url(
                settings.redis_url.get_secret_value(), socket_timeout=10, socket_connect_timeout=5
            )
            self._stack.push_async_callback(self._redis.aclose)
        for side in (Side.OLD,) if self._options.dry_run else (Side.OLD, Side.NEW):
            client = BackendClient.of(settings, side)
            await client.start()
            self._stack.push_async_callback(client.close)
            self._clients[side] = client
        prepared = [await self._prepare(resource) for resource in resources]
        pending = sum(_pending(p) for p in prepared)
        self._progress.start(f"copy {self._tenant}", pending, unit="records")
        for item in prepared:
            if item.first is None or item.pages is None:
                continue
            if self._options.dry_run:
                await self._dry_run(item)
            else:
                await self._copy_one(item)
        return state, [p.report for p in prepared]

    async def _prepare(self, resource: RestResource) -> _Prepared:
        """Lock, load or start the checkpoint, open the copy for the worker's marks, list the first page."""
        control = self._control
        assert control is not None
        tenant, name = self._tenant, resource.name
        async with self._control_lock:
            if not self._options.dry_run and not await rest_checkpoint.try_lock_run(control, tenant, name):
                raise DataError(f"another copy of tenant {tenant!r}, resource {name!r} is running")
            state = await rest_checkpoint.load(control, tenant, name)
        claims = None
        if not self._options.dry_run:
            assert self._redis is not None
            buffer = self._settings.buffer
            claims = CopyClaims(
                self._redis,
                prefix=buffer.key_prefix,
                partitions=buffer.partitions,
                tenant=tenant,
                resource=name,
                ttl_s=self._copy.claim_ttl_s,
            )
        fresh = state is None or self._options.restart
        if self._options.dry_run:
            run = "dry run"
        else:
            run = "new" if fresh else ("done" if state is not None and state.done else "resumed")
        report = ResourceRun(name, run)
        if state is not None and not fresh:
            report.total_items_copied = state.items_copied
            report.total = state.total
            if state.done:
                report.done = True
                return _Prepared(resource, report, claims, None, None)
        position: Position | None = None if fresh or state is None else state.position
        if claims is not None:
            if fresh:
                await claims.reset()
                intents = await claims.intents()
                async with self._control_lock:
                    state = await rest_checkpoint.start(control, tenant, name, intents=intents)
            # Open before the first page is listed: from here on every mirrored write is marked, so what
            # the copy reads next is never older than what mirroring wrote before.
            await claims.open()
        pages = self._lister(resource).pages(position)
        first = await anext(pages)
        report.total = first.total if first.total is not None else report.total
        resumed = state is not None and not fresh
        listed = state.items_listed if state is not None and resumed else 0
        start = Pass(state.pass_no, state.pass_copied, state.intents_seen) if state is not None else Pass(0)
        return _Prepared(resource, report, claims, pages, first, listed, start)

    async def _copy_one(self, item: _Prepared) -> None:
        assert item.claims is not None
        assert item.pages is not None
        assert item.first is not None
        control = self._control
        assert control is not None
        resource, tenant = item.resource, self._tenant
        write_timeout_s = min(self._settings.data.rest.timeout_s, item.claims.ttl_s / 3)
        writer = RecordWriter(
            self._clients[Side.NEW],
            resource,
            tenant=tenant,
            tenant_header=self._settings.tenant.header,
            timeout_s=write_timeout_s,
            run_id=self._run_id,
        )

        async def commit(done: PageDone) -> None:
            async with self._control_lock:
                await rest_checkpoint.advance(control, tenant, resource.name, done)

        copy = ResourceCopy(
            resource,
            writer=writer,
            claims=item.claims,
            throttle=self._limit,
            concurrency=self._concurrency,
            check_phase=self._before_page,
            commit=commit,
            advance=self._progress.advance,
            hook=self._hook,
        )
        pages, first, now = item.pages, item.first, item.start
        while not await copy.run(pages, first, item.report, now):
            # A sweep: the collection once more from its first page (`buffer_worker.copy_marks`).
            item.report.sweeps += 1
            now = Pass(now.number + 1, 0, copy.next_intents)
            pages = self._lister(resource).pages(None)
            first = await anext(pages)
        await item.claims.close()
        async with self._control_lock:
            state = await rest_checkpoint.load(control, tenant, resource.name)
        if state is not None:
            item.report.total_items_copied = state.items_copied

    def _lister(self, resource: RestResource) -> RestLister:
        return RestLister(
            self._clients[Side.OLD],
            resource,
            tenant=self._tenant,
            tenant_header=self._settings.tenant.header,
            timeout_s=self._settings.data.rest.timeout_s,
            label="old",
            decode=decode_verbatim,
        )

    async def _dry_run(self, item: _Prepared) -> None:
        """List every page a run would copy; write nothing."""
        assert item.pages is not None
        assert item.first is not None
        started = time.monotonic()
        report = item.report
        page: Page | None = item.first
        while page is not None:
            report.pages += 1
            if page.again:  # read back after a boundary check: its records were listed
                report.pages_again += 1
            else:
                report.items_listed += len(page.items)
                self._progress.advance(len(page.items))
            report.total = page.total if page.total is not None else report.total
            page = await anext(item.pages) if page.next is not None else None
        report.seconds = time.monotonic() - started

    async def _before_page(self) -> None:
        """Before each page is claimed: stop if the run was cancelled, then read the phase again."""
        # Cancelled (Ctrl-C) and not stopped, a call on the way having swallowed the cancellation:
        # stopped here, before the next page, and the checkpoint resumes.
        stop_if_cancelled()
        await self._check_phase()

    async def _check_phase(self) -> None:
        assert self._control is not None
        async with self._control_lock:
            state = await read_phase(self._control, self._tenant, self._settings.default_phase)
        check_backfill_allowed(self._tenant, state)


def _pending(item: _Prepared) -> int:
    """Records left to list, as far as the collection's size is known (0 when it is not)."""
    if item.first is None or item.first.total is None:
        return 0
    return max(item.first.total - item.listed_before, 0)
