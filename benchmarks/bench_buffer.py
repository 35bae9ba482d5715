#!/usr/bin/env python3
"""Benchmark the intent buffer: Redis Streams appends, drains into PostgreSQL and over HTTP, the append
latency the buffer adds to a proxied write, worker takeover after a crash and the authority-switch hold.

One run measures every selected target, interleaved per round (the machine drifts over minutes), reports
medians over rounds, checks each against its target and writes a Markdown section between the
`bench_buffer` markers of `--write PATH` (replaced if present, else appended).

    .venv/bin/python benchmarks/bench_buffer.py --write BENCHMARKS.md        # full (~10 min)
    .venv/bin/python benchmarks/bench_buffer.py --quick                      # smoke (~3 min)
    .venv/bin/python benchmarks/bench_buffer.py --quick --only drain,worker_pg

Needs Redis on 127.0.0.1:6379, PostgreSQL on 127.0.0.1:5432 (user postgres, trust), nginx, wrk and taskset.
Every run uses a fresh Redis key prefix and a fresh PostgreSQL database, both removed at the end.
In-process measurements (XADD, drains, the Worker) run on uvloop, as `cutover worker` does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import platform
import random
import secrets
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import redis.asyncio as aioredis
import uvloop
from harness import (  # this folder's harness (scripts run from here)
    BenchError,
    Processes,
    WrkResult,
    cpu_model,
    free_port,
    log,
    median,
    parse_wrk,
    percentile,
    rates,
    shown_path,
    tail,
    wait_http,
    write_section,
)
from redis._parsers import _AsyncRESP2Parser

from buffer_worker.http_applier import HttpApplier
from buffer_worker.intent import Intent
from buffer_worker.keys import CONSUMER_GROUP, lease_key, partition_of, pending_field, pending_key, stream_key
from buffer_worker.producer import RedisIntentProducer
from buffer_worker.runner import build_applier
from buffer_worker.spool import SpoolingSink
from buffer_worker.worker import Worker
from config.settings import Settings, WorkerSettings
from routing.phases import Side
from telemetry.process import settle_heap

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CUTOVER = REPO / ".venv" / "bin" / "cutover"
MARK_START = "<!-- bench_buffer:start -->"
MARK_END = "<!-- bench_buffer:end -->"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
WRK = shutil.which("wrk") or "/usr/bin/wrk"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"
PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
PARTITIONS = 16
TENANTS = [f"t{i:02d}" for i in range(50)]
KEYS = 1000
DRAIN_COUNT = 500
# The minimal drains: name → (redis-py parser, one field per attribute?). "fields" is the floor as the
# target states it (plain redis-py, entries as a first-cut producer writes them); the other two drain the
# producer's packed entries, with and without hiredis, and show what those levers are worth alone.
FLOORS = {"fields": ("plain", True), "plain": ("plain", False), "hiredis": ("hiredis", False)}
FLOOR_LABELS = {
    "fields": "plain redis-py, one field per attribute",
    "plain": "plain redis-py, packed entries",
    "hiredis": "hiredis, packed entries",
}
BODY_TARGET = 200
ITEM_TABLE = "bench_items"
SOURCE_TABLE = "bench_old_items"
MIN_TABLE = "bench_min"
HOLD_TARGET_S = 2.0
SWITCH_RATE_PER_S = 500
SWITCH_TENANT = "bench-switch"
LEASE_TTL_S = 3.0  # the project default (worker.lease_ttl_s)


# --------------------------------------------------------------------------- intents


def _pad() -> str:
    base = orjson.dumps({"id": "k999", "tenant": "t49", "seq": 199999, "name": "bench item", "pad": ""})
    return "x" * max(0, BODY_TARGET - len(base))


PAD = _pad()


@dataclass(frozen=True, slots=True)
class Spec:
    """One write as the proxy would have acknowledged it."""

    seq: int
    tenant: str
    key: str


def make_intent(spec: Spec) -> Intent:
    body = orjson.dumps(
        {"id": spec.key, "tenant": spec.tenant, "seq": spec.seq, "name": "bench item", "pad": PAD}
    )
    return Intent(
        tenant=spec.tenant,
        target=Side.NEW,
        method="PUT",
        path=f"/items/{spec.key}",
        query="",
        headers=(("content-type", "application/json"),),
        body=body,
        status=200,
        response_body=b"{}",
    )


def one_field_per_attribute(intent: Intent) -> dict[bytes, bytes]:
    """The entry layout of a first-cut producer, which the issue's floor drains: one stream field per
    intent attribute (the producer's own layout packs the metadata into one JSON field, `m`)."""
    return {
        b"intent_id": intent.intent_id.encode(),
        b"tenant": intent.tenant.encode(),
        b"target": intent.target.value.encode(),
        b"method": intent.method.encode(),
        b"path": intent.path.encode(),
        b"query": intent.query.encode(),
        b"headers": orjson.dumps(intent.headers),
        b"body": intent.body,
        b"status": str(intent.status).encode(),
        b"response_headers": orjson.dumps(intent.response_headers),
        b"response_body": intent.response_body,
        b"created_ms": str(intent.created_ms).encode(),
    }


def specs(count: int, seed: int) -> Iterator[Spec]:
    rng = random.Random(seed)
    for seq in range(count):
        yield Spec(seq, TENANTS[rng.randrange(len(TENANTS))], f"k{seq % KEYS}")


async def produce(
    client: aioredis.Redis,
    prefix: str,
    items: Iterator[Spec],
    *,
    single_stream: str | None = None,
    unpacked: bool = False,
    deadline_s: float = 600.0,
    on_intent: Callable[[Spec, Intent], None] | None = None,
) -> int:
    """Pre-produce intents as the proxy's producer lays them out (XADD + pending HINCRBY), pipelined;
    with `single_stream`, everything goes to one stream and no pending counter (the minimal drain), and
    `unpacked` writes one field per attribute instead of the producer's layout."""
    deadline = time.monotonic() + deadline_s
    produced = 0
    batch: list[tuple[Spec, Intent]] = []

    async def flush() -> None:
        async with client.pipeline(transaction=False) as pipe:
            for spec, intent in batch:
                if single_stream is not None:
                    entry = one_field_per_attribute(intent) if unpacked else intent.to_fields()
                    pipe.xadd(single_stream, entry)  # type: ignore[arg-type]
                    continue
                partition = partition_of(spec.tenant, PARTITIONS)
                pipe.xadd(stream_key(prefix, partition), intent.to_fields())  # type: ignore[arg-type]
                pipe.hincrby(pending_key(prefix, partition), pending_field(spec.tenant, Side.NEW), 1)
            await pipe.execute()

    for spec in items:
        intent = make_intent(spec)
        if on_intent is not None:
            on_intent(spec, intent)
        batch.append((spec, intent))
        if len(batch) >= 500:
            await flush()
            produced += len(batch)
            batch = []
            if time.monotonic() > deadline:
                raise TimeoutError(f"producing took longer than {deadline_s:.0f} s")
    if batch:
        await flush()
        produced += len(batch)
    return produced


# --------------------------------------------------------------------------- processes


def owned_by_all(owner: str) -> Callable[[list[str | None]], bool]:
    def check(owners: list[str | None]) -> bool:
        return all(o == owner for o in owners)

    return check


def shared_by(ids: list[str]) -> Callable[[list[str | None]], bool]:
    def check(owners: list[str | None]) -> bool:
        return None not in owners and all(owners.count(w) == len(owners) // len(ids) for w in ids)

    return check


def nginx_conf(prefix: Path, port: int, logged_port: int, access_log: Path) -> str:
    return f"""
daemon off;
master_process on;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 120s;
    client_body_buffer_size 64k;
    log_format bench '$http_idempotency_key $status';
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        default_type application/json;
        location / {{ return 200 '{{}}'; }}
    }}
    server {{
        listen 127.0.0.1:{logged_port} backlog=4096;
        default_type application/json;
        access_log {access_log} bench;
        location / {{ return 200 '{{}}'; }}
    }}
}}
"""


# --------------------------------------------------------------------------- results


@dataclass
class Row:
    number: str
    name: str
    result: str
    target: str
    verdict: str  # PASS / FAIL / info / n/a


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    floors: dict[str, float] = field(default_factory=dict)  # minimal-drain medians, for the worker's ratio


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


# --------------------------------------------------------------------------- the bench


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.intents: int = args.intents
        self.rounds: int = args.rounds
        self.run_id = secrets.token_hex(4)
        self.prefix = f"bench-buffer-{self.run_id}"
        self.database = f"cutover_bench_buffer_{self.run_id}"
        self.dsn = f"postgresql://postgres@127.0.0.1:5432/{self.database}"
        # The authoritative side's database, read by the PostgreSQL applier's state transfer.
        self.source_database = f"{self.database}_old"
        self.source_dsn = f"postgresql://postgres@127.0.0.1:5432/{self.source_database}"
        self.procs = Processes()
        self.report = Report()
        self.nginx_port = 0
        self.nginx_logged_port = 0
        self.nginx_access_log = workdir / "nginx" / "access.log"
        self.pin = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
        self.admin_token = f"bench-{secrets.token_hex(16)}"
        self.redis = aioredis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_timeout=30)
        self.startup_s: list[float] = []  # time from Worker.run() to its first applied batch
        self.batch_size: int = args.batch_size or WorkerSettings.model_fields["batch_size"].default

    # -- environment ---------------------------------------------------------------------------------
    async def setup(self) -> None:
        conn = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await conn.execute(f'CREATE DATABASE "{self.database}"')
            await conn.execute(f'CREATE DATABASE "{self.source_database}"')
        finally:
            await conn.close()
        for dsn, tables in ((self.dsn, (ITEM_TABLE, MIN_TABLE)), (self.source_dsn, (SOURCE_TABLE,))):
            conn = await asyncpg.connect(dsn)
            try:
                for table in tables:
                    await conn.execute(
                        f"CREATE TABLE {table} (tenant_id text NOT NULL, id text NOT NULL,"
                        " doc jsonb NOT NULL, PRIMARY KEY (tenant_id, id))"
                    )
            finally:
                await conn.close()
        log(f"database {self.database}, redis prefix {self.prefix}")

    async def cleanup(self) -> None:
        self.procs.stop_all()
        try:
            conn = await asyncpg.connect(PG_ADMIN_DSN)
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
                await conn.execute(f'DROP DATABASE IF EXISTS "{self.source_database}" WITH (FORCE)')
            finally:
                await conn.close()
        except (OSError, asyncpg.PostgresError) as exc:
            log(f"could not drop database {self.database}: {exc}")
        try:
            removed = 0
            batch: list[bytes] = []
            async for key in self.redis.scan_iter(match=f"{self.prefix}*", count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    removed += await self.redis.unlink(*batch)
                    batch = []
            if batch:
                removed += await self.redis.unlink(*batch)
            log(f"removed {removed} redis keys {self.prefix}*")
        except OSError as exc:
            log(f"could not clean redis keys: {exc}")
        await self.redis.aclose()

    def pinned(self, cpu: int, argv: list[str]) -> list[str]:
        return ["taskset", "-c", str(cpu), *argv] if self.pin else argv

    async def ensure_nginx(self) -> None:
        if self.nginx_port:
            return
        prefix = self.workdir / "nginx"
        prefix.mkdir(exist_ok=True)
        self.nginx_port, self.nginx_logged_port = free_port(), free_port()
        conf = prefix / "nginx.conf"
        conf.write_text(nginx_conf(prefix, self.nginx_port, self.nginx_logged_port, self.nginx_access_log))
        log_path = prefix / "stdout.log"
        argv = self.pinned(1, [NGINX, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")])
        proc = self.procs.start("nginx", argv, cwd=prefix, log_path=log_path)
        await wait_http(f"http://127.0.0.1:{self.nginx_port}/", proc, log_path, 10.0)
        async with aiohttp.ClientSession() as session:
            async with session.put(f"http://127.0.0.1:{self.nginx_port}/items/k1", data=b'{"a":1}') as r:
                if r.status != 200:
                    raise BenchError(f"nginx answers {r.status} to PUT")

    def settings(
        self, prefix: str, *, applier: str, phase: str = "legacy", state_transfer: bool = True
    ) -> dict[str, Any]:
        backend = f"http://127.0.0.1:{self.nginx_logged_port if applier == 'http' else self.nginx_port}"
        worker: dict[str, Any] = {"applier": applier, "lease_ttl_s": LEASE_TTL_S}
        if applier == "postgres":
            worker["batch_size"] = self.batch_size
            worker["postgres"] = {
                "new": {"url": self.dsn, "resources": [{"path": "/items/{key}", "table": ITEM_TABLE}]},
                "state_transfer": state_transfer,
            }
            if state_transfer:  # the intents' authoritative side is old: its rows are read there
                resources = [{"path": "/items/{key}", "table": SOURCE_TABLE}]
                worker["postgres"]["old"] = {"url": self.source_dsn, "resources": resources}
        return {
            "backends": {"old": {"url": backend}, "new": {"url": backend}},
            "default_phase": phase,
            "postgres_url": self.dsn,
            "redis_url": REDIS_URL,
            "buffer": {"key_prefix": prefix, "partitions": PARTITIONS},
            "worker": worker,
            "log_level": "warning",
        }

    def write_config(self, name: str, raw: dict[str, Any]) -> Path:
        import yaml

        path = self.workdir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        return path

    # -- 1. XADD -------------------------------------------------------------------------------------
    async def bench_xadd(self) -> None:
        unpiped_n = max(1000, self.intents // 10)
        piped_n = max(2000, self.intents // 2)
        fields = [make_intent(s).to_fields() for s in specs(min(piped_n, 20_000), seed=1)]
        body_len = statistics.mean(len(f[b"b"]) for f in fields)
        entry_len = statistics.mean(sum(len(v) for v in f.values()) for f in fields)
        used: dict[str, str] = {}
        results: dict[str, dict[str, list[float]]] = {
            p: {"unpiped": [], "p50_us": [], "piped": []} for p in ("hiredis", "plain")
        }
        for rnd in range(self.rounds):
            for parser in ("hiredis", "plain") if rnd % 2 == 0 else ("plain", "hiredis"):
                client = self.client(parser)
                stream = f"{self.prefix}:xadd"
                try:
                    used[parser] = await self.parser_of(client)
                    await client.delete(stream)
                    lat_ns: list[int] = []
                    deadline = time.monotonic() + 60
                    t0 = time.perf_counter()
                    for i in range(unpiped_n):
                        s = time.perf_counter_ns()
                        await client.xadd(stream, fields[i % len(fields)])  # type: ignore[arg-type]
                        lat_ns.append(time.perf_counter_ns() - s)
                        if time.monotonic() > deadline:
                            break
                    elapsed = time.perf_counter() - t0
                    results[parser]["unpiped"].append(len(lat_ns) / elapsed)
                    results[parser]["p50_us"].append(percentile([x / 1000 for x in lat_ns], 50))
                    await client.delete(stream)
                    done = 0
                    t0 = time.perf_counter()
                    while done < piped_n and time.monotonic() < deadline + 60:
                        async with client.pipeline(transaction=False) as pipe:
                            for i in range(done, done + 100):
                                pipe.xadd(stream, fields[i % len(fields)])  # type: ignore[arg-type]
                            await pipe.execute()
                        done += 100
                    results[parser]["piped"].append(done / (time.perf_counter() - t0))
                    await client.delete(stream)
                finally:
                    await client.aclose()
                r = results[parser]
                log(
                    f"xadd round {rnd + 1} {parser}: unpipelined {r['unpiped'][-1]:,.0f}/s "
                    f"(p50 {r['p50_us'][-1]:.0f} µs), pipelined {r['piped'][-1]:,.0f}/s"
                )
        h, p = results["hiredis"], results["plain"]
        self.report.rows.append(
            Row(
                "1",
                "XADD, one client, unpipelined (hiredis as installed)",
                f"{median(h['unpiped']):,.0f}/s, p50 {median(h['p50_us']):.0f} µs",
                "none (reference ~10,300/s)",
                "info",
            )
        )
        self.report.rows.append(
            Row(
                "1",
                "XADD, pipelined by 100 (hiredis)",
                f"{median(h['piped']):,.0f}/s",
                "none (ref ~26,600/s)",
                "info",
            )
        )
        self.report.details += [
            "### 1. XADD from one client",
            "",
            f"Entries are `Intent.to_fields()` (body {body_len:.0f} B JSON, whole entry {entry_len:.0f} B),"
            " encoded before timing; one asyncio client, one connection; no pending counter.",
            f"Unpipelined: {unpiped_n:,} XADDs per round; pipelined: {piped_n:,} XADDs in pipelines of 100"
            " (no MULTI).",
            "",
            "| parser | unpipelined /s | per-op p50 | pipelined by 100 /s"
            " | per round (unpipelined; pipelined) |",
            "|---|---|---|---|---|",
        ]
        for name, r in (
            (f"hiredis (`{used.get('hiredis', '?')}`)", h),
            (f"plain redis-py (`{used.get('plain', '?')}`)", p),
        ):
            self.report.details.append(
                f"| {name} | {median(r['unpiped']):,.0f} | {median(r['p50_us']):.0f} µs |"
                f" {median(r['piped']):,.0f} |"
                f" {rates(r['unpiped'])}; {rates(r['piped'])} |"
            )
        self.report.details.append("")

    def client(self, parser: str) -> aioredis.Redis:
        if parser == "plain":
            pool = aioredis.ConnectionPool(
                host=REDIS_HOST, port=REDIS_PORT, socket_timeout=30, parser_class=_AsyncRESP2Parser
            )
            return aioredis.Redis(connection_pool=pool, auto_close_connection_pool=True)
        return aioredis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_timeout=30)

    async def parser_of(self, client: aioredis.Redis) -> str:
        await client.ping()
        conn = await client.connection_pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            return type(getattr(conn, "_parser", None)).__name__
        finally:
            await client.connection_pool.release(conn)

    # -- 2. minimal drain ----------------------------------------------------------------------------
    async def minimal_drain(self, floor: str, rnd: int) -> tuple[float, str]:
        """The floor: XREADGROUP COUNT 500 → asyncpg executemany upsert → XACK, one stream, nothing else.
        `floor` names the parser and the entry layout (see FLOORS)."""
        parser, unpacked = FLOORS[floor]
        stream = f"{self.prefix}:min-{floor}-{rnd}"
        items = specs(self.intents, seed=rnd)
        await produce(self.redis, self.prefix, items, single_stream=stream, unpacked=unpacked)
        client = self.client(parser)
        conn = await asyncpg.connect(self.dsn)
        try:
            used = await self.parser_of(client)
            await conn.execute(f"TRUNCATE {MIN_TABLE}")
            await client.xgroup_create(stream, "min", id="0")
            upsert = (
                f"INSERT INTO {MIN_TABLE} (tenant_id, id, doc) VALUES ($1, $2, $3::jsonb)"
                " ON CONFLICT (tenant_id, id) DO UPDATE SET doc = EXCLUDED.doc"
            )
            drained = 0
            deadline = time.monotonic() + 60 + self.intents / 1000
            t0 = time.perf_counter()
            while drained < self.intents:
                if time.monotonic() > deadline:
                    self.report.notes.append(f"minimal drain ({parser}) timed out at {drained:,} intents")
                    break
                reply: Any = await client.xreadgroup("min", "c", {stream: ">"}, count=DRAIN_COUNT, block=1000)
                if not reply:
                    continue
                entries = reply[0][1]
                rows = []
                for _id, fields in entries:
                    if unpacked:
                        tenant, path = fields[b"tenant"].decode(), fields[b"path"].decode()
                        rows.append((tenant, path.rsplit("/", 1)[1], fields[b"body"].decode()))
                        continue
                    meta = orjson.loads(fields[b"m"])
                    rows.append((meta["t"], meta["p"].rsplit("/", 1)[1], fields[b"b"].decode()))
                await conn.executemany(upsert, rows)
                await client.xack(stream, "min", *(entry_id for entry_id, _ in entries))
                drained += len(entries)
            rate = drained / (time.perf_counter() - t0)
        finally:
            await conn.close()
            await client.delete(stream)
            await client.aclose()
        return rate, used

    # -- 3. Worker + PostgresApplier -----------------------------------------------------------------
    async def worker_pg(self, rnd: int, *, state_transfer: bool) -> tuple[float, int, int, int]:
        """Returns (intents/s, mismatches, rows, expected rows). With `state_transfer`, the authoritative
        side's table holds each key's last write (as it would once the writes committed there) and the
        applier copies it from there; without it, the bodies are replayed."""
        mode = "st" if state_transfer else "replay"
        prefix = f"{self.prefix}-pg{rnd}-{mode}"
        expected: dict[tuple[str, str], int] = {}
        last: dict[tuple[str, str], bytes] = {}

        def remember(spec: Spec, intent: Intent) -> None:
            expected[(spec.tenant, spec.key)] = spec.seq
            last[(spec.tenant, spec.key)] = intent.body

        await produce(self.redis, prefix, specs(self.intents, seed=100 + rnd), on_intent=remember)
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute(f"TRUNCATE {ITEM_TABLE}")
            await conn.execute("DROP TABLE IF EXISTS cutover_applied_intent")
        finally:
            await conn.close()
        conn = await asyncpg.connect(self.source_dsn)
        try:
            await conn.execute(f"TRUNCATE {SOURCE_TABLE}")
            if state_transfer:
                records = [(tenant, key, body.decode()) for (tenant, key), body in last.items()]
                await conn.copy_records_to_table(SOURCE_TABLE, records=records)
                await conn.execute(f"ANALYZE {SOURCE_TABLE}")
        finally:
            await conn.close()
        settings = Settings.model_validate(
            self.settings(prefix, applier="postgres", state_transfer=state_transfer)
        )
        # What `cutover worker` builds: the applier per side, toward new here.
        worker = Worker(settings, build_applier(settings), worker_id=f"bench-pg-{rnd}-{mode}")
        applied, elapsed = await self.run_worker(worker, self.intents)
        rate = applied / elapsed
        conn = await asyncpg.connect(self.dsn)
        try:
            rows = await conn.fetch(f"SELECT tenant_id, id, (doc->>'seq')::int AS seq FROM {ITEM_TABLE}")
        finally:
            await conn.close()
        actual = {(r["tenant_id"], r["id"]): r["seq"] for r in rows}
        mismatches = sum(1 for k, v in expected.items() if actual.get(k) != v)
        mismatches += sum(1 for k in actual if k not in expected)
        return rate, mismatches, len(actual), len(expected)

    async def run_worker(self, worker: Worker, total: int) -> tuple[int, float]:
        """Run an in-process Worker until it applied `total` intents (bounded); (applied, seconds)."""
        stop = asyncio.Event()
        t0 = time.perf_counter()
        task = asyncio.create_task(worker.run(stop))
        deadline = time.monotonic() + 60 + total / 500
        first: float | None = None
        try:
            while worker.stats.applied < total:
                if first is None and worker.stats.applied:
                    first = time.perf_counter() - t0
                if task.done():
                    task.result()
                    raise BenchError("worker stopped early")
                if time.monotonic() > deadline:
                    self.report.notes.append(
                        f"worker {worker.worker_id} timed out at {worker.stats.applied:,}/{total:,}"
                    )
                    break
                await asyncio.sleep(0.005)
            elapsed = time.perf_counter() - t0
            self.startup_s.append(first if first is not None else float("nan"))
        finally:
            stop.set()
            try:
                async with asyncio.timeout(30):
                    await task
            except TimeoutError:
                self.report.notes.append(f"worker {worker.worker_id} did not stop within 30 s")
        if worker.stats.retries or worker.stats.dead_lettered:
            self.report.notes.append(
                f"worker {worker.worker_id}: {worker.stats.retries} retries, "
                f"{worker.stats.dead_lettered} dead-lettered"
            )
        return worker.stats.applied, elapsed

    async def bench_drains(self, with_floor: bool, with_worker: bool) -> None:
        floor: dict[str, list[float]] = {name: [] for name in FLOORS}
        parsers: dict[str, str] = {}
        pg: list[float] = []
        replay: list[float] = []
        replay_checks: list[tuple[int, int, int]] = []
        ratios: dict[str, list[float]] = {name: [] for name in FLOORS}
        checks: list[tuple[int, int, int]] = []
        startups: list[float] = []
        for rnd in range(self.rounds):
            order: list[str] = []
            if with_floor:
                order += list(FLOORS)
            if with_worker:
                order += ["worker", "worker_replay"]
            order = order[rnd % len(order) :] + order[: rnd % len(order)]
            for what in order:
                if what == "worker":
                    rate, mismatches, rows, expected = await self.worker_pg(rnd, state_transfer=True)
                    startups.append(self.startup_s[-1])
                    pg.append(rate)
                    checks.append((mismatches, rows, expected))
                    log(f"drain round {rnd + 1} worker+pg: {rate:,.0f}/s, {mismatches} mismatches")
                elif what == "worker_replay":
                    rate, mismatches, rows, expected = await self.worker_pg(rnd, state_transfer=False)
                    replay.append(rate)
                    replay_checks.append((mismatches, rows, expected))
                    log(f"drain round {rnd + 1} worker+pg replay: {rate:,.0f}/s, {mismatches} mismatches")
                else:
                    rate, used = await self.minimal_drain(what, rnd)
                    floor[what].append(rate)
                    parsers[what] = used
                    log(f"drain round {rnd + 1} minimal {what} ({used}): {rate:,.0f}/s")
            if with_floor and with_worker:
                for name in FLOORS:
                    ratios[name].append(pg[-1] / floor[name][-1])
        n = f"{self.intents:,}"
        if with_floor:
            self.report.floors = {k: median(v) for k, v in floor.items()}
            for what, label in FLOOR_LABELS.items():
                self.report.rows.append(
                    Row(
                        "2",
                        f"minimal drain, {label} ({parsers.get(what, '?')})",
                        f"{median(floor[what]):,.0f}/s",
                        "none (floor)" if what == "fields" else "none (reference)",
                        "info",
                    )
                )
        if with_worker:
            mism = sum(c[0] for c in checks)
            ratio = median(ratios["fields"]) if with_floor else float("nan")
            ok = median(pg) >= 20_000 and (ratio >= 4.0 if with_floor else False) and mism == 0
            ratio_text = (
                f"{ratio:.2f}× the floor ({median(ratios['plain']):.2f}× the packed-entry plain drain)"
                if with_floor
                else "ratio n/a (drain not run)"
            )
            self.report.rows.append(
                Row(
                    "3",
                    "Worker + PostgresApplier, state transfer from old's database (16 partitions,"
                    f" 50 tenants, batch_size {self.batch_size})",
                    f"{median(pg):,.0f}/s; {ratio_text}; {mism} mismatches",
                    "≥ 20,000/s and ≥ 4× the floor, 0 mismatches",
                    verdict(ok) if with_floor else ("n/a" if median(pg) >= 20_000 and mism == 0 else "FAIL"),
                )
            )
            replay_mism = sum(c[0] for c in replay_checks)
            self.report.rows.append(
                Row(
                    "3",
                    "Worker + PostgresApplier, bodies replayed (`state_transfer: false`)",
                    f"{median(replay):,.0f}/s; {replay_mism} mismatches",
                    "none (reference)",
                    "info",
                )
            )
        self.report.details += [
            "### 2–3. Draining N pre-produced intents into PostgreSQL",
            "",
            f"N = {n} per round, produced before each drain (pipelined, not timed). The drains run one after"
            " another in each round, their order rotated per round; ratios are per round.",
            "- minimal drain: one stream, one consumer; `XREADGROUP COUNT 500` → take tenant, key and body"
            f" from each entry → `executemany` upsert into a plain `{MIN_TABLE}` (tenant_id, id, doc jsonb)"
            " → `XACK`; no ordering beyond the stream, no leases, no retries, no ledger. Three variants:",
            "  - **the floor** (the target's): plain redis-py, entries with one field per intent attribute"
            " (12 fields: id, tenant, target, method, path, query, headers, body, status, response headers,"
            " response body, time), as a first-cut producer would write them;",
            "  - for reference, the same loop on the producer's own entries (`m`, the metadata as one JSON"
            " field; `b`; `r`), decoding `m` with orjson: with plain redis-py, and with hiredis. These two"
            " already use two of the target's levers (packed entries; hiredis): they show what those are"
            " worth alone.",
            "  - The plain runs pass `parser_class=redis._parsers._AsyncRESP2Parser`; redis-py 8 speaks RESP3"
            " by default and swaps it for its pure-Python `_AsyncRESP3Parser` (the class named is the one"
            " in use).",
            "- Worker: `buffer_worker.worker.Worker` **in-process** (this script's uvloop event loop) with"
            " the applier `cutover worker` builds (`build_applier`: `PostgresApplier` toward new, ledger"
            " table, one transaction per batch), default worker settings"
            f" (batch_size {self.batch_size}, block_ms 200), its own redis-py client (hiredis as installed);"
            " 16 partitions, 50 tenants, PUT /items/k<i%1000>; timed from `run()` to the last intent counted"
            " applied. With state transfer (the default) a second database holds old's rows (each key's"
            " last write, loaded before the drain): per batch one SELECT there for every touched key, then"
            " one statement writing those rows on new; replayed, the bodies are written as they are.",
            "",
            "| drain | median /s | per round |",
            "|---|---|---|",
        ]
        if with_floor:
            for what, label in FLOOR_LABELS.items():
                self.report.details.append(
                    f"| minimal, {label} | {median(floor[what]):,.0f} | {rates(floor[what])} |"
                )
        if with_worker:
            self.report.details.append(
                f"| Worker + PostgresApplier, state transfer | {median(pg):,.0f} | {rates(pg)} |"
            )
            self.report.details.append(
                f"| Worker + PostgresApplier, replayed | {median(replay):,.0f} | {rates(replay)} |"
            )
            if with_floor:
                self.report.details.append("")
                for what, label in FLOOR_LABELS.items():
                    per_round = ", ".join(f"{r:.2f}×" for r in ratios[what])
                    self.report.details.append(
                        f"- Worker / minimal drain ({label}): median {median(ratios[what]):.2f}×;"
                        f" per round {per_round}"
                    )
            self.report.details.append(
                "\nWorker time from `run()` to its first applied batch (included above), per round: "
                + ", ".join(f"{1000 * s:.0f} ms" for s in startups)
                + "."
            )
            self.report.details.append(
                "\nCorrectness (table vs last write per (tenant, key)), per round, state transfer: "
                + "; ".join(f"{m} mismatches, {r:,} rows of {e:,} expected" for m, r, e in checks)
                + "; replayed: "
                + "; ".join(f"{m} mismatches, {r:,} rows of {e:,} expected" for m, r, e in replay_checks)
            )
        self.report.details.append("")

    # -- 4. Worker + HttpApplier ---------------------------------------------------------------------
    async def bench_http(self) -> None:
        await self.ensure_nginx()
        total = max(1000, self.intents // 10)
        results: list[float] = []
        order_errors: list[int] = []
        seen_counts: list[int] = []
        for rnd in range(self.rounds):
            prefix = f"{self.prefix}-http{rnd}"
            ident: dict[str, tuple[int, int]] = {}

            def remember(spec: Spec, intent: Intent, table: dict[str, tuple[int, int]] = ident) -> None:
                table[intent.intent_id] = (partition_of(spec.tenant, PARTITIONS), spec.seq)

            await produce(self.redis, prefix, specs(total, seed=200 + rnd), on_intent=remember)
            self.nginx_access_log.write_bytes(b"")
            settings = Settings.model_validate(self.settings(prefix, applier="http"))
            worker = Worker(settings, HttpApplier(settings), worker_id=f"bench-http-{rnd}")
            applied, elapsed = await self.run_worker(worker, total)
            results.append(applied / elapsed)
            await asyncio.sleep(0.2)
            last: dict[int, int] = {}
            errors = 0
            seen = 0
            for line in self.nginx_access_log.read_text().splitlines():
                key = line.split(" ", 1)[0]
                if key not in ident:
                    continue
                seen += 1
                partition, seq = ident[key]
                if seq <= last.get(partition, -1):
                    errors += 1
                last[partition] = max(seq, last.get(partition, -1))
            order_errors.append(errors)
            seen_counts.append(seen)
            log(f"http round {rnd + 1}: {results[-1]:,.0f}/s, {seen} requests logged, {errors} out of order")
        ok = median(results) >= 3000 and sum(order_errors) == 0 and all(s >= total for s in seen_counts)
        self.report.rows.append(
            Row(
                "4",
                "Worker + HttpApplier → nginx",
                f"{median(results):,.0f}/s; {sum(order_errors)} out-of-order",
                "≥ 3,000/s, per-partition order",
                verdict(ok),
            )
        )
        self.report.details += [
            "### 4. Worker + HttpApplier",
            "",
            f"{total:,} intents per round over 16 partitions and 50 tenants, Worker in-process, HttpApplier"
            " (aiohttp) replaying PUTs to nginx (`return 200 '{}'`, pinned to CPU1) which logs each"
            " request's Idempotency-Key; order is checked from that log: within each partition the"
            " sequence numbers must rise.",
            f"Per round: {rates(results)} intents/s; requests seen {', '.join(map(str, seen_counts))}"
            f" (of {total:,}); out-of-order {', '.join(map(str, order_errors))}.",
            "",
        ]

    # -- 5. append latency ---------------------------------------------------------------------------
    async def start_proxy(
        self, name: str, prefix: str, phase: str
    ) -> tuple[subprocess.Popen[bytes], int, int]:
        await self.ensure_nginx()
        port, admin_port = free_port(), free_port()
        raw = self.settings(prefix, applier="http", phase=phase)
        raw["listen"] = f"127.0.0.1:{port}"
        raw["admin"] = {
            "listen": f"127.0.0.1:{admin_port}",
            "tokens": {"bench": {"token": self.admin_token, "scope": "write"}},
        }
        raw["buffer"]["spool_path"] = str(self.workdir / f"{name}.spool")
        # Backends: the plain nginx server (no access log) for the proxy.
        url = f"http://127.0.0.1:{self.nginx_port}"
        raw["backends"] = {"old": {"url": url}, "new": {"url": url}}
        config = self.write_config(name, raw)
        log_path = self.workdir / f"{name}.log"
        argv = self.pinned(0, [str(CUTOVER), "serve", "--config", str(config)])
        proc = self.procs.start(name, argv, cwd=self.workdir, log_path=log_path)
        await wait_http(f"http://127.0.0.1:{admin_port}/readyz", proc, log_path)
        return proc, port, admin_port

    def wrk(self, port: int, duration_s: int, script: Path) -> WrkResult:
        argv = self.pinned(
            1,
            [
                WRK,
                "-t1",
                "-c1",
                f"-d{duration_s}s",
                "--latency",
                "-s",
                str(script),
                f"http://127.0.0.1:{port}/items/k1",
            ],
        )
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 30, check=False)
        if proc.returncode != 0:
            raise BenchError(f"wrk exited {proc.returncode}: {proc.stderr.strip()[-300:]}")
        return parse_wrk(proc.stdout)

    async def bench_append(self) -> None:
        script = self.workdir / "put.lua"
        body = orjson.dumps({"id": "k1", "name": "bench item", "pad": PAD}).decode()
        script.write_text(
            'wrk.method = "PUT"\n'
            f"wrk.body = '{body}'\n"
            'wrk.headers["Content-Type"] = "application/json"\n'
            'wrk.headers["X-Tenant-ID"] = "bench"\n'
        )
        legacy, l_port, _ = await self.start_proxy("proxy-legacy", f"{self.prefix}-append", "legacy")
        dual, d_port, _ = await self.start_proxy("proxy-dual", f"{self.prefix}-append", "dual_write")
        duration = 5
        res: dict[str, list[WrkResult]] = {"legacy": [], "dual_write": []}
        try:
            for port in (l_port, d_port):
                await asyncio.to_thread(self.wrk, port, 2, script)  # warm-up
            for rnd in range(self.rounds):
                pair = [("legacy", l_port), ("dual_write", d_port)]
                for phase, port in pair if rnd % 2 == 0 else pair[::-1]:
                    result = await asyncio.to_thread(self.wrk, port, duration, script)
                    res[phase].append(result)
                    log(f"append round {rnd + 1} {phase}: p50 {result.p50_ms:.3f} ms, {result.rps:,.0f}/s")
            appended = 0
            for partition in range(PARTITIONS):
                appended += int(await self.redis.xlen(stream_key(f"{self.prefix}-append", partition)))
        finally:
            self.procs.stop(legacy)
            self.procs.stop(dual)
        breakdown = await self.append_breakdown()
        deltas = [d.p50_ms - lg.p50_ms for lg, d in zip(res["legacy"], res["dual_write"], strict=True)]
        delta = median(deltas)
        errors = sum(r.errors for rs in res.values() for r in rs)
        self.report.rows.append(
            Row(
                "5",
                "append latency added (PUT p50, dual_write − legacy, 1 conn)",
                f"{delta:+.3f} ms ({median([r.p50_ms for r in res['legacy']]):.3f} → "
                f"{median([r.p50_ms for r in res['dual_write']]):.3f} ms)",
                "≤ 0.3 ms",
                verdict(delta <= 0.3 and errors == 0),
            )
        )
        self.report.details += [
            "### 5. Append latency added by the buffer",
            "",
            "Two `cutover serve` processes (one `default_phase: legacy`, one `dual_write`), each pinned to"
            " CPU0 (`taskset -c 0`); backends old and new are the same nginx (pinned to CPU1);"
            f" `wrk -t1 -c1 -d{duration}s --latency -s put.lua` (PUT /items/k1, ~200-byte JSON body,"
            " `X-Tenant-ID: bench`) pinned to CPU1, after a 2 s warm-up of each; legacy and dual_write"
            " alternate, order swapped each round. No worker runs (intents accumulate in Redis).",
            "",
            "| phase | p50 ms (per round) | p99 ms (per round) | req/s (per round) |",
            "|---|---|---|---|",
        ]
        for phase, rs in res.items():
            self.report.details.append(
                f"| {phase} | {', '.join(f'{r.p50_ms:.3f}' for r in rs)} |"
                f" {', '.join(f'{r.p99_ms:.3f}' for r in rs)} | {rates([r.rps for r in rs])} |"
            )
        self.report.details += [
            "",
            f"p50 delta per round: {', '.join(f'{d:+.3f}' for d in deltas)} ms (median {delta:+.3f} ms);"
            f" errors (non-2xx + socket) {errors}; intents appended in dual_write: {appended:,}.",
            "",
            "In-process breakdown (this script, unpinned, same Redis, 2,000 sequential calls each, p50):"
            f" `Intent(...)` construction {breakdown['intent']:.0f} µs,"
            f" bare `XADD` {breakdown['xadd']:.0f} µs,"
            f" `RedisIntentProducer.append` (one script: XADD + HINCRBY) {breakdown['producer']:.0f} µs,"
            f" `SpoolingSink.append` (the proxy's sink: a timeout scope around the producer)"
            f" {breakdown['sink']:.0f} µs.",
            "",
        ]

    async def append_breakdown(self) -> dict[str, float]:
        prefix = f"{self.prefix}-inproc"
        producer = RedisIntentProducer.from_url(REDIS_URL, prefix=prefix, partitions=PARTITIONS)
        sink = SpoolingSink(producer, self.workdir / "inproc.spool", max_bytes=1 << 20)
        await sink.start()
        client = self.client("hiredis")
        samples: dict[str, list[float]] = {"intent": [], "xadd": [], "producer": [], "sink": []}
        try:
            spec = Spec(0, "bench", "k1")
            for i in range(2000):
                t = time.perf_counter_ns()
                intent = make_intent(spec)
                samples["intent"].append((time.perf_counter_ns() - t) / 1000)
                order = ("xadd", "producer", "sink") if i % 2 else ("sink", "producer", "xadd")
                for what in order:
                    t = time.perf_counter_ns()
                    if what == "xadd":
                        await client.xadd(f"{prefix}:xadd", intent.to_fields())  # type: ignore[arg-type]
                    elif what == "producer":
                        await producer.append(intent)
                    else:
                        await sink.append(intent)
                    samples[what].append((time.perf_counter_ns() - t) / 1000)
        finally:
            await sink.close()
            await client.aclose()
        return {k: percentile(v, 50) for k, v in samples.items()}

    # -- 6. takeover ---------------------------------------------------------------------------------
    async def owners(self, prefix: str) -> list[str | None]:
        values: list[Any] = await self.redis.mget([lease_key(prefix, p) for p in range(PARTITIONS)])
        return [None if v is None else v.decode() for v in values]

    async def wait_owners(
        self, prefix: str, ok: Callable[[list[str | None]], bool], timeout_s: float
    ) -> float | None:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            if ok(await self.owners(prefix)):
                return time.monotonic() - t0
            await asyncio.sleep(0.02)
        return None

    async def pending_by_partition(self, prefix: str) -> dict[int, int]:
        counts: dict[int, int] = {}
        for partition in range(PARTITIONS):
            values: list[Any] = await self.redis.hvals(pending_key(prefix, partition))
            if total := sum(int(v) for v in values):
                counts[partition] = total
        return counts

    async def unacked(self, prefix: str, partitions: list[int]) -> list[int]:
        """Partitions whose consumer has delivered-but-unacknowledged entries (an in-flight batch)."""
        found = []
        for partition in partitions:
            summary: Any = await self.redis.xpending(stream_key(prefix, partition), CONSUMER_GROUP)
            if int(summary.get("pending", 0)):
                found.append(partition)
        return found

    async def steady_producer(self, prefix: str, stop: asyncio.Event, rate_per_s: float) -> int:
        produced = 0
        seq = 0
        rng = random.Random(7)
        t0 = time.monotonic()
        while not stop.is_set() and time.monotonic() - t0 < 300:
            due = int((time.monotonic() - t0) * rate_per_s)
            batch = [
                Spec(seq + i, TENANTS[rng.randrange(len(TENANTS))], f"k{(seq + i) % KEYS}")
                for i in range(due - produced)
            ]
            if batch:
                await produce(self.redis, prefix, iter(batch))
                produced += len(batch)
                seq += len(batch)
            await asyncio.sleep(0.01)
        return produced

    async def bench_takeover(self) -> None:
        await self.ensure_nginx()
        host = socket.gethostname()
        rounds = self.rounds
        times: list[float | None] = []
        first_moves: list[float | None] = []
        leftovers: list[int] = []
        inflight: list[list[int]] = []  # the victim's partitions with an unacknowledged batch at the kill
        stuck: list[list[int]] = []  # partitions still holding intents 15 s after the flow stopped
        for rnd in range(rounds):
            prefix = f"{self.prefix}-takeover{rnd}"
            config = self.write_config(f"takeover{rnd}", self.settings(prefix, applier="http"))
            stop_producer = asyncio.Event()
            producer = asyncio.create_task(self.steady_producer(prefix, stop_producer, 1000))
            procs: list[subprocess.Popen[bytes]] = []
            try:
                for name in ("a", "b"):
                    log_path = self.workdir / f"takeover{rnd}-{name}.log"
                    argv = [str(CUTOVER), "worker", "--config", str(config)]
                    proc = self.procs.start(f"worker-{name}", argv, cwd=self.workdir, log_path=log_path)
                    procs.append(proc)
                    wid = f"{host}:{proc.pid}"
                    if name == "a":
                        got = await self.wait_owners(prefix, owned_by_all(wid), 20)
                        if got is None:
                            raise BenchError(f"worker a never owned every partition:\n{tail(log_path)}")
                ids = [f"{host}:{p.pid}" for p in procs]
                balanced = await self.wait_owners(prefix, shared_by(list(ids)), 30)
                if balanced is None:
                    raise BenchError(
                        f"the two workers never shared the partitions: {await self.owners(prefix)}"
                    )
                await asyncio.sleep(1.0)
                victim, survivor = procs[0], ids[1]
                before = await self.owners(prefix)
                victim_parts = [p for p, o in enumerate(before) if o == ids[0]]
                self.procs.signal(victim, signal.SIGKILL)
                t_kill = time.monotonic()
                victim.wait(timeout=5)
                inflight.append(await self.unacked(prefix, victim_parts))
                first: float | None = None
                done: float | None = None
                while time.monotonic() - t_kill < 45:
                    owners = await self.owners(prefix)
                    moved = sum(1 for p in victim_parts if owners[p] == survivor)
                    if moved and first is None:
                        first = time.monotonic() - t_kill
                    if all(o == survivor for o in owners):
                        done = time.monotonic() - t_kill
                        break
                    await asyncio.sleep(0.02)
                times.append(done)
                first_moves.append(first)
                stop_producer.set()
                produced = await producer
                t_drain = time.monotonic()
                by_partition = await self.pending_by_partition(prefix)
                while by_partition and time.monotonic() - t_drain < 15:
                    await asyncio.sleep(0.1)
                    by_partition = await self.pending_by_partition(prefix)
                left = sum(by_partition.values())
                leftovers.append(left)
                stuck.append(sorted(by_partition))
                log(
                    f"takeover round {rnd + 1}: victim had {len(victim_parts)} partitions; first taken after "
                    f"{first if first is None else round(first, 2)} s, all after "
                    f"{done if done is None else round(done, 2)} s; produced {produced}, pending after {left}"
                )
            finally:
                stop_producer.set()
                with contextlib.suppress(Exception):
                    await producer
                for proc in procs:
                    self.procs.stop(proc)
        finished = [t for t in times if t is not None]
        worst = max(finished) if len(finished) == len(times) and finished else None
        self.report.rows.append(
            Row(
                "6",
                "takeover after SIGKILL of one of two workers",
                (
                    f"median {median(finished):.2f} s, worst {'>45 s' if worst is None else f'{worst:.2f} s'}"
                    if finished
                    else "not within 45 s"
                )
                + f"; {sum(leftovers):,} intents left undrained",
                "≤ 5 s",
                verdict(worst is not None and worst <= 5.0),
            )
        )
        self.report.details += [
            "### 6. Takeover",
            "",
            "Two `cutover worker --config` subprocesses (HTTP applier to nginx, lease_ttl_s 3 as by default,"
            " 16 partitions)"
            " on a fresh prefix, intents flowing at ~1,000/s from this script; once both hold partitions,"
            " one is killed with SIGKILL and the lease keys `<prefix>:{p<N>}:lease` are polled every 20 ms"
            " until every partition names the survivor (bounded at 45 s).",
            "",
            "The flow then stops and the survivor gets 15 s to drain (pending counters back to 0).",
            "",
            "| round | first of the victim's partitions taken | all owned by the survivor |"
            " victim's partitions with an unacked batch at the kill | intents pending 15 s after the flow"
            " stopped (partitions) |",
            "|---|---|---|---|---|",
        ]
        for i, (f, d, left) in enumerate(zip(first_moves, times, leftovers, strict=False)):
            fly = inflight[i] if i < len(inflight) else []
            st = stuck[i] if i < len(stuck) else []
            self.report.details.append(
                f"| {i + 1} | {'-' if f is None else f'{f:.2f} s'}"
                f" | {'> 45 s' if d is None else f'{d:.2f} s'} | {fly or 'none'} | {left} ({st or 'none'}) |"
            )
        if any(leftovers):
            self.report.notes.append(
                "takeover: intents were left undrained after a takeover (see section 6): partitions that"
                " had an unacknowledged batch when their owner died are re-read from the pending list and"
                " then never read with `>` again."
            )
        self.report.details.append("")

    # -- 7. authority-switch hold --------------------------------------------------------------------
    async def bench_switch(self) -> None:
        prefix = f"{self.prefix}-switch"
        proxy, port, admin_port = await self.start_proxy("proxy-switch", prefix, "legacy")
        config = self.write_config("switch-worker", self.settings(prefix, applier="http"))
        worker = self.procs.start(
            "worker-switch",
            [str(CUTOVER), "worker", "--config", str(config)],
            cwd=self.workdir,
            log_path=self.workdir / "switch-worker.log",
        )
        cycles = 3 if self.args.quick else 10
        admin = f"http://127.0.0.1:{admin_port}"
        auth = {"Authorization": f"Bearer {self.admin_token}"}
        writes: list[tuple[float, float, int]] = []  # (scheduled, latency_s, status)
        windows: list[tuple[float, float]] = []
        calls: list[tuple[str, float, int, str]] = []
        timeout = aiohttp.ClientTimeout(total=15)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as admin_session:

                async def set_phase(phase: str) -> tuple[int, str]:
                    url = f"{admin}/tenants/{SWITCH_TENANT}/phase"
                    async with admin_session.put(
                        url, json={"phase": phase, "reason": "bench"}, headers=auth
                    ) as r:
                        return r.status, (await r.text())[:200]

                for phase in ("dual_write", "shadow"):
                    status, text = await set_phase(phase)
                    if status != 200:
                        raise BenchError(f"moving {SWITCH_TENANT} to {phase}: {status} {text}")
                stop = asyncio.Event()
                writer = asyncio.create_task(self.write_loop(port, stop, writes))
                await asyncio.sleep(2.0)
                for _ in range(cycles):
                    for phase in ("live", "shadow"):
                        t0 = time.monotonic()
                        status, text = await set_phase(phase)
                        t1 = time.monotonic()
                        windows.append((t0, t1))
                        calls.append((phase, t1 - t0, status, text if status != 200 else ""))
                        log(f"switch to {phase}: {status} in {1000 * (t1 - t0):.0f} ms")
                        await asyncio.sleep(1.0)
                stop.set()
                async with asyncio.timeout(30):
                    await writer
        finally:
            self.procs.stop(worker)
            self.procs.stop(proxy)
        in_window = [
            lat for sched, lat, _ in writes if any(sched <= w1 and sched + lat >= w0 for w0, w1 in windows)
        ]
        outside = [
            lat
            for sched, lat, _ in writes
            if not any(sched <= w1 and sched + lat >= w0 for w0, w1 in windows)
        ]
        failed = [s for _, _, s in writes if not 200 <= s < 300]
        p99 = percentile(in_window, 99)
        durations = [d for _, d, _, _ in calls]
        refused = [c for c in calls if c[2] != 200]
        self.report.rows.append(
            Row(
                "7",
                "authority-switch hold (write p99 during switches)",
                f"{1000 * p99:.0f} ms; admin call p50 {1000 * median(durations):.0f} ms, max"
                f" {1000 * max(durations, default=0):.0f} ms; {len(refused)}/{len(calls)} switches refused",
                "≤ 2 s p99",
                verdict(p99 <= HOLD_TARGET_S and not failed),
            )
        )
        self.report.details += [
            "### 7. Authority-switch hold",
            "",
            f"One `cutover serve` (CPU0) and one `cutover worker` (HTTP applier, unpinned), both backends the"
            f" nginx on CPU1. Tenant `{SWITCH_TENANT}` is moved legacy → dual_write → shadow, then receives"
            f" ~{SWITCH_RATE_PER_S} PUTs/s (open loop: a write is sent at its scheduled time whatever the"
            " earlier ones do; latency counts from the scheduled time) while it is switched shadow → live →"
            f" shadow {cycles} times (1 s apart) through `PUT /tenants/{{t}}/phase`. A write is in a switch"
            " window when its lifetime overlaps an admin call.",
            "",
            f"- writes: {len(writes):,} total, {len(failed)} non-2xx"
            f" ({', '.join(sorted({str(s) for s in failed})) or 'none'})",
            f"- in switch windows: {len(in_window):,} writes, p50 {1000 * percentile(in_window, 50):.1f} ms,"
            f" p99 {1000 * p99:.1f} ms, max {1000 * max(in_window, default=0):.1f} ms",
            f"- outside: {len(outside):,} writes, p50 {1000 * percentile(outside, 50):.1f} ms,"
            f" p99 {1000 * percentile(outside, 99):.1f} ms",
            "- admin calls (ms): "
            + ", ".join(f"{p} {1000 * d:.0f}" + ("" if s == 200 else f" [{s}]") for p, d, s, _ in calls),
        ]
        for phase, _d, status, text in refused[:3]:
            self.report.details.append(f"- refused switch to {phase}: {status} {text}")
        self.report.details.append("")

    async def write_loop(self, port: int, stop: asyncio.Event, out: list[tuple[float, float, int]]) -> None:
        url = f"http://127.0.0.1:{port}/items/"
        headers = {"X-Tenant-ID": SWITCH_TENANT, "Content-Type": "application/json"}
        connector = aiohttp.TCPConnector(limit=512)
        tasks: set[asyncio.Task[None]] = set()
        async with aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=10)
        ) as session:

            async def one(seq: int, scheduled: float) -> None:
                body = orjson.dumps({"id": f"k{seq % 100}", "seq": seq, "pad": PAD})
                status = 0
                try:
                    async with session.put(f"{url}k{seq % 100}", data=body, headers=headers) as r:
                        await r.read()
                        status = r.status
                except (aiohttp.ClientError, TimeoutError):
                    status = -1
                out.append((scheduled, time.monotonic() - scheduled, status))

            t0 = time.monotonic()
            seq = 0
            while not stop.is_set() and time.monotonic() - t0 < 120:
                scheduled = t0 + seq / SWITCH_RATE_PER_S
                delay = scheduled - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                task = asyncio.create_task(one(seq, scheduled))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                seq += 1
            if tasks:
                await asyncio.wait(tasks, timeout=15)

    # -- orchestration -------------------------------------------------------------------------------
    async def run(self, only: set[str]) -> None:
        await self.setup()
        steps: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("xadd", self.bench_xadd),
            ("drain", lambda: self.bench_drains("drain" in only, "worker_pg" in only)),
            ("worker_http", self.bench_http),
            ("append", self.bench_append),
            ("takeover", self.bench_takeover),
            ("switch", self.bench_switch),
        ]
        for name, step in steps:
            if name == "drain" and not ({"drain", "worker_pg"} & only):
                continue
            if name != "drain" and name not in only:
                continue
            log(f"== {name}")
            t0 = time.monotonic()
            try:
                await step()
            except Exception as exc:
                log(f"{name} failed: {exc!r}")
                self.report.rows.append(
                    Row("-", name, f"error: {type(exc).__name__}: {exc}"[:200], "-", "FAIL")
                )
            log(f"== {name} took {time.monotonic() - t0:.0f} s")


# --------------------------------------------------------------------------- header and output


def environment(bench: Bench, hiredis_parser: str, redis_info: dict[str, Any], pg_version: str) -> list[str]:

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    command = shlex.join([shown_path(sys.executable), *sys.argv])
    pinning = "proxies on CPU0, nginx and wrk on CPU1" if bench.pin else "none (taskset or 2 CPUs missing)"
    return [
        f"- command: `{command}`",
        f"- date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        f"- machine: nproc {os.cpu_count()}, {cpu_model()}, kernel {platform.release()}",
        f"- Python: `{shown_path(sys.executable)}` ({platform.python_version()},"
        f" {platform.python_implementation()}),"
        f" event loop uvloop {version('uvloop')}",
        f"- redis-py {version('redis')}, hiredis {version('hiredis')}, asyncpg {version('asyncpg')},"
        f" aiohttp {version('aiohttp')}; hiredis active: "
        f"{'yes' if 'Hiredis' in hiredis_parser else 'no'} (default parser: `{hiredis_parser}`)",
        f"- Redis {redis_info.get('redis_version', '?')} (appendonly {redis_info.get('aof_enabled', '?')}),"
        f" {pg_version}",
        f"- N = {bench.intents:,} intents, {bench.rounds} round(s), medians over rounds;"
        f" pinning: {pinning};"
        " Redis, PostgreSQL and this script unpinned",
    ]


def render(bench: Bench, header: list[str]) -> str:
    out = [MARK_START, "## Buffer benchmark (`benchmarks/bench_buffer.py`)", "", *header, ""]
    out += ["| # | measurement | result | target | verdict |", "|---|---|---|---|---|"]
    out += [f"| {r.number} | {r.name} | {r.result} | {r.target} | {r.verdict} |" for r in bench.report.rows]
    out += ["", *bench.report.details]
    if bench.report.notes:
        out += ["### Notes", "", *(f"- {n}" for n in bench.report.notes), ""]
    out.append(MARK_END)
    return "\n".join(out) + "\n"


ALL = ("xadd", "drain", "worker_pg", "worker_http", "append", "takeover", "switch")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--intents", type=int, default=None, help="intents per drain (default 200000)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per measurement (default 3)")
    parser.add_argument("--quick", action="store_true", help="20000 intents, 1 round, 3 switch cycles")
    parser.add_argument("--only", default=",".join(ALL), help=f"comma-separated subset of {','.join(ALL)}")
    parser.add_argument("--write", type=Path, help="Markdown file to put the section into")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="PostgreSQL worker batch size (default: the project's)"
    )
    args = parser.parse_args(argv)
    if args.intents is None:
        args.intents = 20_000 if args.quick else 200_000
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    unknown = set(args.only.split(",")) - set(ALL)
    if unknown:
        parser.error(f"unknown --only names: {', '.join(sorted(unknown))}")
    return args


async def amain(args: argparse.Namespace) -> int:
    only = set(args.only.split(","))
    with tempfile.TemporaryDirectory(prefix="bench-buffer-") as tmp:
        bench = Bench(args, Path(tmp))
        hiredis_parser = await bench.parser_of(bench.redis)
        redis_info: dict[str, Any] = await bench.redis.info()
        conn = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            pg_version = "PostgreSQL " + str(await conn.fetchval("SHOW server_version"))
        finally:
            await conn.close()
        header = environment(bench, hiredis_parser, redis_info, pg_version)
        loop = asyncio.get_running_loop()
        stop_requested = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop_requested.set)
        settle_heap()  # as every cutover process does before it serves (the worker drains in process)
        run = asyncio.create_task(bench.run(only))
        interrupted = asyncio.create_task(stop_requested.wait())
        try:
            await asyncio.wait({run, interrupted}, return_when=asyncio.FIRST_COMPLETED)
            if not run.done():
                log("interrupted; cleaning up")
                run.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await run
                return 130
            run.result()
        finally:
            interrupted.cancel()
            await bench.cleanup()
        section = render(bench, header)
    print(section)
    if args.write is not None:
        write_section(args.write, section, MARK_START, MARK_END)
        log(f"wrote section to {args.write}")
    return 1 if any(r.verdict == "FAIL" for r in bench.report.rows) else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return uvloop.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
