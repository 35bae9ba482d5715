#!/usr/bin/env python3
"""Does serving the admin API starve the data plane? Process 0 of `cutover serve` runs both on one event
loop, so a handler that does a lot of work at once holds up every proxied request behind it.

One proxy process (`workers: 1`) over an nginx backend, with `--tenants` rows (200,000 by default) in
`cutover_seen_tenant`. wrk drives the data plane for `--duration` seconds, first alone, then while
`--listers` clients list every known tenant through the admin API over and over (one `GET /tenants` with
the code that answered the whole list at once; page after page, following `next`, with the paged one).
Reported: the data plane's p50/p99 and req/s in both runs, and how long one full listing took.

    .venv/bin/python benchmarks/bench_admin.py --write BENCHMARKS.md
    .venv/bin/python benchmarks/bench_admin.py --source /path/to/older/checkout --label before

`--source` runs the proxy from another checkout of the project (its Python packages, this venv), so the
same script measures the code before and after a change; `--write` puts the figures in BENCHMARKS.md
under the section's heading, one row per label (a new run of a label replaces its row). Reuses the
telemetry benchmark's harness (nginx backend, wrk, PostgreSQL databases, process groups). Needs nginx,
wrk, psql, PostgreSQL and Redis.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench_telemetry import PATH, REPO, Harness, http_get, run_wrk
from harness import free_port, log, write_section

MARK_START = "<!-- bench_admin:start -->"
MARK_END = "<!-- bench_admin:end -->"
TOKEN = "bench-admin-token-0123456789"
PAGE = 5000  # the admin API's largest page of tenants
SEEN_TABLE = (
    "CREATE TABLE IF NOT EXISTS cutover_seen_tenant (tenant text PRIMARY KEY,"
    " first_seen timestamptz NOT NULL DEFAULT now(), last_seen timestamptz NOT NULL DEFAULT now())"
)


def start_proxy(harness: Harness, args: argparse.Namespace, backend_port: int) -> tuple[str, str]:
    database = f"cutover_bench_admin_{harness.run_id}"
    harness.psql(f'CREATE DATABASE "{database}"')
    harness.databases.append(database)
    dsn = f"postgresql://postgres@127.0.0.1:5432/{database}"
    log(f"seeding {args.tenants:,} tenants seen in traffic")
    for sql in (
        SEEN_TABLE,
        "INSERT INTO cutover_seen_tenant (tenant)"
        f" SELECT 'bench-' || lpad(g::text, 7, '0') FROM generate_series(1, {args.tenants}) AS g",
    ):
        subprocess.run(
            ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", database, "-qc", sql],
            check=True,
            capture_output=True,
            timeout=120,
        )
    port, admin = free_port(), free_port()
    config = harness.workdir / "proxy.yaml"
    config.write_text(
        "\n".join(
            [
                f'listen: "127.0.0.1:{port}"',
                "workers: 1",
                "admin:",
                f'  listen: "127.0.0.1:{admin}"',
                f"  tokens: {{bench: {{token: {TOKEN}, scope: read}}}}",
                "backends:",
                f'  old: {{url: "http://127.0.0.1:{backend_port}"}}',
                f'  new: {{url: "http://127.0.0.1:{backend_port}"}}',
                "default_phase: legacy",
                f'postgres_url: "{dsn}"',
                f'buffer: {{key_prefix: "cutover-bench-admin-{harness.run_id}"}}',
                "log_level: warning",
                "telemetry: {metrics: false, tracing: false}",
                "",
            ]
        )
    )
    python = REPO / ".venv" / "bin" / "python"
    source = str(Path(args.source).resolve()) if args.source else str(REPO)
    argv = [
        "env",
        f"PYTHONPATH={source}",
        str(python),
        "-m",
        "proxy.cli.main",
        "serve",
        "--config",
        str(config),
    ]
    proc = harness.start("proxy", argv, "0")
    admin_url = f"http://127.0.0.1:{admin}"
    harness.wait(f"{admin_url}/readyz", proc, timeout_s=90)
    return f"http://127.0.0.1:{port}{PATH}", admin_url


def list_all(admin_url: str) -> int:
    """Every known tenant: page after page when the API pages, else its one answer."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    count, after = 0, None
    while True:
        query = f"?limit={PAGE}" + (f"&after={after}" if after else "")
        status, raw = http_get(f"{admin_url}/tenants{query}", headers, timeout=120)
        if status != 200:
            raise RuntimeError(f"GET /tenants answered {status}: {raw[:200]!r}")
        body = json.loads(raw)
        count += len(body["tenants"]) + len(body["seen_in_traffic"])
        after = body.get("next")
        if after is None:
            return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tenants", type=int, default=200_000)
    parser.add_argument("--duration", type=int, default=15, help="seconds of wrk per run")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--listers", type=int, default=2, help="admin clients listing every tenant")
    parser.add_argument("--source", help="run the proxy from this checkout (default: this one)")
    parser.add_argument("--label", default="after", help="the row's name in the table")
    parser.add_argument("--write", type=Path, help="add the figures to this Markdown file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cutover-bench-admin-") as workdir:
        harness = Harness(Path(workdir), pin=(os.cpu_count() or 1) >= 2)
        try:
            backend = harness.nginx("backend")
            data_url, admin_url = start_proxy(harness, args, backend)
            started = time.monotonic()
            listed = list_all(admin_url)
            one_listing_s = time.monotonic() - started
            log(f"one full listing: {listed:,} tenants in {one_listing_s:.2f} s")
            run_wrk(data_url, args.connections, 3, harness.pin)  # warm-up
            alone = run_wrk(data_url, args.connections, args.duration, harness.pin)
            log(f"data plane alone: p50 {alone.p50_ms:.2f} ms, p99 {alone.p99_ms:.2f} ms")
            stop = threading.Event()
            listings: list[float] = []

            def lister() -> None:
                while not stop.is_set():
                    began = time.monotonic()
                    list_all(admin_url)
                    listings.append(time.monotonic() - began)

            threads = [threading.Thread(target=lister, daemon=True) for _ in range(args.listers)]
            for thread in threads:
                thread.start()
            time.sleep(1)
            hammered = run_wrk(data_url, args.connections, args.duration, harness.pin)
            stop.set()
            for thread in threads:
                thread.join(timeout=180)
            log(
                f"data plane while listing: p50 {hammered.p50_ms:.2f} ms, p99 {hammered.p99_ms:.2f} ms, "
                f"{hammered.rps:,.0f} req/s; {len(listings)} listings"
            )
        finally:
            harness.stop_all()
    row = (
        f"| {args.label} | {listed:,} | {one_listing_s:.2f} | {alone.p50_ms:.2f} | {alone.p99_ms:.2f} "
        f"| {alone.rps:,.0f} | {hammered.p50_ms:.2f} | {hammered.p99_ms:.2f} | {hammered.rps:,.0f} "
        f"| {len(listings)} | {hammered.errors + alone.errors} |"
    )
    print(row)
    if args.write:
        write_section(args.write, render(args.write, row, args), MARK_START, MARK_END)
    return 0


def render(path: Path, row: str, args: argparse.Namespace) -> str:
    """The section, keeping the rows of other labels already in `path`."""
    text = path.read_text() if path.exists() else ""
    kept = []
    if MARK_START in text and MARK_END in text:
        old = text[text.index(MARK_START) : text.index(MARK_END)]
        label = row.split("|")[1].strip()
        kept = [
            line
            for line in old.splitlines()
            if re.match(r"^\| (?!label|---)", line) and line.split("|")[1].strip() != label
        ]
    command = (
        f"`.venv/bin/python benchmarks/bench_admin.py --tenants {args.tenants} --duration {args.duration}"
        f" --connections {args.connections} --listers {args.listers} --write BENCHMARKS.md`"
    )
    lines = [
        MARK_START,
        "## Admin API beside the data plane (`benchmarks/bench_admin.py`)",
        "",
        "Process 0 serves the data plane and the admin API on one event loop: a handler that works long at"
        " once holds up every proxied request behind it.",
        f"- Command: {command} (the `after` row); the `before` row adds `--source DIR --label before`, DIR"
        " a checkout of the code that answered `GET /tenants` in one go",
        f"- Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; machine: {os.cpu_count()} vCPU, shared"
        f" with other work (load average {os.getloadavg()[0]:.1f} at the end); proxy on CPU0, wrk and"
        " nginx on CPU1",
        f"- One proxy process (`workers: 1`), phase legacy, nginx backend; {args.tenants:,} tenants in"
        f" `cutover_seen_tenant`; `wrk -t1 -c{args.connections} -d{args.duration}s` alone, then while"
        f" {args.listers} clients list every tenant over and over (`before`: one `GET /tenants`"
        f" answering all; `after`: pages of {PAGE}, following `next`)",
        "",
        "| label | tenants | one listing s | alone p50 ms | alone p99 ms | alone req/s | listing p50 ms"
        " | listing p99 ms | listing req/s | listings done | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *sorted([*kept, row], key=lambda line: line.split("|")[1].strip() != "before"),
        "",
        MARK_END,
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
