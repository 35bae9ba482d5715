"""Counters of the shadow process, written to PostgreSQL as increments every `flush_interval_s`.

Three sets, each keyed so that its size stays bounded between two flushes:
- per (tenant, resource): comparisons by outcome, new-side errors, skipped reads (reports);
- per (tenant, resource, field): how often the field diverged, and how often it differed as noise;
- per (tenant, phase): the rollback window's figures, stamped with the database's clock at flush time, so
  proxies on hosts with skewed clocks still fall in the same window; the same figures per tenant go to the
  health history's buckets (`proxy.health.store`).

A flush that fails keeps its counts for the next one (up to the bounds): a short store outage loses nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from config.operator import HealthSettings
from proxy.health.series import fold_shadow
from proxy.health.store import write_shadow
from proxy.shadow.job import Verdict

log = logging.getLogger("cutover.divergence")
MAX_KEYS = 20_000  # per set; beyond it new keys are dropped (and logged) until the next flush

# Column order of `cutover_shadow_count` increments.
COUNT_COLUMNS = ("compared", "equal", "noise", "divergent", "failed", "new_errors", "skipped")
_VERDICT_COLUMN = {
    Verdict.EQUAL: 1,
    Verdict.NOISE: 2,
    Verdict.DIVERGENT: 3,
    Verdict.FAILED: 4,
}


@dataclass(frozen=True, slots=True)
class Outcome:
    """One comparison, as the counters see it."""

    tenant: str
    resource: str
    phase: str
    verdict: Verdict
    new_error: bool  # the new side failed: transport error, timeout or 5xx
    divergent_fields: tuple[str, ...] = ()
    noise_fields: tuple[str, ...] = ()


@dataclass
class Tally:
    counts: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    fields: dict[tuple[str, str, str], list[int]] = field(default_factory=dict)  # [divergent, noise]
    window: dict[tuple[str, str], list[int]] = field(default_factory=dict)  # [compared, answered, div, err]
    dropped_keys: int = 0

    def add(self, outcome: Outcome) -> None:
        if outcome.verdict is Verdict.INTERNAL:
            return
        row = self._row(self.counts, (outcome.tenant, outcome.resource), len(COUNT_COLUMNS))
        if row is not None:
            row[0] += 1
            row[_VERDICT_COLUMN[outcome.verdict]] += 1
            row[5] += outcome.new_error
        for name in outcome.divergent_fields:
            counters = self._row(self.fields, (outcome.tenant, outcome.resource, name), 2)
            if counters is not None:
                counters[0] += 1
        for name in outcome.noise_fields:
            counters = self._row(self.fields, (outcome.tenant, outcome.resource, name), 2)
            if counters is not None:
                counters[1] += 1
        window = self._row(self.window, (outcome.tenant, outcome.phase), 4)
        if window is not None:
            window[0] += 1
            window[1] += outcome.verdict is not Verdict.FAILED
            window[2] += outcome.verdict is Verdict.DIVERGENT
            window[3] += outcome.new_error

    def add_skips(self, tenant: str, resource: str, count: int) -> None:
        row = self._row(self.counts, (tenant, resource), len(COUNT_COLUMNS))
        if row is not None:
            row[6] += count

    def _row(self, table: dict[Any, list[int]], key: tuple[str, ...], width: int) -> list[int] | None:
        row = table.get(key)
        if row is None:
            if len(table) >= MAX_KEYS:
                self.dropped_keys += 1
                return None
            row = table[key] = [0] * width
        return row

    def empty(self) -> bool:
        return not (self.counts or self.fields or self.window)

    def take(self) -> Tally:
        """Hand over the counts gathered so far and start afresh."""
        taken = Tally(self.counts, self.fields, self.window)
        self.counts, self.fields, self.window = {}, {}, {}
        return taken

    def merge_back(self, taken: Tally) -> None:
        """Return counts a failed flush could not write."""
        pairs: list[tuple[dict[Any, list[int]], dict[Any, list[int]]]] = [
            (taken.counts, self.counts),
            (taken.fields, self.fields),
            (taken.window, self.window),
        ]
        for source, target in pairs:
            for key, values in source.items():
                row = self._row(target, key, len(values))
                if row is not None:
                    for index, value in enumerate(values):
                        row[index] += value


async def write_tally(
    pool: asyncpg.Pool, taken: Tally, *, health: HealthSettings | None = None, labels: Sequence[str] = ()
) -> None:
    """Add `taken` to the tables, in one transaction; with `health`, the window's figures also go to the
    per-tenant health history (`proxy.health.store`), capped like the data plane's (`labels` kept apart)."""
    async with pool.acquire() as conn, conn.transaction():
        if health is not None and health.enabled and taken.window:
            rows = fold_shadow(taken.window, labels, health.top_tenants)
            await write_shadow(conn, rows, health.bucket_s)
        if taken.counts:
            await conn.executemany(
                "INSERT INTO cutover_shadow_count AS c"
                " (tenant, resource, compared, equal, noise, divergent, failed, new_errors, skipped)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
                " ON CONFLICT (tenant, resource) DO UPDATE SET"
                " compared = c.compared + EXCLUDED.compared, equal = c.equal + EXCLUDED.equal,"
                " noise = c.noise + EXCLUDED.noise, divergent = c.divergent + EXCLUDED.divergent,"
                " failed = c.failed + EXCLUDED.failed, new_errors = c.new_errors + EXCLUDED.new_errors,"
                " skipped = c.skipped + EXCLUDED.skipped, updated_at = now()",
                [(tenant, resource, *values) for (tenant, resource), values in taken.counts.items()],
            )
        if taken.fields:
            await conn.executemany(
                "INSERT INTO cutover_shadow_field AS f (tenant, resource, field, divergent, noise)"
                " VALUES ($1, $2, $3, $4, $5)"
                " ON CONFLICT (tenant, resource, field) DO UPDATE SET"
                " divergent = f.divergent + EXCLUDED.divergent, noise = f.noise + EXCLUDED.noise,"
                " updated_at = now()",
                [(*key, *values) for key, values in taken.fields.items()],
            )
        if taken.window:
            await conn.executemany(
                "INSERT INTO cutover_shadow_window AS w"
                " (tenant, phase, at, compared, answered, divergent, new_errors)"
                " VALUES ($1, $2, date_trunc('second', now()), $3, $4, $5, $6)"
                " ON CONFLICT (tenant, phase, at) DO UPDATE SET"
                " compared = w.compared + EXCLUDED.compared, answered = w.answered + EXCLUDED.answered,"
                " divergent = w.divergent + EXCLUDED.divergent,"
                " new_errors = w.new_errors + EXCLUDED.new_errors",
                [(*key, *values) for key, values in taken.window.items()],
            )
