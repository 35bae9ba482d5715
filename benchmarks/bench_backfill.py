#!/usr/bin/env python3
"""Benchmark `cutover backfill` and `cutover verify` against PostgreSQL's own COPY of the same rows.

Reference: `psql -c "COPY (SELECT ...) TO STDOUT (FORMAT binary)" | psql -c "COPY ... FROM STDIN (FORMAT
binary)"`, old database → new database, into an empty table with the same primary key as the backfill's
target. Backfill: `run_backfill` (what `cutover backfill` runs) into an empty table, default chunk of
10,000 rows. Verify: `run_verify` (what `cutover verify` runs) on the two matching tables; both sides
compute at once, so rows per second per side is rows / wall time.

Digests: the first pass of verify (per range of ~2,000 keys: count, numeric sums, a digest of the rows)
as one query per side, both sides at once, with each candidate row digest in turn: the one verify uses
(`backfill.digest`), the one it used before (PostgreSQL's hash of the typed row, blind to a numeric's
sign), and the alternatives (text of the row through hashtextextended, md5 or sha256, per-range md5 of an
ordered string_agg, bit_xor instead of sum), beside a bare count of the same rows.

One run measures every target once per round, interleaved (the machine drifts over minutes), and
reports medians over rounds; `--write PATH` replaces the `bench_backfill` section of PATH. `--baseline
REF` also measures `cutover verify` of git commit REF's tree (exported to a temporary directory and run in
a process started there) on the same tables, in the same rounds.

    .venv/bin/python benchmarks/bench_backfill.py --write BENCHMARKS.md      # 500,000 rows, 3 rounds
    .venv/bin/python benchmarks/bench_backfill.py --quick                    # 200,000 rows, 2 rounds
    .venv/bin/python benchmarks/bench_backfill.py --rows 200000 --rounds 5 --baseline 909f4fd

Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust) and psql. Fresh databases, dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import asyncpg
from harness import (  # this folder's harness (scripts run from here)
    cpu_model,
    export_tree,
    log,
    median,
    rates,
    shown_path,
    write_section,
)

from backfill import checkpoint
from backfill.digest import RECORD, element, row_digest
from backfill.runner import BackfillOptions, run_backfill
from backfill.verify_run import VerifyOptions, run_verify
from backfill.verify_sql import prepare_session
from config.settings import Settings
from proxy.control.schema import ensure_schema

MARK_START = "<!-- bench_backfill:start -->"
MARK_END = "<!-- bench_backfill:end -->"
PG_BASE = "postgresql://postgres@127.0.0.1:5432/"
TENANT = "bench-tenant"
COLUMNS = "tenant_id, id, customer, quantity, price, note, created"
OLD_DDL = """CREATE TABLE bench_old (account text NOT NULL, order_no bigint NOT NULL, customer text NOT NULL,
    qty integer NOT NULL, price numeric(12,2), note text, created timestamptz NOT NULL,
    PRIMARY KEY (account, order_no))"""
NEW_DDL = """CREATE TABLE {name} (tenant_id text NOT NULL, id bigint NOT NULL, customer text NOT NULL,
    quantity integer NOT NULL, price numeric(12,2), note text, created timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id))"""
FILL = """INSERT INTO bench_old SELECT $1, g, 'customer-' || (g % 997), g % 50, (g % 100000) / 100.0,
    repeat(md5(g::text), 4), timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second'
    FROM generate_series(1, $2::int) AS g"""
# The compared columns of each side (as verify's first pass reads them: no cast, the types are the same)
# and the new columns' type OIDs: bigint, text, integer, numeric, text, timestamptz.
DIGEST_COLUMNS = {
    "old": ("order_no", "customer", "qty", "price", "note", "created"),
    "new": ("id", "customer", "quantity", "price", "note", "created"),
}
DIGEST_TYPES = (20, 25, 23, 1700, 25, 1184)
DIGEST_TABLES = {"old": ("bench_old", "account", "order_no"), "new": ("bench_new", "tenant_id", "id")}
VERIFY_TARGET = 500_000
# `cutover verify` of another commit's tree (`--baseline`), run in a process started in that tree.
BASELINE_VERIFY = """
import asyncio, json, sys
from backfill.verify_run import VerifyOptions, run_verify
from config.settings import Settings
settings = Settings.model_validate(json.loads(sys.argv[1]))
run = asyncio.run(run_verify(settings, VerifyOptions(sys.argv[2], store=False)))
assert run.passed, run.as_json()
print(run.tables[0].seconds)
"""


def digest_variants(side: str) -> dict[str, str]:
    """Candidate range digests over one side's rows: label -> aggregate expression."""
    columns = DIGEST_COLUMNS[side]
    exact = row_digest([element(c, t) for c, t in zip(columns, DIGEST_TYPES, strict=True)], RECORD)
    row = f"ROW({', '.join(columns)})"
    key = DIGEST_TABLES[side][2]
    return {
        "count only (no digest, no sums)": "",
        "verify's digest (`backfill.digest`), sum": f"sum({exact})",
        "verify's digest, bit_xor": f"bit_xor({exact})",
        "before: `hash_record_extended` of the typed row, sum (misses sign, scale, ...)": (
            f"sum(hash_record_extended({row}, 0))"
        ),
        "`hashtextextended` of the row's text, sum": f"sum(hashtextextended({row}::text, 0))",
        "md5 of the row's text, first 64 bits, sum": (
            f"sum(('x' || left(md5({row}::text), 16))::bit(64)::bigint)"
        ),
        "sha256 of the row's text, first 64 bits, sum": (
            f"sum(('x' || left(encode(sha256({row}::text::bytea), 'hex'), 16))::bit(64)::bigint)"
        ),
        "md5 of the range's ordered string_agg of row md5s": (
            f"md5(string_agg(md5({row}::text), '' ORDER BY {key}))"
        ),
    }


REFERENCE_SELECT = (
    "SELECT account, order_no, customer, qty, price, note, created FROM bench_old WHERE account = '"
    + TENANT
    + "'"
)


async def execute(url: str, *statements: str, args: tuple[Any, ...] = ()) -> None:
    conn = await asyncpg.connect(url)
    try:
        for statement in statements:
            await conn.execute(statement, *args) if args else await conn.execute(statement)
    finally:
        await conn.close()


class Bench:
    def __init__(self, rows: int, rounds: int, baseline: str | None = None) -> None:
        self.rows = rows
        self.rounds = rounds
        self.baseline = baseline  # a commit whose `cutover verify` is measured too
        self.baseline_tree: Path | None = None
        suffix = uuid.uuid4().hex[:8]
        self.names = {side: f"cutover_bench_{side}_{suffix}" for side in ("old", "new", "control")}
        self.urls = {side: PG_BASE + name for side, name in self.names.items()}
        self.row_bytes = 0.0
        self.results: dict[str, list[float]] = {
            "reference": [],
            "backfill": [],
            "staged": [],
            "parallel": [],
            "verify": [],
            "verify_baseline": [],
        }
        self.digests: dict[str, list[float]] = {}
        self.load: list[float] = []  # 1-minute load average at the start and the end of the rounds

    def raw_settings(self, new_table: str) -> dict[str, Any]:
        table = {
            "name": "orders",
            "old": {"table": "bench_old", "tenant_column": "account"},
            "new": {"table": new_table},
            "key": ["id"],
            "columns": {"id": "order_no", "quantity": "qty"},
        }
        return {
            "backends": {"old": {"url": "http://127.0.0.1:9"}, "new": {"url": "http://127.0.0.1:9"}},
            "postgres_url": self.urls["control"],
            "buffer": {"key_prefix": f"cutover-bench-{uuid.uuid4().hex[:8]}"},
            "data": {
                "old": {"postgres_url": self.urls["old"]},
                "new": {"postgres_url": self.urls["new"]},
                "tables": [table],
            },
        }

    def settings(self, new_table: str) -> Settings:
        return Settings.model_validate(self.raw_settings(new_table))

    async def setup(self) -> None:
        for name in self.names.values():
            await execute(PG_BASE + "postgres", f'CREATE DATABASE "{name}"')
        conn = await asyncpg.connect(self.urls["control"])
        try:
            await ensure_schema(conn)
            await conn.execute(
                "INSERT INTO cutover_tenant_phase (tenant, phase, version, updated_by)"
                " VALUES ($1, 'dual_write', 1, 'bench')",
                TENANT,
            )
        finally:
            await conn.close()
        log(f"loading {self.rows:,} rows (and 10% of another tenant's) into the old database")
        await execute(self.urls["old"], OLD_DDL)
        await execute(self.urls["old"], FILL, args=(TENANT, self.rows))
        await execute(self.urls["old"], FILL, args=("bystander", self.rows // 10))
        await execute(self.urls["old"], "VACUUM ANALYZE bench_old")
        for name in ("bench_new", "bench_ref"):
            await execute(self.urls["new"], NEW_DDL.format(name=name))
        conn = await asyncpg.connect(self.urls["new"])
        try:
            await checkpoint.ensure_schema(conn)
        finally:
            await conn.close()
        conn = await asyncpg.connect(self.urls["old"])
        try:
            self.row_bytes = float(
                await conn.fetchval(
                    "SELECT avg(pg_column_size(t.*)) FROM bench_old t WHERE account = $1", TENANT
                )
            )
        finally:
            await conn.close()

    async def cleanup(self) -> None:
        for name in self.names.values():
            await execute(PG_BASE + "postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    async def reference(self) -> float:
        await execute(self.urls["new"], "TRUNCATE bench_ref", "CHECKPOINT")
        copy_out = f"COPY ({REFERENCE_SELECT}) TO STDOUT (FORMAT binary)"
        copy_in = f"COPY bench_ref ({COLUMNS}) FROM STDIN (FORMAT binary)"
        pipeline = (
            f"set -o pipefail; psql -X -q {shlex.quote(self.urls['old'])} -c {shlex.quote(copy_out)}"
            f" | psql -X -q {shlex.quote(self.urls['new'])} -c {shlex.quote(copy_in)}"
        )
        started = time.perf_counter()
        done = await asyncio.create_subprocess_exec("bash", "-c", pipeline)
        if await done.wait() != 0:
            raise RuntimeError("the reference COPY pipeline failed")
        return self.rows / (time.perf_counter() - started)

    async def backfill(self, parallel: int, *, staged: bool = False) -> float:
        await execute(
            self.urls["new"], "TRUNCATE bench_new", "TRUNCATE cutover_backfill_checkpoint", "CHECKPOINT"
        )
        if staged:
            # One row in 1,000 already on new (as mirrored writes would leave them): no chunk's range is
            # empty, so every chunk goes through the staging table and the upsert.
            await execute(
                self.urls["new"],
                "INSERT INTO bench_new SELECT $1, g, 'mirrored', 0, 0, 'x', now()"
                " FROM generate_series(1, $2::int, 1000) AS g",
                args=(TENANT, self.rows),
            )
        started = time.perf_counter()
        report = await run_backfill(self.settings("bench_new"), BackfillOptions(TENANT, parallel=parallel))
        elapsed = time.perf_counter() - started
        table = report.tables[0]
        assert table.rows_copied == self.rows, report.as_json()
        assert table.chunks_direct == (0 if staged else table.chunks), report.as_json()
        return self.rows / elapsed

    async def verify(self) -> float:
        run = await run_verify(self.settings("bench_new"), VerifyOptions(TENANT, store=False))
        assert run.passed, run.as_json()
        return self.rows / run.tables[0].seconds

    async def verify_baseline(self) -> float:
        """`run_verify` of the baseline commit's tree, in a process started there, on the same tables."""
        assert self.baseline_tree is not None
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            BASELINE_VERIFY,
            json.dumps(self.raw_settings("bench_new")),
            TENANT,
            cwd=self.baseline_tree,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"the baseline's verify failed: {err.decode()[-2000:]}")
        return self.rows / float(out.decode().split()[-1])

    async def digest_rates(self) -> dict[str, float]:
        """Rows per second per side of each candidate digest's first pass, both sides at once."""
        conns = {side: await asyncpg.connect(self.urls[side]) for side in ("old", "new")}
        try:
            # Ranges of ~2,000 keys, as verify's first pass cuts an integer key.
            cuts = list(range(1, self.rows + 1, 2_000))
            queries = {}
            for side, conn in conns.items():
                await prepare_session(conn)
                table, tenant, key = DIGEST_TABLES[side]
                qty, price = DIGEST_COLUMNS[side][2:4]
                queries[side] = {
                    label: f"SELECT width_bucket({key}, $2::bigint[]) AS b, count(*) AS n"
                    + (f", {agg} AS h, sum({qty}), sum({price})" if agg else "")
                    + f" FROM {table} WHERE {tenant} = $1 GROUP BY 1"
                    for label, agg in digest_variants(side).items()
                }

            async def first_pass(side: str, label: str) -> None:
                async with conns[side].transaction():  # as `VerifySide.bucket_stats` runs it
                    await conns[side].execute("SET LOCAL enable_sort = off")
                    await conns[side].fetch(queries[side][label], TENANT, cuts)

            rates = {}
            for label in queries["old"]:
                started = time.perf_counter()
                await asyncio.gather(*(first_pass(side, label) for side in conns))
                rates[label] = self.rows / (time.perf_counter() - started)
            return rates
        finally:
            for conn in conns.values():
                await conn.close()

    async def run(self) -> None:
        await self.setup()
        try:
            with tempfile.TemporaryDirectory(prefix="cutover-bench-baseline-") as directory:
                if self.baseline is not None:
                    self.baseline_tree = export_tree(self.baseline, Path(directory))
                self.load.append(os.getloadavg()[0])
                await self._rounds()
                self.load.append(os.getloadavg()[0])
        finally:
            await self.cleanup()

    async def _rounds(self) -> None:
        measures: list[tuple[str, Callable[[], Awaitable[float]]]] = [
            ("reference", self.reference),
            ("backfill", lambda: self.backfill(1)),
            ("staged", lambda: self.backfill(1, staged=True)),
            ("parallel", lambda: self.backfill(2)),
            ("verify", self.verify),
        ]
        if self.baseline is not None:
            measures.append(("verify_baseline", self.verify_baseline))
        for round_no in range(1, self.rounds + 1):
            for name, measure in measures:
                value = await measure()
                self.results[name].append(value)
                log(f"round {round_no}: {name} {value:,.0f} rows/s")
            for label, value in (await self.digest_rates()).items():
                self.digests.setdefault(label, []).append(value)
                log(f"round {round_no}: digest {label}: {value:,.0f} rows/s")


def section(bench: Bench, command: str, pg_version: str) -> str:
    ref, back, staged, par, ver = (
        median(bench.results[k]) for k in ("reference", "backfill", "staged", "parallel", "verify")
    )

    # Ratios per round (target and reference measured back to back), then their median.
    def ratio(name: str) -> float:
        return median([a / b for a, b in zip(bench.results[name], bench.results["reference"], strict=True)])

    share = ratio("backfill")
    back_ok = share >= 0.5
    lines = [
        MARK_START,
        "## Backfill and verification benchmark (`benchmarks/bench_backfill.py`)",
        "",
        f"- command: `{command}`",
        f"- date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        f"- machine: nproc {os.cpu_count()}, {cpu_model()}, kernel {platform.release()};"
        " shared with other jobs while measuring, so absolute figures vary; the ratio is measured within"
        f" each round (1-minute load average {bench.load[0]:.1f} at the start, {bench.load[-1]:.1f} at"
        " the end)",
        f"- Python: `{shown_path(sys.executable)}` ({platform.python_version()},"
        f" {platform.python_implementation()}),"
        f" asyncio event loop; asyncpg {metadata.version('asyncpg')}; PostgreSQL {pg_version}"
        " (old and new are two databases of one server)",
        f"- N = {bench.rows:,} rows of one tenant (plus {bench.rows // 10:,} of another in the same old"
        " table),"
        f" {bench.row_bytes:.0f} bytes a row on average; {bench.rounds} rounds, medians",
        "",
        'Rates are medians over rounds; "% of the reference" is the median of the per-round ratios.',
        "",
        "| # | measurement | result | target | verdict |",
        "|---|---|---|---|---|",
        f"| 1 | reference: psql `COPY (SELECT ...) TO STDOUT` piped into `COPY ... FROM STDIN`, binary | "
        f"{ref:,.0f} rows/s | reference | info |",
        f"| 2 | `cutover backfill`, chunks of 10,000, one range | {back:,.0f} rows/s = {share:.0%} of the"
        " reference"
        f" | ≥ 50 % of the reference (goal ≥ 100,000 rows/s) | {'PASS' if back_ok else 'FAIL'}"
        f"{'' if back >= 100_000 else ' (below the 100k goal)'} |",
        f"| 2b | `cutover backfill`, every chunk through staging + upsert (new already holds 1 row in 1,000)"
        f" | {staged:,.0f} rows/s = {ratio('staged'):.0%} of the reference | none (worst case) | info |",
        f"| 3 | `cutover backfill --parallel 2` | {par:,.0f} rows/s = {ratio('parallel'):.0%} of the"
        " reference | none | info |",
        f"| 4 | `cutover verify`, matching data, both sides at once | {ver:,.0f} rows/s per side | "
        f"≥ {VERIFY_TARGET:,} rows/s per side | {'PASS' if ver >= VERIFY_TARGET else 'FAIL'} |",
    ]
    if bench.baseline is not None:
        before = median(bench.results["verify_baseline"])
        lines.append(
            f"| 4b | `cutover verify` of `{bench.baseline}` (before the exact digest: PostgreSQL's hash of"
            f" the typed row, which misses a numeric's sign), same data, same rounds | {before:,.0f} rows/s"
            " per side | none | info |"
        )
    lines += [
        "",
        "Per round (rows/s): reference "
        + rates(bench.results["reference"])
        + "; backfill "
        + rates(bench.results["backfill"])
        + "; staged "
        + rates(bench.results["staged"])
        + "; parallel 2 "
        + rates(bench.results["parallel"])
        + "; verify "
        + rates(bench.results["verify"])
        + (
            f"; verify of `{bench.baseline}` " + rates(bench.results["verify_baseline"])
            if bench.baseline
            else ""
        )
        + ".",
        "",
        "The backfill hands the old side's binary COPY stream to the new side's COPY buffer by buffer (no row"
        " is decoded in Python). Under the tenant's mirror lock, a chunk whose key range is still empty on"
        " new is copied straight into the table (row 2: a first run into an empty table); otherwise into a"
        " temporary staging table, then upserted (row 2b); the checkpoint commits with the rows."
        " Every target table starts empty with its primary key in place, and a CHECKPOINT runs before"
        " each measurement. Verify computes, per range of ~2,000 keys on each side, the row count, the"
        " sums of numeric columns and the sum of an exact 64-bit digest of each row (`backfill.digest`:"
        " PostgreSQL's hash of the value where it covers every bit, else of the value's binary form or"
        " text).",
        "",
        "Row digests, measured in the same rounds: verify's first pass alone (one query per side, both"
        " sides at once, the same ranges and sums) with each candidate digest; rows/s per side, medians.",
        "",
        "| digest | rows/s per side | exact |",
        "|---|---|---|",
    ]
    for label, values in bench.digests.items():
        exact = "–" if label.startswith("count") else ("no" if label.startswith("before") else "yes")
        lines.append(f"| {label} | {median(values):,.0f} | {exact} |")
    lines += [
        "",
        "The text-based digests are exact but render every value as text: numeric, timestamptz and"
        " bigint output dominate. verify's digest renders as text only the types without a cheaper exact"
        " form (jsonb, json, arrays, composites), so on this table (bigint, text, integer, numeric, text,"
        " timestamptz) it renders nothing. bit_xor would cancel duplicate rows, which only a table without"
        " a unique key could hold (verify requires one), and is no clear gain over sum in the table above.",
        MARK_END,
    ]
    return "\n".join(lines)


async def server_version() -> str:
    conn = await asyncpg.connect(PG_BASE + "postgres")
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="200,000 rows, 2 rounds")
    parser.add_argument("--baseline", help="also measure `cutover verify` of this git commit's tree")
    parser.add_argument("--write", type=Path, help="replace the bench_backfill section of this Markdown file")
    args = parser.parse_args()
    if shutil.which("psql") is None:
        print("psql is needed for the reference COPY", file=sys.stderr)
        return 2
    rows, rounds = (200_000, 2) if args.quick else (args.rows, args.rounds)
    bench = Bench(rows, rounds, args.baseline)
    asyncio.run(bench.run())
    command = shlex.join([shown_path(sys.executable), *sys.argv])
    text = section(bench, command, asyncio.run(server_version()))
    print(text)
    if args.write:
        write_section(args.write, text, MARK_START, MARK_END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
