"""SQL classification and transpilation cost: cached and uncached, pure-Python sqlglot vs its compiled build.

    .venv/bin/python benchmarks/bench_sql.py --write BENCHMARKS.md          # 3 rounds (~1 min)
    .venv/bin/python benchmarks/bench_sql.py --quick                        # 1 round, smaller N

Two throw-away virtual environments are made with the sqlglot version installed here: one with plain
`sqlglot` (pure Python), one with `sqlglot[c]` (the mypyc-compiled `sqlglotc` overlay). Each runs the same
measuring code (`--measure`, this file, importing `routing` from the repository), in rounds interleaved
pure, compiled, pure, compiled… so that CPU-speed drift hits both alike; figures are medians over rounds
of per-operation medians. Results go between the `bench_sql` markers of `--write PATH`.

What is timed, per operation, with `time.perf_counter_ns`:
- cached: `SqlAnalyzer.request` on a statement already in the LRU (lookup, parameter check, tenant
  resolution from the parameters): what a repeated parameterised statement costs per request;
- uncached: the same call right after the cache was cleared (the clearing is not timed): parse and
  classify, for four statements, from a point SELECT to a join with aggregates;
- transpile: MySQL → PostgreSQL of a freshly parsed statement.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from harness import (  # this folder's harness (scripts run from here)
    cpu_model,
    log,
    shown_path,
    write_section,
)

ROOT = Path(__file__).resolve().parent.parent
MARK_START = "<!-- bench_sql:start -->"
MARK_END = "<!-- bench_sql:end -->"
CACHED_TARGET_US = 20.0
UNCACHED_TARGET_US = 1000.0

STATEMENTS: dict[str, tuple[str, list[Any]]] = {
    "point SELECT": ("SELECT id, total, note FROM orders WHERE tenant_id = ? AND id = ?", ["acme", 42]),
    "UPDATE by key": (
        "UPDATE orders SET total = ?, note = ? WHERE tenant_id = ? AND id = ?",
        [9, "x", "acme", 42],
    ),
    "upsert": (
        "INSERT INTO orders (id, tenant_id, total) VALUES (?, ?, ?) "
        "ON DUPLICATE KEY UPDATE total = VALUES(total)",
        [42, "acme", 9],
    ),
    "join + aggregate": (
        "SELECT c.name, COUNT(*) AS n, SUM(o.total) AS s "
        "FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.tenant_id = ? AND o.created_at > ? "
        "GROUP BY c.name HAVING COUNT(*) > 1 ORDER BY s DESC LIMIT 20",
        ["acme", "2024-01-01"],
    ),
}
TYPICAL = "point SELECT"


# -- the measuring child -----------------------------------------------------------------------------------
def measure(cached_n: int, uncached_n: int) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    import sqlglot.tokens

    from routing.sql import SqlAnalyzer, SqlLimits
    from routing.sql_classify import Rules

    analyzer = SqlAnalyzer(Rules(primary_keys={"orders": ("id",)}), SqlLimits(), cache_size=1024)
    clock = time.perf_counter_ns

    def per_op(fn: Any, n: int, *, before: Any = None) -> float:
        samples = []
        for _ in range(n):
            if before is not None:
                before()
            start = clock()
            fn()
            samples.append(clock() - start)
        return statistics.median(samples) / 1000

    out: dict[str, Any] = {"compiled": bool(sqlglot.tokens.SQLGLOTC_INSTALLED), "cached": {}, "uncached": {}}
    out["transpile"] = {}
    for name, (sql, params) in STATEMENTS.items():
        texts, values = [sql], [params]

        def classify(texts: list[str] = texts, values: list[Any] = values) -> None:
            analyzer.request("mysql", texts, values)

        per_op(classify, 50, before=analyzer._cached.cache_clear)  # warm the interpreter's own caches
        out["uncached"][name] = per_op(classify, uncached_n, before=analyzer._cached.cache_clear)
        classify()
        out["cached"][name] = per_op(classify, cached_n)
        holder: dict[str, Any] = {}

        def fresh(sql: str = sql, holder: dict[str, Any] = holder) -> None:
            analyzer._cached.cache_clear()
            holder["analysis"] = analyzer.analyze("mysql", sql)

        def transpile(holder: dict[str, Any] = holder) -> None:
            analyzer.transpile(holder["analysis"], "postgres")

        out["transpile"][name] = per_op(transpile, uncached_n, before=fresh)
    return out


# -- the parent ------------------------------------------------------------------------------------------
def make_venv(path: Path, requirement: str) -> tuple[Path, str]:
    """A venv with `requirement`; returns its python and what happened ("ok" or pip's last error line)."""
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    python = path / "bin" / "python"
    started = time.monotonic()
    result = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", requirement],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        return python, f"failed: {lines[-1] if lines else result.returncode}"
    return python, f"ok ({time.monotonic() - started:.0f} s)"


def run_child(python: Path, args: argparse.Namespace) -> dict[str, Any]:
    command = [
        str(python),
        __file__,
        "--measure",
        "--cached-n",
        str(args.cached_n),
        "--uncached-n",
        str(args.uncached_n),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT)
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def median_of(rounds: list[dict[str, Any]], group: str, name: str) -> float:
    return statistics.median(r[group][name] for r in rounds)


def fmt(us: float) -> str:
    return f"{us:,.1f} µs" if us < 100 else f"{us:,.0f} µs"


def render(
    args: argparse.Namespace, results: dict[str, list[dict[str, Any]]], installs: dict[str, str]
) -> str:
    version = metadata.version("sqlglot")
    pure, compiled = results.get("pure", []), results.get("compiled", [])
    kept = (
        "compiled"
        if compiled and median_of(compiled, "uncached", TYPICAL) < median_of(pure, "uncached", TYPICAL)
        else "pure"
    )
    best = results[kept]
    cached_us = median_of(best, "cached", TYPICAL)
    uncached_us = median_of(best, "uncached", TYPICAL)
    lines = [
        MARK_START,
        "## SQL classification benchmark (`benchmarks/bench_sql.py`)",
        "",
        f"- command: `{shlex.join([shown_path(sys.executable), *sys.argv])}` (`make bench-sql`)",
        f"- date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        f"- machine: nproc {os.cpu_count()}, {cpu_model()}, kernel {platform.release()};"
        " shared with other jobs while measuring (figures are ratios within one run, not absolutes)",
        f"- Python {platform.python_version()} (`{shown_path(sys.executable)}`'s interpreter for both venvs);"
        f" sqlglot {version}: pure venv {installs.get('pure', '?')},"
        f" `sqlglot[c]` venv {installs.get('compiled', '?')}",
        f"- {args.rounds} round(s) interleaved pure/compiled; per round {args.cached_n:,} cached and"
        f" {args.uncached_n:,} uncached operations per statement; medians of per-operation medians",
        "",
        "| measurement | result | target | verdict |",
        "|---|---|---|---|",
        f"| cached classification, {TYPICAL} ({kept} build) | {fmt(cached_us)} p50 | ≤ 20 µs p50 |"
        f" {'PASS' if cached_us <= CACHED_TARGET_US else 'FAIL'} |",
        f"| uncached classification, {TYPICAL} ({kept} build) | {fmt(uncached_us)} p50 | ≤ 1 ms p50 |"
        f" {'PASS' if uncached_us <= UNCACHED_TARGET_US else 'FAIL'} |",
    ]
    if pure and compiled:
        ratio = median_of(pure, "uncached", TYPICAL) / median_of(compiled, "uncached", TYPICAL)
        lines.append(
            f"| compiled vs pure, uncached {TYPICAL} | {ratio:.2f}× faster |"
            f" keep the faster where it installs | kept: {kept} |"
        )
    lines += [
        "",
        "| statement | build | cached p50 | uncached p50 | transpile → postgres p50 |",
        "|---|---|---|---|---|",
    ]
    for name in STATEMENTS:
        for build in ("pure", "compiled"):
            if results.get(build):
                rounds = results[build]
                lines.append(
                    f"| {name} | {build} | {fmt(median_of(rounds, 'cached', name))} |"
                    f" {fmt(median_of(rounds, 'uncached', name))} |"
                    f" {fmt(median_of(rounds, 'transpile', name))} |"
                )
    lines += [
        "",
        "Cached = `SqlAnalyzer.request` on a statement already in the LRU, including the parameter check"
        " and the tenant resolved from the parameters; uncached = the same call after clearing the LRU"
        " (parse with positional placeholders numbered, classify); transpile = MySQL → PostgreSQL of a"
        " parsed statement, checked by re-parsing the output. The project depends on `sqlglot[c]` when the"
        " compiled build is faster here and installs from a wheel.",
        MARK_END,
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds per build (default 3)")
    parser.add_argument(
        "--cached-n", type=int, default=None, help="cached operations per statement per round"
    )
    parser.add_argument(
        "--uncached-n", type=int, default=None, help="uncached operations per statement per round"
    )
    parser.add_argument("--quick", action="store_true", help="1 round, smaller N")
    parser.add_argument("--write", type=Path, help="Markdown file to put the section into")
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.cached_n = args.cached_n or (5_000 if args.quick else 20_000)
    args.uncached_n = args.uncached_n or (100 if args.quick else 400)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.cached_n, args.uncached_n)))
        return 0
    version = metadata.version("sqlglot")
    results: dict[str, list[dict[str, Any]]] = {"pure": [], "compiled": []}
    installs: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="bench-sql-") as tmp:
        pythons: dict[str, Path] = {}
        for build, requirement in (("pure", f"sqlglot=={version}"), ("compiled", f"sqlglot[c]=={version}")):
            log(f"creating the {build} venv ({requirement})")
            python, installs[build] = make_venv(Path(tmp) / build, requirement)
            if installs[build].startswith("ok"):
                pythons[build] = python
            else:
                log(f"{build}: install {installs[build]}")
        for round_ in range(args.rounds):
            for build, python in pythons.items():
                log(f"round {round_ + 1}/{args.rounds}: {build}")
                data = run_child(python, args)
                if data["compiled"] != (build == "compiled"):
                    raise SystemExit(f"the {build} venv reports compiled={data['compiled']}")
                results[build].append(data)
    if not results["pure"] and not results["compiled"]:
        raise SystemExit("neither build could be installed")
    if not results["pure"]:
        results["pure"] = results["compiled"]
    section = render(args, results, installs)
    print(section)
    if args.write is not None:
        write_section(args.write, section, MARK_START, MARK_END)
        log(f"wrote section to {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
