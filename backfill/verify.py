"""Reconcile one table of one tenant: find exactly the keys that differ between old and new.

1. First pass: the old side's keys cut the tenant into ranges of `range_rows`; each side computes count,
   numeric sums and the row-hash sum of every range in one scan (both sides at once).
2. A range whose figures differ is split (`split_ways` sub-ranges cut at the larger side's keys) until it
   holds at most `leaf_rows` rows on either side; then the two sides' per-key hashes are compared.
3. Differing keys are compared again, and those with intents still pending in the buffer are set aside,
   re-checked after the buffer has applied them (up to `recheck_rounds` times), and reported only if they
   still differ once nothing is pending for them; keys that stay pending are reported as unsettled.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from decimal import Decimal
from typing import Any

import orjson

from backfill.pending import PendingSnapshot
from backfill.report import KINDS, TableReport
from backfill.verify_sql import Key, RangeStats, SampleRow, VerifySide
from config.data import DataTable, VerifySettings

_MAX_DEPTH = 64
Snapshot = Callable[[], Awaitable[PendingSnapshot]]
WaitDrained = Callable[[PendingSnapshot, float], Awaitable[bool]]


def classify(old: dict[Key, int], new: dict[Key, int]) -> dict[Key, str]:
    """Differing keys of two key → row-hash maps, by kind."""
    found: dict[Key, str] = {}
    for key, digest in old.items():
        other = new.get(key)
        if other is None:
            found[key] = "missing_on_new"
        elif other != digest:
            found[key] = "different"
    for key in new.keys() - old.keys():
        found[key] = "missing_on_old"
    return found


class TableVerifier:
    def __init__(
        self,
        table: DataTable,
        tenant: str,
        old: VerifySide,
        new: VerifySide,
        settings: VerifySettings,
        *,
        snapshot: Snapshot,
        wait_drained: WaitDrained,
        refresh_old: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._table = table
        self._tenant = tenant
        self._old = old
        self._new = new
        self._settings = settings
        self._snapshot = snapshot
        self._wait_drained = wait_drained
        # Re-reads the old side before a re-check, when it is a materialised (transformed) copy.
        self._refresh_old = refresh_old
        self.unsettled: set[Key] = set()  # of the last run: keys whose intents stayed pending
        self.changed: set[Key] = set()  # of the last run: keys that differed, then were equal

    async def run(self, report: TableReport) -> dict[Key, str]:
        """Fill `report`; return every reported differing key with its kind."""
        started = time.monotonic()
        found = await self._find()
        report.ranges, report.ranges_mismatched = self._ranges, self._mismatched
        report.rows_old, report.rows_new = self._totals["old"].rows, self._totals["new"].rows
        for index in self._old.numeric:
            column = self._old.columns[index]
            position = self._old.numeric.index(index)
            report.sums[column] = {side: self._totals[side].sums[position] for side in ("old", "new")}
        reported, unsettled, rechecked, warnings = await self._settle(found)
        # What a repair leaves out, and why: still pending, or equal by the time it was compared again.
        self.unsettled = set(unsettled)
        self.changed = set(found) - set(reported) - self.unsettled
        report.rechecked = rechecked
        report.warnings.extend(warnings)
        limit = self._settings.max_keys
        for key in sorted(reported):
            report.add(reported[key], key, limit)
        for key in sorted(unsettled):
            report.add("unsettled", key, limit)
        report.samples = await self._samples(reported)
        report.seconds = time.monotonic() - started
        return reported

    async def _find(self) -> dict[Key, str]:
        tenant = self._tenant
        cuts = await self._old.first_cuts(tenant, self._settings.range_rows)
        old, new = await asyncio.gather(
            self._old.bucket_stats(tenant, None, None, cuts), self._new.bucket_stats(tenant, None, None, cuts)
        )
        self._totals = {"old": _total(old.values(), self._old), "new": _total(new.values(), self._new)}
        self._ranges = len(cuts) + 1
        self._mismatched = 0
        found: dict[Key, str] = {}
        bounds: list[Key | None] = [None, *cuts, None]
        for bucket in sorted(old.keys() | new.keys()):
            if old.get(bucket) != new.get(bucket):
                self._mismatched += 1
                rows_old, rows_new = _rows(old.get(bucket)), _rows(new.get(bucket))
                found.update(await self._resolve(bounds[bucket], bounds[bucket + 1], rows_old, rows_new, 0))
        return found

    async def _resolve(
        self, lo: Key | None, hi: Key | None, rows_old: int, rows_new: int, depth: int
    ) -> dict[Key, str]:
        tenant = self._tenant
        if max(rows_old, rows_new) <= self._settings.leaf_rows or depth >= _MAX_DEPTH:
            old, new = await asyncio.gather(
                self._old.key_hashes(tenant, lo, hi), self._new.key_hashes(tenant, lo, hi)
            )
            return classify(old, new)
        larger = self._old if rows_old >= rows_new else self._new
        every = math.ceil(max(rows_old, rows_new) / self._settings.split_ways)
        cuts = [c for c in await larger.cut_points(tenant, lo, hi, every) if c != lo]
        old_stats, new_stats = await asyncio.gather(
            self._old.bucket_stats(tenant, lo, hi, cuts), self._new.bucket_stats(tenant, lo, hi, cuts)
        )
        bounds: list[Key | None] = [lo, *cuts, hi]
        found: dict[Key, str] = {}
        for bucket in sorted(old_stats.keys() | new_stats.keys()):
            a, b = old_stats.get(bucket), new_stats.get(bucket)
            if a != b:
                found.update(
                    await self._resolve(bounds[bucket], bounds[bucket + 1], _rows(a), _rows(b), depth + 1)
                )
        return found

    async def _recheck(self, keys: Iterable[Key]) -> dict[Key, str]:
        wanted = sorted(keys)
        if self._refresh_old is not None:
            await self._refresh_old()
        old, new = await asyncio.gather(
            self._old.hashes_of(self._tenant, wanted), self._new.hashes_of(self._tenant, wanted)
        )
        return classify(old, new)

    async def _settle(self, found: dict[Key, str]) -> tuple[dict[Key, str], set[Key], int, list[str]]:
        """Split differences into reported and still-pending (unsettled) ones, waiting for the buffer."""
        warnings: list[str] = []
        if not found:
            return {}, set(), 0, warnings
        snapshot = await self._snapshot()
        if snapshot.error:
            warnings.append(f"{snapshot.error}: differences were not checked against pending intents")
        # Compared again now: a key written between the two sides' scans may already agree.
        current = await self._recheck(found)
        deferred = {key for key in current if snapshot.covers(self._table, key)}
        rechecked = 0
        for _ in range(self._settings.recheck_rounds):
            if not deferred:
                break
            if not await self._wait_drained(snapshot, self._settings.drain_timeout_s):
                warnings.append(f"the buffer did not drain within {self._settings.drain_timeout_s} s")
            snapshot = await self._snapshot()
            rechecked += len(deferred)
            again = await self._recheck(deferred)
            for key in deferred:
                if key in again:
                    current[key] = again[key]
                else:
                    current.pop(key, None)
            deferred = {key for key in again if snapshot.covers(self._table, key)}
        reported = {key: kind for key, kind in current.items() if key not in deferred}
        return reported, deferred, rechecked, warnings

    async def _samples(self, reported: dict[Key, str]) -> list[dict[str, Any]]:
        keys = sorted(reported, key=lambda k: (KINDS.index(reported[k]), k))[: self._settings.sample_diffs]
        if not keys:
            return []
        old, new = await asyncio.gather(
            self._old.rows_of(self._tenant, keys), self._new.rows_of(self._tenant, keys)
        )
        samples = []
        for key in keys:
            a, b = old.get(key), new.get(key)
            if a is None or b is None:  # a missing row: show the present one whole
                present = a or b
                assert present is not None  # a reported key is on one side at least
                side = "old" if a is not None else "new"
                columns = {
                    c: {"old": None, "new": None, side: v} for c, v in present.values.items() if v is not None
                }
            else:
                columns = {c: _shown(a, b, c) for c in self._old.columns if a.elements[c] != b.elements[c]}
            samples.append({"key": list(key), "kind": reported[key], "columns": columns})
        return samples


def _shown(a: SampleRow, b: SampleRow, column: str) -> dict[str, Any]:
    """A differing column's two values: as JSON, or as text where the JSON forms look alike (numeric
    1.0 and 1.00, float -0 and 0 both come out of jsonb as the same number)."""
    old, new = a.values.get(column), b.values.get(column)
    if orjson.dumps(old) == orjson.dumps(new):
        return {"old": a.texts[column], "new": b.texts[column]}
    return {"old": old, "new": new}


def _rows(stats: RangeStats | None) -> int:
    return 0 if stats is None else stats.rows


def _total(stats: Iterable[RangeStats], side: VerifySide) -> RangeStats:
    rows, digest = 0, 0
    sums: list[Decimal | None] = [None for _ in side.numeric]
    for item in stats:
        rows += item.rows
        digest += item.hash
        for i, value in enumerate(item.sums):
            if value is not None:
                before = sums[i]
                sums[i] = Decimal(value) if before is None else before + Decimal(value)
    return RangeStats(rows, digest, tuple(None if s is None else str(s) for s in sums))
