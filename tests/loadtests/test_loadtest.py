"""The load-test verdict: budgets judged on locust CSV files, and a 20-second smoke of `make loadtest`
(the demo set-up, one tenant per phase, both profiles at once) that must pass its budgets and must fail
a budget set too tight for it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from loadtests.run_loadtest import PHASES
from loadtests.verdict import BudgetFileError, judge, load_budgets, read_stats, render

pytestmark = pytest.mark.load

REPO = Path(__file__).resolve().parents[2]
HEADER = (
    "Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,Min Response Time,"
    "Max Response Time,Average Content Size,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,99.9%,"
    "99.99%,100%"
)


def write_csv(path: Path, rows: list[tuple[str, int, int, float, float, float]]) -> Path:
    lines = [HEADER]
    for name, sent, failed, p50, p95, p99 in rows:
        lines.append(
            f"GET,{name},{sent},{failed},{p50},{p50},1,{p99},40,50,0,{p50},{p50},{p50},{p50},{p95},{p95},"
            f"{p99},{p99},{p99},{p99},{p99}"
        )
    path.write_text("\n".join(lines) + "\n")
    return path


def budgets_file(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


BUDGETS = """
max_error_rate: 0.01
min_requests: 10
latency_ms:
  "* read":  {p50: 20, p95: 100, p99: 250}
  "* write": {p50: 30, p95: 150, p99: 400}
"""


def test_within_budget_passes(tmp_path: Path) -> None:
    stats = read_stats(
        write_csv(tmp_path / "s.csv", [("live read", 500, 0, 2, 5, 9), ("Aggregated", 500, 0, 2, 5, 9)])
    )
    verdict = judge(stats, load_budgets(budgets_file(tmp_path / "b.yaml", BUDGETS)))
    assert verdict.passed
    assert render(verdict).endswith("verdict: PASS")


def test_each_broken_budget_is_named(tmp_path: Path) -> None:
    rows: list[tuple[str, int, int, float, float, float]] = [
        ("live read", 500, 0, 2, 120, 260),  # p95 and p99 over
        ("live write", 100, 2, 31, 40, 50),  # p50 over, 2 % errors
        ("shadow read", 5, 0, 1, 1, 1),  # too few samples
        ("odd", 50, 0, 999, 999, 999),  # no latency budget: errors only
        ("Aggregated", 705, 2, 3, 100, 250),
    ]
    verdict = judge(
        read_stats(write_csv(tmp_path / "s.csv", rows)),
        load_budgets(budgets_file(tmp_path / "b.yaml", BUDGETS)),
    )
    assert not verdict.passed
    assert verdict.breaches == [
        "live read: p95 120 ms > 100 ms",
        "live read: p99 260 ms > 250 ms",
        "live write: error rate 2.00% > 1.00%",
        "live write: p50 31 ms > 30 ms",
        "shadow read: 5 requests < 10: too few to judge",
    ]
    text = render(verdict)
    assert "verdict: FAIL" in text
    assert "  - live read: p99 260 ms > 250 ms" in text


def test_no_requests_and_missing_percentiles_fail(tmp_path: Path) -> None:
    budgets = load_budgets(budgets_file(tmp_path / "b.yaml", BUDGETS))
    empty = write_csv(tmp_path / "empty.csv", [("Aggregated", 0, 0, 0, 0, 0)])
    assert judge(read_stats(empty), budgets).breaches == ["no requests were recorded"]
    na = tmp_path / "na.csv"
    na.write_text(
        HEADER + "\nGET,live read,20,0,N/A,0,0,0,0,0,0,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A\n"
    )
    assert "live read: p50 nan ms > 20 ms" in judge(read_stats(na), budgets).breaches


def test_budget_file_with_an_unknown_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BudgetFileError, match="unknown keys"):
        load_budgets(budgets_file(tmp_path / "b.yaml", "max_error_rate: 0\nlatency: {}\n"))
    with pytest.raises(BudgetFileError):
        load_budgets(budgets_file(tmp_path / "c.yaml", "- a list\n"))


def test_the_shipped_budgets_load() -> None:
    budgets = load_budgets(REPO / "loadtests" / "budgets.yaml")
    assert budgets.latency_for("shadow read") is not None
    assert budgets.latency_for("complete write") is not None


@pytest.mark.timeout(180)
def test_smoke_run_passes_its_budget_and_fails_a_tight_one(tmp_path: Path) -> None:
    out = tmp_path / "results"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "loadtests.run_loadtest",
            "--demo",
            "--profile",
            "mixed",
            "--run-time",
            "10s",
            "--out",
            str(out),
            "--run-id",
            "smoke1",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "overall verdict: PASS" in run.stdout
    # Its tenants were its own (lt-<run id>-<phase>) and are archived when it ends.
    assert "run smoke1: tenants lt-smoke1-<phase>" in run.stdout
    assert f"run smoke1: archived {len(PHASES)} tenants" in run.stdout
    stats = {row.name: row for row in read_stats(out / "mixed_stats.csv")}
    for phase in PHASES:
        for kind in ("read", "write"):
            row = stats[f"{phase} {kind}"]
            assert row.requests >= 10, row
            assert row.failures == 0, row
    # The same measurements against a budget no real run can keep: the verdict must be FAIL, exit 1.
    tight = budgets_file(tmp_path / "tight.yaml", 'max_error_rate: 0\nlatency_ms:\n  "*": {p50: 0.01}\n')
    check = subprocess.run(
        [
            sys.executable,
            "-m",
            "loadtests.run_loadtest",
            "--check",
            str(out / "mixed"),
            "--budgets",
            str(tight),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 1, check.stdout + check.stderr
    assert "verdict: FAIL" in check.stdout
    assert "shadow read: p50" in check.stdout
    assert "> 0.01 ms" in check.stdout
