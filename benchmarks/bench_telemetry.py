#!/usr/bin/env python3
"""Proxy throughput and CPU per request with telemetry off and on, sampling side by side, in one run.

Self-contained: imports nothing from the project; every server is a subprocess driven over HTTP on
loopback. Cutover instances (same backend, phase legacy) differ only in their `telemetry:` block:

    off          metrics: false, tracing: false
    off-2        the same again: an A/A pair, whose ratio shows this run's noise
    metrics      metrics: true,  tracing: false
    traced       metrics and tracing on, default sampling (trace_sample_rate 0.01), no otlp_endpoint
                 (exporter disabled: sampled requests get their spans, ids and traceparent, nothing is
                 sent) — the configuration the target is about
    traced-10%   the same with trace_sample_rate 0.1
    traced-all   the same with trace_sample_rate 1.0 (every request recorded)
    traced-export      default sampling, spans exported over OTLP/HTTP to a stand-in collector (nginx
                 answering 200), so the exporter's encoding and sending are counted too
    traced-export-10%  the same with trace_sample_rate 0.1

Rounds interleave the targets, each round starting with the next one, because the CPU speed of these
VMs drifts over minutes and other work shares them; the ratio of medians is checked against the target
(traced / off >= 0.90 in req/s, <= 1/0.90 in proxy CPU per request), and each round's ratio to the
`off` run of the same round is listed. After the rounds, each instrumented instance's `GET /metrics` is
scraped and its request count compared with what wrk sent, so a run where telemetry silently recorded
nothing cannot pass; the collector's access log shows whether spans were exported.

    .venv/bin/python benchmarks/bench_telemetry.py --write BENCHMARKS.md       # 10 rounds of 4 s
    .venv/bin/python benchmarks/bench_telemetry.py --duration 3 --rounds 3

Pinning (2+ cores): the proxies on CPU0, wrk and nginx on CPU1. Needs nginx, wrk, psql, PostgreSQL, Redis.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from harness import (  # this folder's harness (scripts run from here)
    Processes,
    WrkResult,
    cpu_seconds,
    free_port,
    load_average,
    log,
    parse_wrk,
    write_section,
)

REPO = Path(__file__).resolve().parent.parent
CUTOVER = REPO / ".venv" / "bin" / "cutover"
MARK_START = "<!-- bench_telemetry:start -->"
MARK_END = "<!-- bench_telemetry:end -->"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
WRK = shutil.which("wrk") or "/usr/bin/wrk"
PATH = "/v1/orders/42?include=items"
TENANT = "bench-tenant"
BODY = '{"id":42,"tenant":"bench-tenant","status":"shipped","items":[{"sku":"SKU-1","qty":2}]}'
TOKEN = "bench-metrics-token-" + secrets.token_hex(8)
TARGET_RATIO = 0.90

_ON = ["  metrics: true", "  tracing: true", f"  tenant_labels: [{TENANT}]"]
# {collector} is the stand-in collector's port; spans are sent every second.
_EXPORT = [*_ON, '  otlp_endpoint: "http://127.0.0.1:{collector}"', "  otlp_export_delay_ms: 1000"]
TELEMETRY = {
    "off": ["  metrics: false", "  tracing: false"],
    "off-2": ["  metrics: false", "  tracing: false"],
    "metrics": ["  metrics: true", "  tracing: false", f"  tenant_labels: [{TENANT}]"],
    "traced": _ON,
    "traced-10%": [*_ON, "  trace_sample_rate: 0.1"],
    "traced-all": [*_ON, "  trace_sample_rate: 1.0"],
    "traced-export": _EXPORT,
    "traced-export-10%": [*_EXPORT, "  trace_sample_rate: 0.1"],
}
INSTRUMENTED = [name for name, lines in TELEMETRY.items() if "  metrics: true" in lines]


def http_get(url: str, headers: dict[str, str] | None = None, timeout: float = 3.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=timeout) as r:
            return int(r.status), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def run_wrk(url: str, connections: int, duration: int, pin: bool) -> WrkResult:
    argv = [
        WRK,
        "-t1",
        f"-c{connections}",
        f"-d{duration}s",
        "--latency",
        "-H",
        f"X-Tenant-ID: {TENANT}",
        url,
    ]
    argv = ["taskset", "-c", "1", *argv] if pin else argv
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30, check=True).stdout
    return parse_wrk(out)


@dataclass
class Target:
    name: str
    url: str = ""
    admin: str = ""
    proc: subprocess.Popen[bytes] | None = None
    runs: list[WrkResult] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)  # proxy CPU time per request, per run
    sent: int = 0  # every request wrk sent, warm-up included

    def median(self, attr: str) -> float:
        return float(statistics.median(getattr(run, attr) for run in self.runs))


class Harness:
    def __init__(self, workdir: Path, pin: bool) -> None:
        self.workdir = workdir
        self.pin = pin
        self.procs = Processes()
        self.run_id = secrets.token_hex(4)
        self.databases: list[str] = []

    def start(self, name: str, argv: list[str], cpu: str) -> subprocess.Popen[bytes]:
        log_path = self.workdir / f"{name}.log"
        return self.procs.start(name, argv, log_path=log_path, cpu=cpu if self.pin else None)

    def psql(self, sql: str) -> None:
        subprocess.run(
            ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-qc", sql],
            check=True,
            capture_output=True,
            timeout=30,
        )

    def nginx(self, name: str, *, collector: bool = False) -> int:
        """A backend returning BODY, or (`collector`) an OTLP stand-in answering 200 to every export and
        logging each one."""
        prefix = self.workdir / name
        prefix.mkdir()
        port = free_port()
        if collector:
            # nginx reads and drops the request body of a `return`.
            server = f"access_log {prefix}/access.log; location / {{ return 200; }}"
        else:
            server = f"default_type application/json; location / {{ return 200 '{BODY}'; }}"
        (prefix / "nginx.conf").write_text(
            f"""daemon off; worker_processes 1; pid {prefix}/nginx.pid; error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{ access_log off; client_body_temp_path {prefix}/b; proxy_temp_path {prefix}/p;
  fastcgi_temp_path {prefix}/f; uwsgi_temp_path {prefix}/u; scgi_temp_path {prefix}/s;
  keepalive_requests 100000000; keepalive_timeout 120s; client_max_body_size 64m;
  server {{ listen 127.0.0.1:{port}; {server} }}
}}
"""
        )
        self.start(name, [NGINX, "-p", str(prefix), "-c", str(prefix / "nginx.conf")], "1")
        self.wait(f"http://127.0.0.1:{port}/", None)
        return port

    def cutover(self, target: Target, old_port: int, new_port: int, collector_port: int) -> None:
        slug = re.sub(r"[^a-z0-9]+", "_", target.name)
        database = f"cutover_bench_tel_{self.run_id}_{slug}"
        self.psql(f'CREATE DATABASE "{database}"')
        self.databases.append(database)
        port, admin = free_port(), free_port()
        config = self.workdir / f"{slug}.yaml"
        config.write_text(
            "\n".join(
                [
                    f'listen: "127.0.0.1:{port}"',
                    "admin:",
                    f'  listen: "127.0.0.1:{admin}"',
                    f"  tokens: {{bench: {{token: {TOKEN}, scope: read}}}}",
                    "backends:",
                    f'  old: {{url: "http://127.0.0.1:{old_port}"}}',
                    f'  new: {{url: "http://127.0.0.1:{new_port}"}}',
                    "default_phase: legacy",
                    f'postgres_url: "postgresql://postgres@127.0.0.1:5432/{database}"',
                    f'buffer: {{key_prefix: "cutover-bench-tel-{self.run_id}-{slug}"}}',
                    "log_level: warning",
                    "telemetry:",
                    *(line.format(collector=collector_port) for line in TELEMETRY[target.name]),
                    "",
                ]
            )
        )
        target.proc = self.start(slug, [str(CUTOVER), "serve", "--config", str(config)], "0")
        target.url = f"http://127.0.0.1:{port}{PATH}"
        target.admin = f"http://127.0.0.1:{admin}"
        self.wait(f"{target.admin}/readyz", target.proc)

    def wait(self, url: str, proc: subprocess.Popen[bytes] | None, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{url}: server exited with {proc.returncode}")
            with contextlib.suppress(OSError):
                if http_get(url, timeout=1)[0] == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{url} not ready within {timeout_s:.0f} s")

    def stop_all(self) -> None:
        self.procs.stop_all()
        for database in self.databases:
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                self.psql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def scraped_requests(target: Target) -> float | None:
    status, body = http_get(f"{target.admin}/metrics", {"Authorization": f"Bearer {TOKEN}"})
    if status != 200:
        return None
    pattern = re.compile(r'^cutover_requests_total\{[^}]*tenant="' + TENANT + r'"[^}]*\} ([\d.e+]+)$', re.M)
    return sum(float(m.group(1)) for m in pattern.finditer(body.decode()))


LOADS: list[str] = []


def render(args: argparse.Namespace, targets: dict[str, Target], pin: bool, checks: list[str]) -> str:
    off = targets["off"]
    lines = [
        MARK_START,
        "## Telemetry overhead (`benchmarks/bench_telemetry.py`)",
        "",
        f"- Command: `.venv/bin/python benchmarks/bench_telemetry.py --duration {args.duration} "
        f"--rounds {args.rounds} --connections {args.connections}`",
        f"- Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; machine: {os.cpu_count()} vCPU, "
        f"{platform.platform()}, Python {platform.python_version()} (the project venv)",
        "- The machine was shared with other work while measuring (1-min load average "
        f"{LOADS[0]} at start, {LOADS[-1]} at end on {os.cpu_count()} CPUs); ratios come from one run, "
        "targets interleaved per round with a rotating start. `off-2` is a second, identical `off`: "
        "its ratio to `off` is this run's noise.",
        f"- Pinning: {'proxies on CPU0, wrk and nginx on CPU1' if pin else 'none'}; backend nginx returning "
        f"{len(BODY)} bytes; phase legacy; `wrk -t1 -c{args.connections} -d{args.duration}s`",
        "- Ratios: of medians over the rounds; in brackets the lowest and highest ratio of one round's run "
        "to the `off` run of the same round.",
        "",
        "| target | telemetry | req/s (median) | p50 ms | p99 ms | req/s vs off [per round] "
        "| proxy CPU µs/request (median) | CPU vs off [per round] |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, target in targets.items():
        config = ", ".join(
            line.strip().replace('"', "") for line in TELEMETRY[name] if "tenant_labels" not in line
        ).replace("http://127.0.0.1:{collector}", "stand-in collector")
        rps, cpu = target.median("rps"), statistics.median(target.cpu_us)
        rps_rounds = [run.rps / base.rps for run, base in zip(target.runs, off.runs, strict=True)]
        cpu_rounds = [mine / base for mine, base in zip(target.cpu_us, off.cpu_us, strict=True)]
        lines.append(
            f"| {name} | {config} | {rps:,.0f} | {target.median('p50_ms'):.3f} "
            f"| {target.median('p99_ms'):.3f} "
            f"| {rps / off.median('rps'):.3f} [{min(rps_rounds):.2f}–{max(rps_rounds):.2f}] "
            f"| {cpu:.1f} "
            f"| {cpu / statistics.median(off.cpu_us):.3f} [{min(cpu_rounds):.2f}–{max(cpu_rounds):.2f}] |"
        )
    lines += ["", "| check | value | target | result |", "|---|---|---|---|", *checks, "", MARK_END]
    return "\n".join(lines) + "\n"


def exports_received(log: Path) -> int:
    """OTLP export requests the stand-in collector answered 200 (one access-log line each)."""
    try:
        lines = log.read_text().splitlines()
    except OSError:
        return 0
    return sum(1 for line in lines if '"POST /v1/traces ' in line and '" 200 ' in line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=4, help="seconds per wrk run (default 4)")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds (default 10)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--write", type=Path, help="write/replace the Markdown section in this file")
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a check fails")
    args = parser.parse_args(argv)
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
    workdir = Path(tempfile.mkdtemp(prefix="bench_telemetry_"))
    harness = Harness(workdir, pin)
    targets = {name: Target(name) for name in TELEMETRY}
    LOADS.append(load_average())
    try:
        old_port, new_port = harness.nginx("nginx-old"), harness.nginx("nginx-new")
        collector_port = harness.nginx("collector", collector=True)
        for target in targets.values():
            harness.cutover(target, old_port, new_port, collector_port)
            status, body = http_get(target.url, {"X-Tenant-ID": TENANT})
            if status != 200 or body.decode() != BODY:
                raise RuntimeError(f"{target.name}: probe answered {status} {body[:80]!r}")
            target.sent += 1
            warm = run_wrk(target.url, args.connections, 2, pin)
            target.sent += warm.requests
            log(f"{target.name} warm-up: {warm.rps:,.0f} req/s")
        names = list(targets)
        for round_number in range(1, args.rounds + 1):
            # Each round starts with a different target, so no target always runs right after another.
            shift = (round_number - 1) % len(names)
            for target in (targets[name] for name in names[shift:] + names[:shift]):
                assert target.proc is not None
                cpu_before = cpu_seconds(target.proc.pid, children=True) or 0.0
                run = run_wrk(target.url, args.connections, args.duration, pin)
                target.cpu_us.append(
                    ((cpu_seconds(target.proc.pid, children=True) or 0.0) - cpu_before)
                    / max(1, run.requests)
                    * 1e6
                )
                target.runs.append(run)
                target.sent += run.requests
                log(
                    f"round {round_number} {target.name:<13} {run.rps:>8,.0f} req/s p50 {run.p50_ms:.3f} ms "
                    f"CPU {target.cpu_us[-1]:.1f} µs/req"
                )
        counted = {name: scraped_requests(targets[name]) for name in INSTRUMENTED}
        time.sleep(1.5)  # one more export interval, so the last batch has been sent
        exports = exports_received(workdir / "collector" / "access.log")
        LOADS.append(load_average())
    finally:
        harness.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)

    def ratio(name: str) -> float:
        return targets[name].median("rps") / targets["off"].median("rps")

    def cpu_ratio(name: str) -> float:
        return statistics.median(targets[name].cpu_us) / statistics.median(targets["off"].cpu_us)

    traced, cpu = ratio("traced"), cpu_ratio("traced")
    errors = sum(run.errors for target in targets.values() for run in target.runs)
    checks = [
        f"| traced (default sampling, exporter disabled) / off, req/s | {traced:.3f} | >= {TARGET_RATIO:.2f} "
        f"| **{'PASS' if traced >= TARGET_RATIO else 'FAIL'}** |",
        f"| traced / off, proxy CPU per request | {cpu:.3f} | <= {1 / TARGET_RATIO:.3f} (the same 10 % when "
        f"CPU-bound) | **{'PASS' if cpu <= 1 / TARGET_RATIO else 'FAIL'}** |",
        f"| noise: off-2 / off (identical), req/s; CPU per request | {ratio('off-2'):.3f}; "
        f"{cpu_ratio('off-2'):.3f} | (informative) | – |",
    ]
    for name in ("metrics", "traced-10%", "traced-all", "traced-export", "traced-export-10%"):
        checks.append(
            f"| {name} / off, req/s; CPU per request | {ratio(name):.3f}; {cpu_ratio(name):.3f} "
            "| (informative) | – |"
        )
    checks.append(f"| errors (non-2xx + socket) | {errors} | 0 | **{'PASS' if errors == 0 else 'FAIL'}** |")
    checks.append(
        f"| traced-export(-10%): OTLP exports answered by the collector | {exports} | > 0 "
        f"| **{'PASS' if exports > 0 else 'FAIL'}** |"
    )
    for name, count in counted.items():
        sent = targets[name].sent
        # wrk counts completed requests only; those in flight when it stops reached the proxy too.
        slack = args.connections * (args.rounds + 1)
        ok = count is not None and sent <= count <= sent + slack
        checks.append(
            f"| {name}: cutover_requests_total vs requests wrk completed | {count:,.0f} vs {sent:,} "
            f"| equal, up to {slack} in flight more | **{'PASS' if ok else 'FAIL'}** |"
            if count is not None
            else f"| {name}: scrape of /metrics | failed | 200 | **FAIL** |"
        )
    section = render(args, targets, pin, checks)
    print(section)
    if args.write:
        write_section(args.write, section, MARK_START, MARK_END)
        log(f"wrote {args.write}")
    return 1 if args.strict and any("**FAIL**" in check for check in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
