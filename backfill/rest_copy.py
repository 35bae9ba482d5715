"""The copy of one REST resource of one tenant, old → new, page by page (`cutover backfill`).

For each page listed on old (`backfill.rest_pages`): read the tenant's phase again (a tenant moved out of
dual_write/shadow stops the copy), claim the page's records (`buffer_worker.copy_marks`: the ones
mirroring wrote since the copy opened are skipped, new holds them at least as new), write the claimed
ones to new in the resource's create style (`backfill.rest_writer`), then, once every write of the page
is acknowledged, advance the checkpoint (`backfill.rest_checkpoint`) and release the claims.

A pipeline, so that `concurrency` writes stay in flight across page boundaries: the next page is listed
while one is written, and claimed (its writes queued behind the current page's) before the current
page's last writes are answered; pages are committed in order. At most two pages are claimed and not
yet committed. Without it, each page ended with a tail of fewer writes in flight and a pause for its
commit, claim and phase read: ~25 % of the rate of a loop that does none of that (BENCHMARKS.md).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import orjson

from backfill.rate import RateLimit
from backfill.rest_checkpoint import PageDone
from backfill.rest_pages import Page, record_id
from backfill.rest_writer import REPLACED, ClaimLapsing, RecordWriter
from buffer_worker.copy_marks import Claim, CopyClaims
from common.tasks import cancel_and_wait
from config.data import RestResource

# Test seam: awaited with ("listed" | "claimed", page) between a page's read and its claim, and between
# its claim and its writes (the copy-window race tests land mirrored writes there).
PageHook = Callable[[str, Page], Awaitable[None]]


@dataclass
class ResourceRun:
    name: str
    run: str  # new, resumed, done (already), dry run
    pages: int = 0
    items_listed: int = 0  # by the first pass (a sweep lists again)
    pages_again: int = 0  # read back after a boundary check found the collection shifted
    items_copied: int = 0
    items_replaced: int = 0  # of the copied: a create found them there (a page written again on resume)
    items_skipped: int = 0
    items_without_id: int = 0
    sweeps: int = 0  # passes over the collection after the first (paging that can shift)
    items_swept: int = 0  # of the copied: found by a sweep (moved across a page boundary meanwhile)
    total: int | None = None
    total_items_copied: int = 0  # by every run of this copy, from the checkpoint
    done: bool = False
    seconds: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "resource": self.name,
            "run": self.run,
            "done": self.done,
            "pages": self.pages,
            "items_listed": self.items_listed,
            "pages_again": self.pages_again,
            "items_copied": self.items_copied,
            "items_replaced": self.items_replaced,
            "items_skipped": self.items_skipped,
            "items_without_id": self.items_without_id,
            "sweeps": self.sweeps,
            "items_swept": self.items_swept,
            "total": self.total,
            "total_items_copied": self.total_items_copied,
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True, slots=True)
class Entry:
    key: str  # the id as one percent-encoded path segment (what the worker's record map names)
    body: bytes


@dataclass
class _PageResult:
    copied: int = 0
    replaced: int = 0
    skipped: int = 0
    without_id: int = 0


def entries_of(resource: RestResource, items: list[Any]) -> tuple[list[Entry], int]:
    """A page's records to write, by key (the last of a key wins), and how many had no usable id."""
    found: dict[str, Entry] = {}
    without_id = 0
    for item in items:
        value = record_id(resource, item)
        if value is None:
            without_id += 1
            continue
        key = quote(value, safe="")
        found[key] = Entry(key, orjson.dumps(item))
    return list(found.values()), without_id


MAX_SWEEPS = 3  # a sweep that finds nothing ends the copy; so does the last one
SETTLE_S = 5.0  # at most, for the worker to apply what mirroring buffered before a pass ends


@dataclass(frozen=True, slots=True)
class Pass:
    """Where a pass over the collection stands: 0 is the copy, 1 and up the sweeps."""

    number: int
    copied: int = 0  # records this pass wrote so far (by earlier runs too)
    intents: int = 0  # mirrored intents of the resource counted when the pass began


@dataclass
class _PageWork:
    """A claimed page on its way: its writes in the queue, then its commit."""

    page: Page
    keys: list[str]
    by_key: dict[str, Entry]
    claim: Claim
    result: _PageResult
    started: float
    pending: int = 0  # writes queued and not yet answered
    written: list[str] = field(default_factory=list)
    lapsing: list[Entry] = field(default_factory=list)
    failure: BaseException | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


_Job = tuple[_PageWork, Entry]
_IN_FLIGHT_PAGES = 2


class _Jobs:
    """The writes waiting for a writer, in order. A deque and one event rather than `asyncio.Queue`,
    whose future per waiting get cost ~5 % of the copy's CPU (BENCHMARKS.md)."""

    def __init__(self) -> None:
        self._jobs: deque[_Job] = deque()
        self._ready = asyncio.Event()

    def put(self, job: _Job) -> None:
        self._jobs.append(job)
        self._ready.set()

    async def get(self) -> _Job:
        while not self._jobs:
            self._ready.clear()  # no await since the check: no put can come in between
            await self._ready.wait()
        return self._jobs.popleft()


class ResourceCopy:
    def __init__(
        self,
        resource: RestResource,
        *,
        writer: RecordWriter,
        claims: CopyClaims,
        throttle: RateLimit,
        concurrency: int,
        check_phase: Callable[[], Awaitable[None]],
        commit: Callable[[PageDone], Awaitable[None]],
        advance: Callable[[int], None],
        hook: PageHook | None = None,
    ) -> None:
        self._resource = resource
        self._writer = writer
        self._claims = claims
        self._throttle = throttle
        self._concurrency = concurrency
        self._check_phase = check_phase
        self._commit = commit
        self._advance = advance
        self._hook = hook
        self._sweeps = resource.sweeps
        # The records written stay marked copied until the copy is done when a page may be read again
        # (a page read back, a sweep): it writes only the ones it missed.
        self._keep_copied = resource.sweeps or resource.checks_boundaries
        self.next_intents = 0  # the intents count the pass after the one run ends compares with

    async def run(self, pages: AsyncIterator[Page], first: Page, report: ResourceRun, now: Pass) -> bool:
        """Copy `first` and every page after it (`pages` yields those after `first`) in the pass `now`;
        whether the copy is done (else a sweep follows)."""
        queue = _Jobs()
        writers = [asyncio.ensure_future(self._writing(queue)) for _ in range(self._concurrency)]
        in_flight: list[_PageWork] = []
        following: asyncio.Future[Page] | None = None
        page: Page | None = first
        copied = now.copied
        try:
            while page is not None:
                # The next page is read while this one is written: listing and writing overlap.
                following = asyncio.ensure_future(anext(pages)) if page.next is not None else None
                await self._check_phase()
                # A page read back holds records a page in flight is writing: that page writes them.
                writing = {key for work in in_flight for key in work.keys} if page.again else set()
                in_flight.append(await self._claim(page, queue, writing))
                while len(in_flight) >= _IN_FLIGHT_PAGES or (in_flight and following is None):
                    # A record listed again on the next page (pages shift) keeps that page's claim.
                    later = {key for other in in_flight[1:] for key in other.keys}
                    copied = await self._finish(in_flight[0], queue, report, now, copied, later)
                    in_flight.pop(0)
                page = None if following is None else await following
                following = None
        except BaseException:
            # Writers first: no write may land after its claim is released.
            await cancel_and_wait(*writers, reraise=False)
            for work in in_flight:  # not committed: written again by the next run
                await asyncio.shield(self._claims.release(work.keys))
            raise
        finally:
            await cancel_and_wait(*writers, following, reraise=False)
        return report.done

    async def _claim(self, page: Page, queue: _Jobs, writing: set[str]) -> _PageWork:
        """Claim a page's records (but those in `writing`) and queue the writes of those claimed."""
        entries, without_id = entries_of(self._resource, page.items)
        entries = [entry for entry in entries if entry.key not in writing]
        keys = [e.key for e in entries]
        if self._hook is not None:
            await self._hook("listed", page)
        claim = await self._claims.claim(keys)
        while claim.held:
            # An earlier run, killed while it wrote this page, still holds some records: wait for its
            # claims to lapse (a write it sent may be in flight), then claim the page again.
            await asyncio.sleep(claim.held_s + 0.01)
            claim = await self._claims.claim(keys)
        result = _PageResult(without_id=without_id, skipped=len(claim.skipped))
        work = _PageWork(page, keys, {e.key: e for e in entries}, claim, result, time.monotonic())
        if self._hook is not None:
            await self._hook("claimed", page)
        self._queue(work, [work.by_key[key] for key in claim.claimed], queue)
        return work

    def _queue(self, work: _PageWork, entries: list[Entry], queue: _Jobs) -> None:
        work.done.clear()
        work.pending += len(entries)
        for entry in entries:
            queue.put((work, entry))
        if not work.pending:
            work.done.set()

    async def _finish(
        self,
        work: _PageWork,
        queue: _Jobs,
        report: ResourceRun,
        now: Pass,
        copied: int,
        later: set[str],
    ) -> int:
        """Wait for a page's writes, then commit it and release its claims (but those of `later`, claimed
        by the page after it); the pass's records written."""
        keys = [key for key in work.keys if key not in later]
        while True:
            await work.done.wait()
            if work.failure is not None:
                await self._claims.release(keys)  # not committed: written again by the next run
                raise work.failure
            if not work.lapsing:
                break
            # Some writes were not sent: too little of the claim was left. Claim them again (the ones
            # mirroring marked meanwhile are skipped; no other run holds this copy's lock) and go on.
            lapsing, work.lapsing = work.lapsing, []
            work.claim = await self._claims.claim([e.key for e in lapsing])
            work.result.skipped += len(work.claim.skipped)
            self._queue(work, [work.by_key[key] for key in work.claim.claimed], queue)
        page, result, sweep = work.page, work.result, now.number > 0
        copied += result.copied
        end = None
        intents = 0
        if page.next is None:
            # A sweep is needed only if the collection may have shifted under the pass: mirroring wrote
            # to it meanwhile (every client write goes through the proxy). The worker counts a write
            # when it applies it: give it a moment to apply what is in the buffer (a tenant that keeps
            # writing never gets there, and the count read then is the best there is).
            if self._sweeps:
                await self._claims.intents_settled(SETTLE_S)
            intents = await self._claims.intents()
            final = (
                not self._sweeps
                or intents == now.intents
                or (sweep and (copied == 0 or now.number >= MAX_SWEEPS))
            )
            end = "done" if final else "pass"
        seconds = time.monotonic() - work.started
        try:
            await self._commit(
                PageDone(
                    page.next,
                    len(page.items),
                    result.copied,
                    result.skipped,
                    result.without_id,
                    page.total,
                    seconds,
                    sweep=sweep,
                    again=page.again,
                    end=end,
                    intents=intents,
                )
            )
        finally:
            # After the commit: a record marked copied is one a committed page counted.
            written = [key for key in work.written if key not in later] if self._keep_copied else []
            await self._claims.release(keys, written=written)
        report.pages += 1
        report.items_copied += result.copied
        report.items_replaced += result.replaced
        report.seconds += seconds
        if sweep:
            report.items_swept += result.copied
        elif page.again:
            report.pages_again += 1
        else:
            report.items_listed += len(page.items)
            report.items_skipped += result.skipped
            report.items_without_id += result.without_id
            report.total = page.total if page.total is not None else report.total
            self._advance(len(page.items))
        if end is not None:
            report.done = end == "done"
            self.next_intents = intents
        return copied

    async def _writing(self, queue: _Jobs) -> None:
        """One of `concurrency` writers: takes queued records, in order, and writes them."""
        while True:
            work, entry = await queue.get()
            try:
                if work.failure is None:
                    if self._throttle.limited:
                        await self._throttle.take(1)
                    outcome = await self._writer.write(entry.key, entry.body, work.claim.deadline)
                    work.written.append(entry.key)
                    work.result.copied += 1
                    if outcome == REPLACED:
                        work.result.replaced += 1
            except ClaimLapsing:
                work.lapsing.append(entry)
            except Exception as exc:  # noqa: BLE001 - the page's failure, raised where it is committed
                work.failure = exc
            finally:
                work.pending -= 1
                if work.pending == 0:
                    work.done.set()
