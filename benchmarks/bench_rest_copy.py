#!/usr/bin/env python3
"""Benchmark `cutover backfill` of a REST resource against a minimal copy loop between the same servers.

Old and new are each a small fast HTTP service in its own process: a raw ASGI app under uvicorn with
httptools and uvloop, records in memory (`--serve`, below). Old holds N records of one tenant (about 200
bytes each) and pages them by page number with `X-Total-Count`; new takes `PUT /items/{id}`.

- minimal loop: list old's pages with aiohttp, one after the other, and PUT each record of a page to new
  at the same concurrency as the copy; no checkpoint, no claims, no phase checks, JSON parsed by orjson.
  Both run in one process under the event loop `cutover backfill` runs (uvloop).
- `cutover backfill`: `run_backfill` (what the command runs) with `create: put`, from a fresh checkpoint
  (`--restart`), the tenant in dual_write: its checkpoint per page in PostgreSQL, claims in Redis, the
  phase read before each page, the next page listed while one is written, numbers kept as old wrote
  them, each page's boundary checked (one record read where the page before ended), and the records
  written kept marked until the copy ends. No client writes meanwhile, so no page is read back.

Each round runs each target twice, in the order minimal, copy, copy, minimal, and keeps the better run
of each (the machine is shared: a run disturbed by another job's burst is slower, never faster); the
ratio to the minimal loop is taken within each round, and medians over rounds are reported.
`--write PATH` replaces the `bench_rest_copy` section of PATH.

    .venv/bin/python benchmarks/bench_rest_copy.py --write BENCHMARKS.md     # 20,000 records, 6 rounds
    .venv/bin/python benchmarks/bench_rest_copy.py --records 5000 --rounds 2  # a quick look

Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust) and Redis on 127.0.0.1:6379; a fresh database
and key prefix, removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from harness import cpu_model, free_port, write_section  # this folder's harness (scripts run from here)

MARK_START = "<!-- bench_rest_copy:start -->"
MARK_END = "<!-- bench_rest_copy:end -->"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/0"
TENANT = "bench-tenant"
PAGE_SIZE = 500


# -- the fast backend (`--serve PORT RECORDS`) ----------------------------------------------------------
def record(n: int) -> bytes:
    return (
        b'{"id":%d,"name":"item %d","price":%d.50,"qty":%d,"tags":["a","b","c"],'
        b'"note":"%s","active":true}' % (n, n, n % 1000, n % 50, b"x" * 90)
    )


def make_app(records: int) -> Any:
    """Old (`records` > 0: the tenant's records, paged) or new (takes PUTs)."""
    listed: dict[str, list[bytes]] = {TENANT: [record(n) for n in range(1, records + 1)]}
    written: dict[str, dict[str, bytes]] = {}
    json_type = [(b"content-type", b"application/json")]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        tenant = next((v.decode() for k, v in scope["headers"] if k == b"x-tenant-id"), "")
        path, method = scope["path"], scope["method"]
        headers = list(json_type)
        if method == "GET" and path == "/items":
            query = parse_qs(scope["query_string"].decode())
            page, limit = int(query["page"][0]), int(query["limit"][0])
            rows = listed.get(tenant, [])
            answer = b'{"items":[' + b",".join(rows[(page - 1) * limit : page * limit]) + b"]}"
            headers.append((b"x-total-count", str(len(rows)).encode()))
            status = 200
        elif method == "PUT" and path.startswith("/items/"):
            written.setdefault(tenant, {})[path[len("/items/") :]] = body
            status, answer = 200, b"{}"
        elif path == "/_count":
            status, answer = 200, str(len(written.get(tenant, {}))).encode()
        elif path == "/_reset":
            written.pop(tenant, None)
            status, answer = 200, b"{}"
        else:
            status, answer = 404, b"{}"
        headers.append((b"content-length", str(len(answer)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    return app


def serve(port: int, records: int) -> None:
    import uvicorn

    uvicorn.run(
        make_app(records),
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level="warning",
    )


# -- the measurements -----------------------------------------------------------------------------------
async def minimal_loop(old: str, new: str, concurrency: int) -> int:
    import aiohttp
    import orjson

    headers = {"X-Tenant-ID": TENANT}
    copied = 0
    connector = aiohttp.TCPConnector(limit=concurrency + 1)
    async with aiohttp.ClientSession(connector=connector) as session:
        page = 1
        while True:
            params = {"page": str(page), "limit": str(PAGE_SIZE)}
            async with session.get(f"{old}/items", params=params, headers=headers) as response:
                items = orjson.loads(await response.read())["items"]
            queue = iter(items)

            async def put(queue: Any = queue) -> None:
                for item in queue:
                    async with session.put(
                        f"{new}/items/{item['id']}",
                        data=orjson.dumps(item),
                        headers={**headers, "Content-Type": "application/json"},
                    ) as answer:
                        await answer.read()
                        assert answer.status == 200

            await asyncio.gather(*(put() for _ in range(concurrency)))
            copied += len(items)
            if len(items) < PAGE_SIZE:
                return copied
            page += 1


async def cutover_copy(settings: Any, concurrency: int, resource: str) -> int:
    from backfill.runner import BackfillOptions, run_backfill

    options = BackfillOptions(TENANT, resources=(resource,), concurrency=concurrency, restart=True)
    report = await run_backfill(settings, options)
    return report.resources[0].items_copied


async def wait_up(url: str) -> None:
    import httpx

    async with httpx.AsyncClient() as client:
        for _ in range(300):
            try:
                await client.get(f"{url}/_count")
                return
            except httpx.TransportError:
                await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


async def reset_new(new: str) -> None:
    import httpx

    async with httpx.AsyncClient() as client:
        await client.post(f"{new}/_reset", headers={"X-Tenant-ID": TENANT})


async def count_new(new: str) -> int:
    import httpx

    async with httpx.AsyncClient() as client:
        return int((await client.get(f"{new}/_count", headers={"X-Tenant-ID": TENANT})).text)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    import asyncpg
    import redis.asyncio as aioredis

    from config.settings import Settings
    from proxy.control.schema import ensure_schema

    ports = {"old": free_port(), "new": free_port()}
    here = str(Path(__file__).resolve())  # noqa: ASYNC240 - set-up: nothing else runs on the loop yet
    # Set-up too, before anything is timed: the servers outlive this loop's tasks and are stopped at the end.
    servers = [
        subprocess.Popen([sys.executable, here, "--serve", str(ports["old"]), str(args.records)]),  # noqa: ASYNC220
        subprocess.Popen([sys.executable, here, "--serve", str(ports["new"]), "0"]),  # noqa: ASYNC220
    ]
    database = f"bench_rest_copy_{uuid.uuid4().hex[:8]}"
    prefix = f"bench-rest-copy-{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(PG_ADMIN)
    await admin.execute(f'CREATE DATABASE "{database}"')
    control_url = f"postgresql://postgres@127.0.0.1:5432/{database}"
    try:
        urls = {side: f"http://127.0.0.1:{port}" for side, port in ports.items()}
        for url in urls.values():
            await wait_up(url)
        conn = await asyncpg.connect(control_url)
        await ensure_schema(conn)
        await conn.execute(
            "INSERT INTO cutover_tenant_phase (tenant, phase, version, updated_by)"
            " VALUES ($1, 'dual_write', 1, 'bench')",
            TENANT,
        )
        await conn.close()
        item = {"name": "items", "list_path": "/items", "page_size": PAGE_SIZE, "create": "put"}
        settings = Settings.model_validate(
            {
                "backends": {side: {"url": url} for side, url in urls.items()},
                "postgres_url": control_url,
                "redis_url": REDIS_URL,
                "buffer": {"key_prefix": prefix},
                "data": {"rest": {"resources": [item]}},
            }
        )
        targets: dict[str, Callable[[], Awaitable[int]]] = {
            "minimal": lambda: minimal_loop(urls["old"], urls["new"], args.concurrency),
            "cutover": lambda: cutover_copy(settings, args.concurrency, "items"),
        }
        rates: dict[str, list[float]] = {name: [] for name in targets}
        for round_no in range(args.rounds):
            best: dict[str, float] = {}
            for name in ("minimal", "cutover", "cutover", "minimal"):
                await reset_new(urls["new"])
                started = time.perf_counter()
                copied = await targets[name]()
                seconds = time.perf_counter() - started
                assert copied == args.records == await count_new(urls["new"]), (name, copied)
                best[name] = max(best.get(name, 0.0), args.records / seconds)
            for name, rate in best.items():
                rates[name].append(rate)
            print(
                f"round {round_no + 1}: " + ", ".join(f"{n} {r[-1]:,.0f}/s" for n, r in rates.items()),
                flush=True,
            )
        return {"rates": rates, "load": os.getloadavg()[0]}
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=10)
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()
        client = aioredis.Redis.from_url(REDIS_URL)
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


def section(args: argparse.Namespace, result: dict[str, Any], load_before: float) -> str:
    rates = result["rates"]
    median = {name: statistics.median(values) for name, values in rates.items()}
    ratio = {
        "cutover": statistics.median(r / m for r, m in zip(rates["cutover"], rates["minimal"], strict=True))
    }
    verdict = "PASS" if ratio["cutover"] >= 0.8 and median["cutover"] >= 5000 else "FAIL"
    command = " ".join(
        shlex.quote(a) for a in [".venv/bin/python", "benchmarks/bench_rest_copy.py", *sys.argv[1:]]
    )
    versions = ", ".join(f"{p} {metadata.version(p)}" for p in ("aiohttp", "uvicorn", "httptools", "uvloop"))
    per_round = "; ".join(f"{n} " + ", ".join(f"{r:,.0f}" for r in rates[n]) for n in rates)
    machine = (
        f"nproc {os.cpu_count()}, {cpu_model()}, kernel {platform.release()}; shared with other jobs while"
        " measuring, so absolute figures vary; the ratio is measured within each round (1-minute load"
        f" average {load_before:.1f} at the start, {result['load']:.1f} at the end)"
    )
    servers = (
        "old and new: a raw ASGI app with records in memory under uvicorn (httptools, uvloop), one process"
        " each; the minimal loop and the copy in one process under uvloop (what `cutover backfill` runs);"
        " the copy's PostgreSQL and Redis on the same machine"
    )
    minimal = (
        f"minimal loop: aiohttp lists old's pages and PUTs each record to new, {args.concurrency} at once,"
        " no checkpoint"
    )
    rows = [
        f"| 1 | {minimal} | {median['minimal']:,.0f} records/s | reference | info |",
        f"| 2 | `cutover backfill`, page paging, `create: put` | {median['cutover']:,.0f} records/s ="
        f" {100 * ratio['cutover']:.0f}% of the minimal loop | ≥ 80 % of the minimal loop and ≥ 5,000"
        f" records/s | {verdict} |",
    ]
    what = (
        f"What the copy does beyond the minimal loop, per page of {PAGE_SIZE}: one Redis script claiming"
        " the page's records and one releasing them (marking them copied), the boundary check (old's"
        " record before the page, read as a page of one), its checkpoint committed in PostgreSQL, the"
        " tenant's phase read, the records parsed with their numbers kept as old wrote them (`json` with"
        " `orjson.Fragment`) and written through the backend client every component shares. It is a"
        " pipeline: the next page is listed while one is written and claimed before its last writes are"
        " answered, so the writes in flight do not drop at page boundaries (the minimal loop's do)."
    )
    lines = [
        MARK_START,
        "## REST copy benchmark (`benchmarks/bench_rest_copy.py`)",
        "",
        f"- command: `{command}`",
        f"- date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {machine}",
        f"- Python {platform.python_version()}; {versions}; {servers}",
        f"- N = {args.records:,} records of one tenant (~200 bytes each), pages of {PAGE_SIZE},"
        f" {args.concurrency} writes in flight; {args.rounds} rounds of two runs each (the better kept),"
        " medians",
        "",
        "| # | measurement | result | target | verdict |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"Per round (records/s, the better of two runs): {per_round}.",
        "",
        what,
        MARK_END,
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]), int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--write", type=Path, help="replace this benchmark's section of this file")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    from telemetry.process import run_async, settle_heap

    settle_heap()
    # The event loop `cutover backfill` runs (uvloop), for the minimal loop too: the same loop for both.
    result = run_async(run(args))
    text = section(args, result, load_before)
    print(text)
    if args.write is not None:
        write_section(args.write, text, MARK_START, MARK_END)


if __name__ == "__main__":
    main()
