#!/usr/bin/env python3
"""Benchmark how soon a `cutover` command gets to work: wall-clock time from process start to the first
database connection of `cutover verify`, the run time of `cutover --help` and `cutover verify --help`, and
the cumulative import time of the CLI's module (`python -X importtime`).

The first connection is seen by a TCP relay in this process: every database URL in the verify's settings
points at the relay, which notes when it accepts its first connection and forwards the bytes to the real
PostgreSQL, so the command runs to its end (a matching 1,000-row table; exit code 0 is checked). Time
zero is taken just before the process is spawned, so interpreter start-up counts. A first, unmeasured
run of every command compiles each tree's modules to bytecode. The relay also reads the process's CPU
time (user + system, /proc) when it connects: about what an idle machine's clock shows.

Each command runs as `python -m MODULE ...` from the tree it measures, MODULE being `proxy.cli.main`, or
`proxy.cli` in a tree from before the CLI became a package (`cli_module`). `--baseline REF` also measures
the tree of git commit REF (exported with `git archive` into a temporary directory), interleaved with this
tree, round by round; `--write PATH` replaces the `bench_cli` section of PATH.

    .venv/bin/python benchmarks/bench_cli.py --baseline 909f4fd --write BENCHMARKS.md   # 15 rounds

Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust). Fresh databases, dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import platform
import re
import shlex
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import yaml
from harness import cpu_model, cpu_seconds, export_tree, log, shown_path, write_section  # this folder's

from proxy.control.schema import ensure_schema

MARK_START = "<!-- bench_cli:start -->"
MARK_END = "<!-- bench_cli:end -->"
REPO = Path(__file__).resolve().parent.parent
PG_HOST, PG_PORT = "127.0.0.1", 5432
PG_BASE = f"postgresql://postgres@{PG_HOST}:{PG_PORT}/"
TENANT = "bench-tenant"
ROWS = 1_000
DDL = "CREATE TABLE items (tenant_id text, id bigint, amount numeric(12,2), PRIMARY KEY (tenant_id, id))"
FILL = "INSERT INTO items SELECT $1, g, g / 100.0 FROM generate_series(1, $2::int) AS g"
TARGET_FIRST_QUERY_S = 0.3


class Relay:
    """A TCP relay to PostgreSQL that notes when it accepts its first connection since `reset()`, and how
    much CPU time the watched process had used by then."""

    def __init__(self) -> None:
        self.first_accept: float | None = None
        self.first_cpu_s: float | None = None
        self.watched: int | None = None  # pid
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def reset(self) -> None:
        self.first_accept = self.first_cpu_s = self.watched = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.first_accept is None:
            self.first_accept = time.perf_counter()
            if self.watched is not None:
                self.first_cpu_s = cpu_seconds(self.watched)
        upstream_reader, upstream_writer = await asyncio.open_connection(PG_HOST, PG_PORT)
        await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))


def cli_module(tree: Path) -> str:
    """The `cutover` module of `tree`: `proxy.cli.main`, or `proxy.cli` where the CLI was one module."""
    return "proxy.cli.main" if (tree / "proxy" / "cli" / "main.py").is_file() else "proxy.cli"


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        with contextlib.suppress(ConnectionError):
            writer.close()


class Bench:
    def __init__(self, rounds: int, baseline: str | None) -> None:
        self.rounds = rounds
        self.baseline = baseline
        suffix = uuid.uuid4().hex[:8]
        self.databases = {side: f"cutover_bench_cli_{side}_{suffix}" for side in ("old", "new", "control")}
        self.relay = Relay()
        self.trees: dict[str, Path] = {"after": REPO}
        self.results: dict[str, dict[str, list[float]]] = {}
        self.importtime_ms: dict[str, list[float]] = {}
        self.config = Path()
        self.load: list[float] = []  # 1-minute load average at the start and the end

    async def setup(self, workdir: Path) -> None:
        for name in self.databases.values():
            await _execute(PG_BASE + "postgres", f'CREATE DATABASE "{name}"')
        for side in ("old", "new"):
            await _execute(PG_BASE + self.databases[side], DDL)
            await _execute(PG_BASE + self.databases[side], FILL, TENANT, ROWS)
        control = await asyncpg.connect(PG_BASE + self.databases["control"])
        try:
            await ensure_schema(control)
            await control.execute(
                "INSERT INTO cutover_tenant_phase (tenant, phase, version, updated_by)"
                " VALUES ($1, 'shadow', 1, 'bench')",
                TENANT,
            )
        finally:
            await control.close()
        await self.relay.start()
        relayed = f"postgresql://postgres@127.0.0.1:{self.relay.port}/"
        settings = {
            "backends": {"old": {"url": "http://127.0.0.1:9"}, "new": {"url": "http://127.0.0.1:9"}},
            "postgres_url": relayed + self.databases["control"],
            "buffer": {"key_prefix": f"cutover-bench-cli-{uuid.uuid4().hex[:8]}"},
            "data": {
                "old": {"postgres_url": relayed + self.databases["old"]},
                "new": {"postgres_url": relayed + self.databases["new"]},
                "tables": [{"name": "items", "old": {"table": "items"}, "new": {"table": "items"}}],
            },
        }
        self.config = workdir / "cutover.yaml"
        self.config.write_text(yaml.safe_dump(settings))
        if self.baseline is not None:
            (workdir / "baseline").mkdir()
            self.trees = {"before": export_tree(self.baseline, workdir / "baseline"), "after": REPO}

    async def cleanup(self) -> None:
        await self.relay.close()
        for name in self.databases.values():
            await _execute(PG_BASE + "postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    async def _spawn(self, tree: Path, *args: str) -> tuple[float, float | None]:
        """Run `python -m MODULE ARGS` in `tree`: (seconds to exit, seconds to the first connection);
        the process's CPU time at its first connection is left in `relay.first_cpu_s`."""
        self.relay.reset()
        started = time.perf_counter()
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            cli_module(tree),
            *args,
            cwd=tree,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        self.relay.watched = process.pid
        _, err = await process.communicate()
        ended = time.perf_counter()
        if process.returncode != 0:
            raise RuntimeError(f"{args} in {tree} exited {process.returncode}: {err.decode()[-2000:]}")
        first = None if self.relay.first_accept is None else self.relay.first_accept - started
        return ended - started, first

    async def importtime(self, tree: Path) -> float:
        """Cumulative import time of the tree's CLI module, in ms, as `python -X importtime` reports it."""
        module = cli_module(tree)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-X",
            "importtime",
            "-c",
            f"import {module}",
            cwd=tree,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await process.communicate()
        for line in err.decode().splitlines():
            match = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\S+)$", line)
            if match and match.group(2) == module:
                return int(match.group(1)) / 1000
        raise RuntimeError(f"no {module} line in the importtime output of {tree}")

    async def run(self) -> None:
        with tempfile.TemporaryDirectory(prefix="cutover-bench-cli-") as workdir:
            await self.setup(Path(workdir))
            try:
                self.load.append(os.getloadavg()[0])
                await self._rounds()
                self.load.append(os.getloadavg()[0])
            finally:
                await self.cleanup()

    async def _rounds(self) -> None:
        measures = {
            "help": ("--help",),
            "verify_help": ("verify", "--help"),
            "verify": ("verify", "--config", str(self.config), "--tenant", TENANT, "--no-store", "--json"),
        }
        for label in self.trees:
            self.results[label] = {
                "help": [],
                "verify_help": [],
                "verify_total": [],
                "first_query": [],
                "first_query_cpu": [],
            }
            self.importtime_ms[label] = []
        for tree in self.trees.values():  # a first run compiles each tree's modules to bytecode
            for args in measures.values():
                await self._spawn(tree, *args)
        for round_no in range(1, self.rounds + 1):
            for label, tree in self.trees.items():
                for name, args in measures.items():
                    total, first = await self._spawn(tree, *args)
                    if name == "verify":
                        assert first is not None, "the verify never connected through the relay"
                        self.results[label]["verify_total"].append(total)
                        self.results[label]["first_query"].append(first)
                        if self.relay.first_cpu_s is not None:
                            self.results[label]["first_query_cpu"].append(self.relay.first_cpu_s)
                    else:
                        self.results[label][name].append(total)
                self.importtime_ms[label].append(await self.importtime(tree))
                figures = self.results[label]
                log(
                    f"round {round_no} {label}: first query {figures['first_query'][-1]:.3f} s,"
                    f" --help {figures['help'][-1]:.3f} s, import {self.importtime_ms[label][-1]:.0f} ms"
                )


async def _execute(url: str, sql: str, *args: object) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql, *args)
    finally:
        await conn.close()


def section(bench: Bench, command: str) -> str:
    labels = list(bench.trees)
    heading = {
        "before": f"before (`{bench.baseline}`)",
        "after": "this tree",
    }

    def cell(label: str, name: str) -> str:
        values = bench.results[label][name]
        return f"{statistics.median(values):.3f} s" if values else "-"

    after_first = statistics.median(bench.results["after"]["first_query"])
    rows = [
        ("`cutover verify` (1,000 matching rows): process start → first connection", "first_query"),
        (
            "the same, CPU time (user + system) the process had used by its first connection",
            "first_query_cpu",
        ),
        ("`cutover verify` (same): process start → exit", "verify_total"),
        ("`cutover --help`: process start → exit", "help"),
        ("`cutover verify --help`: process start → exit", "verify_help"),
    ]
    lines = [
        MARK_START,
        "## CLI start-up (`benchmarks/bench_cli.py`)",
        "",
        f"- command: `{command}`",
        f"- date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        f"- machine: nproc {os.cpu_count()}, {cpu_model()}, kernel {platform.release()}; shared with other"
        f" jobs while measuring (1-minute load average {bench.load[0]:.1f} at the start,"
        f" {bench.load[-1]:.1f} at the end); the CPU-time row is about what an idle machine's clock shows",
        f"- Python: `{shown_path(sys.executable)}` ({platform.python_version()}); each command runs as"
        " `python -m proxy.cli.main ...` (`proxy.cli` in a tree before the CLI became a package) from the"
        " tree measured; time zero just before the spawn; the first"
        " connection is noted by a TCP relay to PostgreSQL that every database URL points at",
        f"- {bench.rounds} rounds, trees interleaved, medians",
        "",
        "| measurement | " + " | ".join(heading[label] for label in labels) + " | target | verdict |",
        "|---|" + "---|" * len(labels) + "---|---|",
    ]
    for title, name in rows:
        verdict = ""
        target = "none"
        if name == "first_query":
            target = f"≤ {TARGET_FIRST_QUERY_S} s"
            verdict = "PASS" if after_first <= TARGET_FIRST_QUERY_S else "FAIL"
        lines.append(
            f"| {title} | " + " | ".join(cell(label, name) for label in labels) + f" | {target} |"
            f" {verdict or 'info'} |"
        )
    imports = " | ".join(f"{statistics.median(bench.importtime_ms[label]):.0f} ms" for label in labels)
    lines += [
        f"| `python -X importtime -c 'import proxy.cli.main'`: cumulative for the CLI's module | {imports}"
        " | none"
        " | info |",
        "",
        "Per round, first connection (s): "
        + "; ".join(
            f"{heading[label]} " + ", ".join(f"{v:.3f}" for v in bench.results[label]["first_query"])
            for label in labels
        )
        + ".",
        "",
        "Before, every command imported the settings model (pydantic, PyYAML), httpx, asyncpg and asyncio"
        " through the CLI module's imports, and `cutover verify` also Redis, aiohttp and OpenTelemetry (REST"
        " verification and the worker's HTTP applier) before its first query. Now a command imports what"
        " it runs when it runs (`tests/proxy/test_cli_imports.py`: `--help` loads none of them). What"
        " `cutover verify` still loads before its first query is what it needs: on this machine, idle,"
        " about 85 ms of CPU to import pydantic, 100 ms to build the settings model, 60 ms for asyncio and"
        " asyncpg, 25 ms for the interpreter.",
        MARK_END,
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--baseline", help="also measure the tree of this git commit (e.g. before a change)")
    parser.add_argument("--write", type=Path, help="replace the bench_cli section of this Markdown file")
    args = parser.parse_args()
    bench = Bench(args.rounds, args.baseline)
    asyncio.run(bench.run())
    command = shlex.join([shown_path(sys.executable), *sys.argv])
    text = section(bench, command)
    print(text)
    if args.write:
        write_section(args.write, text, MARK_START, MARK_END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
