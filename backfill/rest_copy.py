"""The copy of one REST resource of one tenant, old → new, page by page (`cutover backfill`).

For each page listed on old (`backfill.rest_pages`): claim its records (`buffer_worker.copy_marks`: the
ones mirroring wrote since the copy opened are skipped, new holds them at least as new), write the
claimed ones to new in the resource's create style (`backfill.rest_writer`), at most `concurrency` at
once and throttled, release the claims, then advance the checkpoint (`backfill.rest_checkpoint`). The
next page is listed while this one is written. Before each page the tenant's phase is read again: a
tenant moved out of dual_write/shadow stops the copy.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import orjson

from backfill.rate import RateLimit
from backfill.rest_checkpoint import PageDone
from backfill.rest_pages import Page
from backfill.rest_writer import REPLACED, ClaimLapsing, RecordWriter
from buffer_worker.copy_marks import Claim, CopyClaims
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
    skipped_keys: list[str] = field(default_factory=list)


def entries_of(resource: RestResource, items: list[Any]) -> tuple[list[Entry], int]:
    """A page's records to write, by key (the last of a key wins), and how many had no usable id."""
    found: dict[str, Entry] = {}
    without_id = 0
    for item in items:
        value = item.get(resource.id_field) if isinstance(item, dict) else None
        if isinstance(value, orjson.Fragment):
            contents = value.contents
            value = contents.decode() if isinstance(contents, bytes) else contents
        if value is None or isinstance(value, bool | dict | list) or str(value) == "":
            without_id += 1
            continue
        key = quote(str(value), safe="")
        found[key] = Entry(key, orjson.dumps(item))
    return list(found.values()), without_id


MAX_SWEEPS = 3  # a sweep that finds nothing ends the copy; so does the last one


@dataclass(frozen=True, slots=True)
class Pass:
    """Where a pass over the collection stands: 0 is the copy, 1 and up the sweeps."""

    number: int
    copied: int = 0  # records this pass wrote so far (by earlier runs too)


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

    async def run(self, pages: AsyncIterator[Page], first: Page, report: ResourceRun, now: Pass) -> bool:
        """Copy `first` and every page after it (`pages` yields those after `first`) in the pass `now`;
        whether the copy is done (else a sweep follows)."""
        following: asyncio.Future[Page] | None = None
        page: Page | None = first
        copied = now.copied
        sweep = now.number > 0
        try:
            while page is not None:
                started = time.monotonic()
                # The next page is read while this one is written: listing and writing overlap.
                following = asyncio.ensure_future(anext(pages)) if page.next is not None else None
                await self._check_phase()
                result, keys, written = await self._copy_page(page)
                copied += result.copied
                end = None
                if page.next is None:
                    last = not self._sweeps or (sweep and (copied == 0 or now.number >= MAX_SWEEPS))
                    end = "done" if last else "pass"
                seconds = time.monotonic() - started
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
                            end=end,
                        )
                    )
                finally:
                    # After the commit: a record marked copied is one a committed page counted.
                    await self._claims.release(keys, written=written if self._sweeps else ())
                report.pages += 1
                report.items_copied += result.copied
                report.items_replaced += result.replaced
                report.seconds += seconds
                if sweep:
                    report.items_swept += result.copied
                else:
                    report.items_listed += len(page.items)
                    report.items_skipped += result.skipped
                    report.items_without_id += result.without_id
                    report.total = page.total if page.total is not None else report.total
                    self._advance(len(page.items))
                page = None if following is None else await following
                following = None
                if end is not None:
                    report.done = end == "done"
                    return report.done
        finally:
            if following is not None:
                following.cancel()
                await asyncio.gather(following, return_exceptions=True)
        return report.done

    async def _copy_page(self, page: Page) -> tuple[_PageResult, list[str], list[str]]:
        """Claim and write a page's records; what happened, the keys claimed and those written. The
        claims are the caller's to release once the page is committed."""
        entries, without_id = entries_of(self._resource, page.items)
        keys = [e.key for e in entries]
        result = _PageResult(without_id=without_id)
        if self._hook is not None:
            await self._hook("listed", page)
        claim = await self._claims.claim(keys)
        while claim.held:
            # An earlier run, killed while it wrote this page, still holds some records: wait for its
            # claims to lapse (a write it sent may be in flight), then claim the page again.
            await asyncio.sleep(claim.held_s + 0.01)
            claim = await self._claims.claim(keys)
        result.skipped += len(claim.skipped)
        if self._hook is not None:
            await self._hook("claimed", page)
        by_key = {e.key: e for e in entries}
        todo = [by_key[key] for key in claim.claimed]
        written: list[str] = []
        try:
            while todo:
                lapsing = await self._write(todo, claim, result, written)
                if not lapsing:
                    break
                # Some writes were not sent: too little of the claim was left. Claim them again (the ones
                # mirroring marked meanwhile are skipped; no other run holds this copy's lock) and go on.
                claim = await self._claims.claim([e.key for e in lapsing])
                result.skipped += len(claim.skipped)
                todo = [by_key[key] for key in claim.claimed]
        except BaseException:
            await self._claims.release(keys)  # not committed: the page is written again by the next run
            raise
        return result, keys, written

    async def _write(
        self, todo: list[Entry], claim: Claim, result: _PageResult, written: list[str]
    ) -> list[Entry]:
        """Write `todo` with `concurrency` writers; the entries not sent because the claim was lapsing."""
        queue = iter(todo)
        lapsing: list[Entry] = []
        deadline = claim.deadline

        async def writer() -> None:
            for entry in queue:
                await self._throttle.take(1)
                try:
                    outcome = await self._writer.write(entry.key, entry.body, deadline)
                except ClaimLapsing:
                    lapsing.append(entry)
                    continue
                written.append(entry.key)
                result.copied += 1
                if outcome == REPLACED:
                    result.replaced += 1

        workers = [asyncio.ensure_future(writer()) for _ in range(min(self._concurrency, len(todo)))]
        try:
            await asyncio.gather(*workers)
        except BaseException:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            raise
        return lapsing
