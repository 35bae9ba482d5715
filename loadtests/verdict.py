"""Judge a locust run: its `<prefix>_stats.csv` against a budgets file. Pure; imports nothing of cutover.

Budgets (YAML or JSON):

    max_error_rate: 0.01          # failed / sent, for every request type and for all of them together
    min_requests: 10              # a request type with fewer samples breaks the budget (nothing to judge)
    latency_ms:                   # request-name pattern (shell style) -> percentile budgets in ms
      "* read":  {p50: 50, p95: 200, p99: 500}
      "* write": {p50: 80, p95: 300, p99: 800}

The first pattern that matches a request name gives its budget; a request type no pattern matches is
judged on errors only, and said so.
"""

from __future__ import annotations

import csv
import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PERCENTILES = ("p50", "p95", "p99")
_CSV_COLUMN = {"p50": "50%", "p95": "95%", "p99": "99%"}
AGGREGATED = "Aggregated"


@dataclass(frozen=True)
class Stats:
    name: str
    requests: int
    failures: int
    latency_ms: dict[str, float]

    @property
    def error_rate(self) -> float:
        return self.failures / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class Budgets:
    max_error_rate: float
    min_requests: int
    latency_ms: list[tuple[str, dict[str, float]]]

    def latency_for(self, name: str) -> tuple[str, dict[str, float]] | None:
        for pattern, limits in self.latency_ms:
            if fnmatch.fnmatchcase(name, pattern):
                return pattern, limits
        return None


@dataclass
class Verdict:
    rows: list[tuple[Stats, dict[str, float] | None, list[str]]] = field(default_factory=list)
    breaches: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.breaches


class BudgetFileError(ValueError):
    pass


def load_budgets(path: Path) -> Budgets:
    raw: Any = yaml.safe_load(path.read_text())
    if not isinstance(raw, dict):
        raise BudgetFileError(f"{path}: expected a mapping at the top level")
    try:
        latency = [
            (str(pattern), {p: float(limits[p]) for p in PERCENTILES if p in limits})
            for pattern, limits in (raw.get("latency_ms") or {}).items()
        ]
        budgets = Budgets(
            max_error_rate=float(raw.get("max_error_rate", 0.0)),
            min_requests=int(raw.get("min_requests", 1)),
            latency_ms=latency,
        )
    except (TypeError, ValueError, AttributeError) as exc:
        raise BudgetFileError(f"{path}: {exc}") from None
    unknown = set(raw) - {"max_error_rate", "min_requests", "latency_ms"}
    if unknown:
        raise BudgetFileError(f"{path}: unknown keys {sorted(unknown)}")
    return budgets


def read_stats(csv_path: Path) -> list[Stats]:
    """Rows of locust's `<prefix>_stats.csv`, the `Aggregated` row last."""
    with csv_path.open(newline="") as handle:
        rows = []
        for row in csv.DictReader(handle):
            rows.append(
                Stats(
                    name=row["Name"],
                    requests=int(row["Request Count"]),
                    failures=int(row["Failure Count"]),
                    latency_ms={p: _number(row[_CSV_COLUMN[p]]) for p in PERCENTILES},
                )
            )
    return rows


def _number(text: str) -> float:
    return float(text) if text not in ("", "N/A") else float("nan")


def judge(stats: list[Stats], budgets: Budgets) -> Verdict:
    verdict = Verdict()
    typed = [s for s in stats if s.name != AGGREGATED]
    if not typed:
        verdict.breaches.append("no requests were recorded")
    for row in stats:
        problems: list[str] = []
        if row.error_rate > budgets.max_error_rate:
            problems.append(f"error rate {row.error_rate:.2%} > {budgets.max_error_rate:.2%}")
        limits: dict[str, float] | None = None
        if row.name != AGGREGATED:
            if row.requests < budgets.min_requests:
                problems.append(f"{row.requests} requests < {budgets.min_requests}: too few to judge")
            found = budgets.latency_for(row.name)
            if found is not None:
                limits = found[1]
                for percentile, limit in limits.items():
                    measured = row.latency_ms[percentile]
                    if not measured <= limit:  # NaN (no samples) breaks the budget too
                        problems.append(f"{percentile} {measured:g} ms > {limit:g} ms")
        verdict.rows.append((row, limits, problems))
        verdict.breaches.extend(f"{row.name}: {problem}" for problem in problems)
    return verdict


def render(verdict: Verdict) -> str:
    header = ["REQUEST", "SENT", "ERRORS", "P50", "P95", "P99", "BUDGET p50/p95/p99 ms", "VERDICT"]
    lines = [header]
    for row, limits, problems in verdict.rows:
        budget = "/".join(f"{limits[p]:g}" if p in limits else "-" for p in PERCENTILES) if limits else "-"
        lines.append(
            [
                row.name,
                str(row.requests),
                f"{row.error_rate:.2%}",
                *(f"{row.latency_ms[p]:g}" for p in PERCENTILES),
                budget,
                "ok" if not problems else "BROKEN",
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    table = "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )
    summary = (
        "verdict: PASS"
        if verdict.passed
        else "verdict: FAIL\n" + "\n".join(f"  - {b}" for b in verdict.breaches)
    )
    return f"{table}\n{summary}"
