"""The `complete` gate: a tenant may leave the old side behind only once every covered table and REST
resource has a passing verification report, started after the tenant's last phase change (so it checked
the data as the current phase writes it), made by the current verification (`report.VERIFY_VERSION`: an
earlier one could pass a changed value) and, if configured, not older than `gate.max_age_s`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from backfill.report import VERIFY_VERSION, latest_per_table
from config.data import DataSettings


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    problems: list[dict[str, Any]] = field(default_factory=list)  # {table, problem, report_id?, ...}

    def describe(self, tenant: str) -> str:
        parts = []
        for p in self.problems:
            if p["problem"] == "missing":
                parts.append(f"{p['table']}: no verification report")
            elif p["problem"] == "failed":
                counts = ", ".join(f"{k} {v}" for k, v in p["counts"].items() if v)
                parts.append(f"{p['table']}: report {p['report_id']} failed ({counts})")
            else:
                parts.append(f"{p['table']}: report {p['report_id']} ({p['finished_at']}) is {p['why']}")
        return (
            f"tenant {tenant!r} needs a passing `cutover verify` of every covered table before complete: "
            + "; ".join(parts)
        )


async def check_complete_gate(
    conn: asyncpg.Connection,
    data: DataSettings,
    tenant: str,
    *,
    phase_changed_at: datetime | None,
    now: datetime,
) -> GateVerdict:
    gate = data.gate
    covered = data.covered
    if not gate.require_verify or not covered:
        return GateVerdict(True)
    latest = await latest_per_table(conn, tenant, covered)
    problems: list[dict[str, Any]] = []
    for table in covered:
        report = latest.get(table)
        if report is None:
            problems.append({"table": table, "problem": "missing"})
            continue
        started: datetime = report["started_at_dt"]
        finished: datetime = report["finished_at_dt"]
        base = {"table": table, "report_id": report["id"], "finished_at": report["finished_at"]}
        if not report["passed"]:
            problems.append({**base, "problem": "failed", "counts": report["counts"]})
        elif gate.since_last_phase_change and phase_changed_at is not None and started <= phase_changed_at:
            # Started before the change: part of it may have checked data written under the previous phase.
            why = f"older than the last phase change ({phase_changed_at.isoformat()})"
            problems.append({**base, "problem": "stale", "why": why})
        elif report["verify_version"] < VERIFY_VERSION:
            why = (
                f"made by verify version {report['verify_version']}, which could pass a changed value"
                f" (version {VERIFY_VERSION} cannot)"
            )
            problems.append({**base, "problem": "stale", "why": why})
        elif gate.max_age_s is not None and now - finished > timedelta(seconds=gate.max_age_s):
            problems.append({**base, "problem": "stale", "why": f"older than {gate.max_age_s:g} s"})
    return GateVerdict(not problems, problems)
