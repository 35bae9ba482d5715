"""Verification reports: the per-table result, its storage in the control-plane database (one row per
table per run, read by the admin API and the `complete` gate) and its rendering as a human table.

Rendering works on the JSON form, so the CLI prints a report the same way whether it just ran the
verification or fetched a stored report from the admin API.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import orjson

KINDS = ("missing_on_new", "missing_on_old", "different")
# Reports of version 1 (no `verify_version` in their JSON) digested rows with PostgreSQL's own hashes,
# blind to a numeric's sign and scale among others, and compared REST records with Python's `==`: the
# `complete` gate does not take their "passed" (see `backfill.digest`).
VERIFY_VERSION = 2
_SCHEMA_LOCK = 0x6375_7404

SCHEMA = """
CREATE TABLE IF NOT EXISTS cutover_verify_report (
    id           bigserial PRIMARY KEY,
    run_id       text NOT NULL,
    tenant       text NOT NULL,
    table_name   text NOT NULL,
    kind         text NOT NULL,            -- database | rest
    phase        text NOT NULL,            -- the tenant's phase when the run started
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz NOT NULL DEFAULT now(),
    passed       boolean NOT NULL,
    report       jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS cutover_verify_report_tenant ON cutover_verify_report (tenant, table_name, id);
"""


@dataclass
class TableReport:
    table: str
    kind: str = "database"
    transform: str | None = None
    rows_old: int = 0
    rows_new: int = 0
    sums: dict[str, dict[str, str | None]] = field(default_factory=dict)  # column -> {old, new}
    ranges: int = 0  # ranges of the first pass (pages for REST)
    ranges_mismatched: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys((*KINDS, "unsettled"), 0))
    keys: dict[str, list[list[str]]] = field(default_factory=lambda: {k: [] for k in (*KINDS, "unsettled")})
    samples: list[dict[str, Any]] = field(default_factory=list)
    rechecked: int = 0  # differing keys compared again after their pending intents were applied
    warnings: list[str] = field(default_factory=list)
    repair: dict[str, Any] | None = None
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return not any(self.counts.values())

    def add(self, kind: str, key: tuple[str, ...], max_keys: int) -> None:
        self.counts[kind] += 1
        if len(self.keys[kind]) < max_keys:
            self.keys[kind].append(list(key))

    def as_json(self) -> dict[str, Any]:
        rows = max(self.rows_old, self.rows_new)
        return {
            "table": self.table,
            "kind": self.kind,
            "verify_version": VERIFY_VERSION,
            "passed": self.passed,
            "transform": self.transform,
            "rows_old": self.rows_old,
            "rows_new": self.rows_new,
            "sums": self.sums,
            "ranges": self.ranges,
            "ranges_mismatched": self.ranges_mismatched,
            "counts": self.counts,
            "keys": self.keys,
            "samples": self.samples,
            "rechecked": self.rechecked,
            "warnings": self.warnings,
            "repair": self.repair,
            "seconds": round(self.seconds, 3),
            "rows_per_s": round(rows / self.seconds) if self.seconds > 0 else None,
        }


@dataclass
class VerifyRun:
    tenant: str
    phase: str
    started_at: datetime
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    tables: list[TableReport] = field(default_factory=list)
    report_ids: dict[str, int] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(t.passed for t in self.tables)

    def as_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "tenant": self.tenant,
            "phase": self.phase,
            "started_at": self.started_at.isoformat(),
            "passed": self.passed,
            "report_ids": self.report_ids,
            "tables": [t.as_json() for t in self.tables],
        }


async def ensure_schema(conn: asyncpg.Connection) -> None:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
        await conn.execute(SCHEMA)


async def store(conn: asyncpg.Connection, run: VerifyRun) -> None:
    """One row per table; their ids go into `run.report_ids`."""
    await ensure_schema(conn)
    for table in run.tables:
        run.report_ids[table.table] = await conn.fetchval(
            "INSERT INTO cutover_verify_report"
            " (run_id, tenant, table_name, kind, phase, started_at, passed, report)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb) RETURNING id",
            run.run_id,
            run.tenant,
            table.table,
            table.kind,
            run.phase,
            run.started_at,
            table.passed,
            orjson.dumps(table.as_json()).decode(),
        )


def _summary(row: asyncpg.Record) -> dict[str, Any]:
    report = orjson.loads(row["report"])
    return {
        "id": row["id"],
        "run_id": row["run_id"],
        "tenant": row["tenant"],
        "table": row["table_name"],
        "kind": row["kind"],
        "phase": row["phase"],
        "started_at": row["started_at"].isoformat(),
        "finished_at": row["finished_at"].isoformat(),
        "passed": row["passed"],
        "counts": report.get("counts", {}),
        "verify_version": report.get("verify_version", 1),
        "rows_old": report.get("rows_old"),
        "rows_new": report.get("rows_new"),
    }


async def list_reports(
    conn: asyncpg.Connection, tenant: str, *, table: str | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    try:
        rows = await conn.fetch(
            "SELECT * FROM cutover_verify_report WHERE tenant = $1 AND ($2::text IS NULL OR table_name = $2)"
            " ORDER BY id DESC LIMIT $3",
            tenant,
            table,
            limit,
        )
    except asyncpg.UndefinedTableError:
        return []
    return [_summary(row) for row in rows]


async def get_report(conn: asyncpg.Connection, report_id: int) -> dict[str, Any] | None:
    try:
        row = await conn.fetchrow("SELECT * FROM cutover_verify_report WHERE id = $1", report_id)
    except asyncpg.UndefinedTableError:
        return None
    if row is None:
        return None
    return {**_summary(row), "report": orjson.loads(row["report"])}


async def latest_per_table(
    conn: asyncpg.Connection, tenant: str, tables: list[str]
) -> dict[str, dict[str, Any]]:
    """The newest stored report of each of `tables` for `tenant` (tables never verified are absent)."""
    try:
        rows = await conn.fetch(
            "SELECT DISTINCT ON (table_name) * FROM cutover_verify_report"
            " WHERE tenant = $1 AND table_name = ANY($2::text[]) ORDER BY table_name, id DESC",
            tenant,
            tables,
        )
    except asyncpg.UndefinedTableError:
        return {}
    return {
        row["table_name"]: {
            **_summary(row),
            "started_at_dt": row["started_at"],
            "finished_at_dt": row["finished_at"],
        }
        for row in rows
    }


# Header and rows → the text of a table.
TablePrinter = Callable[[list[str], list[list[str]]], str]


def render(run: dict[str, Any], table: TablePrinter, *, keys_shown: int = 5) -> str:
    """A human table of a run's JSON form, then the differing keys and sample diffs of each table.
    `table` is the CLI's table printer (`proxy.cli.support.format_table`), handed down: the CLI composes
    this package, not the other way round."""
    header = [
        "TABLE",
        "ROWS OLD",
        "ROWS NEW",
        "RANGES",
        "MISMATCHED",
        *(k.upper().replace("_", " ") for k in KINDS),
    ]
    header += ["UNSETTLED", "RESULT"]
    rows = []
    for t in run["tables"]:
        counts = t["counts"]
        rows.append(
            [
                t["table"],
                f"{t['rows_old']:,}",
                f"{t['rows_new']:,}",
                str(t["ranges"]),
                str(t["ranges_mismatched"]),
                *(f"{counts.get(k, 0):,}" for k in KINDS),
                f"{counts.get('unsettled', 0):,}",
                "pass" if t["passed"] else "FAIL",
            ]
        )
    lines = [table(header, rows)]
    for t in run["tables"]:
        for kind in (*KINDS, "unsettled"):
            keys = t["keys"].get(kind, [])
            if keys:
                shown = ", ".join("/".join(k) for k in keys[:keys_shown])
                more = t["counts"][kind] - min(len(keys), keys_shown)
                lines.append(
                    f"{t['table']}: {kind.replace('_', ' ')}: {shown}" + (f" (+{more} more)" if more else "")
                )
        for sample in t["samples"]:
            changes = "; ".join(
                f"{column}: {_short(values.get('old'))} -> {_short(values.get('new'))}"
                for column, values in sample["columns"].items()
            )
            lines.append(f"  {'/'.join(sample['key'])} ({sample['kind'].replace('_', ' ')}): {changes}")
        if t.get("repair"):
            lines.append(_repair_line(t["table"], t["repair"]))
            lines.extend(_skipped_lines(t["table"], t["repair"], keys_shown))
        for warning in t.get("warnings", []):
            lines.append(f"{t['table']}: warning: {warning}")
    verdict = "PASSED" if run["passed"] else "FAILED"
    lines.append(f"verification of tenant {run['tenant']} ({run['phase']}): {verdict}")
    return "\n".join(lines)


def _repair_line(table: str, repair: dict[str, Any]) -> str:
    if repair.get("refused"):
        return f"{table}: not repaired from {repair['from']}: {repair['refused']}"
    line = f"{table}: repaired from {repair['from']}: {repair['copied']} copied, {repair['deleted']} deleted"
    return line + (f", {repair['failed']} failed" if repair.get("failed") else "")


def _skipped_lines(table: str, repair: dict[str, Any], keys_shown: int) -> list[str]:
    """The keys a repair left as they were, one line per reason (and detail), as many keys as shown
    elsewhere; reports stored before repairs listed them have none."""
    groups: dict[tuple[str, str], list[str]] = {}
    for item in repair.get("skipped", []):
        groups.setdefault((item["reason"], item["detail"]), []).append("/".join(item["key"]))
    lines = []
    for (reason, detail), keys in groups.items():
        more = len(keys) - keys_shown
        shown = ", ".join(keys[:keys_shown]) + (f" (+{more} more)" if more > 0 else "")
        lines.append(f"{table}: not repaired ({reason.replace('_', ' ')}): {shown}: {detail}")
    listed = sum(len(keys) for keys in groups.values())
    total = sum(repair.get("skipped_counts", {}).values())
    if total > listed:
        lines.append(f"{table}: {total - listed} more keys not repaired (beyond verify.max_keys)")
    return lines


def _short(value: Any, limit: int = 40) -> str:
    text = orjson.dumps(value).decode() if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
