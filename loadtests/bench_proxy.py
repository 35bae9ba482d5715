#!/usr/bin/env python3
"""Benchmark cutover against a direct backend, a minimal forwarder ("floor") and a naive FastAPI proxy.

Self-contained: imports nothing from the project; every server is a subprocess driven over HTTP on
loopback. One run measures all targets interleaved per round (the machine drifts over minutes), reports
the median over rounds, checks the ratios against the project's targets and writes a Markdown section.

    .venv/bin/python loadtests/bench_proxy.py --write BENCHMARKS.md            # full (~8 min)
    .venv/bin/python loadtests/bench_proxy.py --quick                          # smoke (~1 min)
    .venv/bin/python loadtests/bench_proxy.py --quick --only direct,floor,naive

Pinning (2+ cores): the server under test runs on CPU0 (`taskset -c 0`), wrk and the nginx backends on
CPU1 (`taskset -c 1`). Needs nginx, wrk, taskset, psql, and PostgreSQL/Redis for the cutover targets.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
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
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
REFS = HERE / "refs"
VENV_BIN = REPO / ".venv" / "bin"
CUTOVER = VENV_BIN / "cutover"
MARK_START = "<!-- bench_proxy:start -->"
MARK_END = "<!-- bench_proxy:end -->"

REQUEST_PATH = "/v1/orders/42?include=items&limit=10"
TENANT_HEADER = ("X-Tenant-ID", "bench-tenant")
BODY_SIZE = 313
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
WRK = shutil.which("wrk") or "/usr/bin/wrk"
READY_TIMEOUT_S = 20.0
WARMUP_S = 2
MEMORY_SAMPLE_EVERY_S = 5.0

CheckFn = Callable[[], tuple[str, bool | None]]


def _shown(path: str) -> str:
    """A path relative to the repository when inside it: the figures do not carry a checkout's location."""
    try:
        return str(Path(os.path.abspath(path)).relative_to(REPO))
    except ValueError:
        return path


def log(message: str) -> None:
    stamp = dt.datetime.now().strftime("%H:%M:%S")
    print(f"[{stamp}] {message}", file=sys.stderr, flush=True)


def venv_python() -> str:
    candidate = VENV_BIN / "python"
    return str(candidate) if candidate.exists() else sys.executable


def make_body(size: int = BODY_SIZE) -> bytes:
    """A deterministic JSON document of exactly `size` bytes (no quotes, `$` or `\\` for nginx)."""
    doc: dict[str, object] = {
        "id": 42,
        "tenant": "bench-tenant",
        "status": "shipped",
        "currency": "EUR",
        "total_cents": 129900,
        "items": [
            {"sku": "SKU-1001", "qty": 2, "price_cents": 49950},
            {"sku": "SKU-2002", "qty": 1, "price_cents": 30000},
        ],
        "created_at": "2024-05-01T12:00:00Z",
        "updated_at": "2024-05-02T08:30:00Z",
        "pad": "",
    }
    raw = json.dumps(doc, separators=(",", ":"))
    doc["pad"] = "x" * max(0, size - len(raw))
    body = json.dumps(doc, separators=(",", ":")).encode()
    assert len(body) == size, len(body)
    return body


BODY = make_body()


# --------------------------------------------------------------------------- processes


class Processes:
    """Every server this script starts, each in its own process group, all stopped in `stop_all`."""

    def __init__(self) -> None:
        self._procs: list[tuple[str, subprocess.Popen[bytes], IO[bytes]]] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        cwd: Path,
        log_path: Path,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        log(f"start {name}: {shlex.join(argv)}")
        out = log_path.open("wb")
        try:
            proc = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError:
            out.close()
            raise
        self._procs.append((name, proc, out))
        return proc

    @staticmethod
    def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 8.0) -> None:
        if proc.poll() is None:
            self._signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(proc, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)
        # Children (workers) may outlive the group leader: make sure nothing of the group is left.
        self._signal_group(proc, signal.SIGKILL)

    def stop_all(self) -> None:
        for name, proc, out in reversed(self._procs):
            try:
                self.stop(proc)
            except Exception as exc:  # keep stopping the others
                log(f"could not stop {name} (pid {proc.pid}): {exc}")
            finally:
                out.close()
        self._procs.clear()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http_get(url: str, *, headers: dict[str, str] | None = None, timeout: float = 2.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            status: int = resp.status
            return status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class TargetFailed(Exception):
    pass


def wait_http_200(
    url: str,
    proc: subprocess.Popen[bytes],
    log_path: Path,
    timeout: float,
    headers: dict[str, str] | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise TargetFailed(f"exited with code {proc.returncode} before ready:\n{tail(log_path)}")
        try:
            status, _ = http_get(url, headers=headers, timeout=1.0)
            if status == 200:
                return
            last = f"HTTP {status}"
        except (OSError, urllib.error.URLError) as exc:
            last = str(exc)
        time.sleep(0.1)
    raise TargetFailed(f"not ready after {timeout:.0f}s at {url} ({last}):\n{tail(log_path)}")


def rss_kib_tree(root_pid: int) -> int:
    """VmRSS of `root_pid` plus all its descendants (workers), in KiB."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [root_pid]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    break
        except OSError:
            continue
    return total


# --------------------------------------------------------------------------- wrk


@dataclass(frozen=True)
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def parse_wrk(output: str) -> WrkResult:
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    pct: dict[str, float] = {}
    for m in re.finditer(r"^\s+(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", output, re.M):
        pct[m.group(1)] = float(m.group(2)) * _UNITS_MS[m.group(3)]
    if rps is None or "50" not in pct or "99" not in pct:
        raise ValueError(f"cannot parse wrk output:\n{output}")
    reqs = re.search(r"^\s*(\d+) requests in", output, re.M)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return WrkResult(
        rps=float(rps.group(1)),
        p50_ms=pct["50"],
        p99_ms=pct["99"],
        requests=int(reqs.group(1)) if reqs else 0,
        non_2xx=int(non2xx.group(1)) if non2xx else 0,
        socket_errors=sum(int(g) for g in sock.groups()) if sock else 0,
    )


class Bench:
    def __init__(self, args: argparse.Namespace, pin: bool) -> None:
        self.args = args
        self.pin = pin

    def wrk_argv(self, url: str, connections: int, duration: int) -> list[str]:
        argv = [
            WRK,
            "-t1",
            f"-c{connections}",
            f"-d{duration}s",
            "--latency",
            "--timeout",
            "5s",
            "-H",
            f"{TENANT_HEADER[0]}: {TENANT_HEADER[1]}",
            url,
        ]
        return ["taskset", "-c", "1", *argv] if self.pin else argv

    def run_wrk(self, url: str, connections: int, duration: int) -> WrkResult:
        argv = self.wrk_argv(url, connections, duration)
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30, check=False)
        if proc.returncode != 0:
            raise TargetFailed(f"wrk exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
        return parse_wrk(proc.stdout)


# --------------------------------------------------------------------------- targets


@dataclass
class Target:
    name: str
    pinned: bool
    note: str = ""
    url: str = ""
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    error: str | None = None
    c32: list[WrkResult] = field(default_factory=list)
    c1: list[WrkResult] = field(default_factory=list)
    new_side: list[float] = field(default_factory=list)  # requests seen by the "new" nginx / requests served

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.c32) and bool(self.c1)

    def fail(self, reason: str) -> None:
        if self.error is None:
            self.error = reason
        log(f"target {self.name} FAILED: {reason}")

    def med(self, attr: str, conns: str) -> float:
        results = self.c32 if conns == "c32" else self.c1
        value: float = statistics.median(getattr(r, attr) for r in results)
        return value

    def errors(self) -> int:
        return sum(r.non_2xx + r.socket_errors for r in (*self.c32, *self.c1))


def nginx_requests(port: int) -> int | None:
    """Total requests an nginx backend has handled (stub_status), to see what reached the "new" side."""
    try:
        _, body = http_get(f"http://127.0.0.1:{port}/__bench_status", timeout=2.0)
        return int(body.decode().splitlines()[2].split()[2])
    except (OSError, ValueError, IndexError):
        return None


def nginx_conf(prefix: Path, port: int) -> str:
    body = BODY.decode()
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
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        default_type application/json;
        location / {{ return 200 '{body}'; }}
        location = /__bench_status {{ stub_status; }}
    }}
}}
"""


class Harness:
    def __init__(self, args: argparse.Namespace, workdir: Path, pin: bool) -> None:
        self.args = args
        self.workdir = workdir
        self.pin = pin
        self.procs = Processes()
        self.bench = Bench(args, pin)
        self.run_id = secrets.token_hex(4)
        self.databases: list[str] = []
        self.redis_prefixes: list[str] = []
        self.backend_ports: list[int] = []
        self.notes: list[str] = []

    # -- helpers
    def _server_argv(self, argv: list[str], pinned: bool) -> list[str]:
        return ["taskset", "-c", "0", *argv] if (self.pin and pinned) else argv

    def _backend_argv(self, argv: list[str]) -> list[str]:
        return ["taskset", "-c", "1", *argv] if self.pin else argv

    def start_nginx(self, name: str) -> int:
        prefix = self.workdir / name
        prefix.mkdir()
        port = free_port()
        conf = prefix / "nginx.conf"
        conf.write_text(nginx_conf(prefix, port))
        argv = self._backend_argv(
            [NGINX, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
        )
        log_path = prefix / "stdout.log"
        proc = self.procs.start(name, argv, cwd=prefix, log_path=log_path)
        url = f"http://127.0.0.1:{port}/"
        try:
            wait_http_200(url, proc, log_path, timeout=10.0)
        except TargetFailed as exc:
            raise SystemExit(f"backend {name} did not start: {exc}\n{tail(prefix / 'error.log')}") from exc
        status, body = http_get(url + REQUEST_PATH.lstrip("/"))
        if status != 200 or body != BODY:
            raise SystemExit(f"backend {name} serves the wrong body: {status} {body[:80]!r}")
        self.backend_ports.append(port)
        return port

    def psql(self, sql: str) -> None:
        argv = [
            "psql",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-qc",
            sql,
        ]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"psql failed: {sql}: {proc.stderr.strip()}")

    def create_database(self, suffix: str) -> str:
        name = f"cutover_bench_{self.run_id}_{suffix}"
        self.psql(f'CREATE DATABASE "{name}"')
        self.databases.append(name)
        return name

    def cleanup_external(self) -> None:
        for name in self.databases:
            try:
                self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
                log(f"could not drop database {name}: {exc}")
        redis_cli = shutil.which("redis-cli")
        for prefix in self.redis_prefixes:
            if redis_cli is None:
                break
            try:
                scan = subprocess.run(
                    [redis_cli, "-h", "127.0.0.1", "-p", "6379", "--scan", "--pattern", f"{prefix}*"],
                    capture_output=True,
                    text=True,
                    timeout=15,
                    check=False,
                )
                keys = [k for k in scan.stdout.split() if k.startswith(prefix)]
                for i in range(0, len(keys), 500):
                    subprocess.run(
                        [redis_cli, "-h", "127.0.0.1", "-p", "6379", "DEL", *keys[i : i + 500]],
                        capture_output=True,
                        timeout=15,
                        check=False,
                    )
            except (OSError, subprocess.TimeoutExpired) as exc:
                log(f"could not clean redis keys {prefix}*: {exc}")

    # -- targets
    def setup_direct(self, target: Target, old_port: int) -> None:
        target.url = f"http://127.0.0.1:{old_port}{REQUEST_PATH}"

    def setup_ref(self, target: Target, module: str, old_port: int) -> None:
        port = free_port()
        inst = self.workdir / target.name
        inst.mkdir()
        argv = self._server_argv(
            [
                venv_python(),
                "-m",
                "uvicorn",
                f"{module}:app",
                "--app-dir",
                str(REFS),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--loop",
                "uvloop",
                "--http",
                "httptools",
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            target.pinned,
        )
        env = {**os.environ, "BENCH_BACKEND": f"http://127.0.0.1:{old_port}"}
        env.pop("PYTHONPATH", None)
        target.log_path = inst / "server.log"
        target.proc = self.procs.start(target.name, argv, cwd=inst, log_path=target.log_path, env=env)
        target.url = f"http://127.0.0.1:{port}{REQUEST_PATH}"
        wait_http_200(target.url, target.proc, target.log_path, READY_TIMEOUT_S, dict([TENANT_HEADER]))

    def setup_cutover(self, target: Target, phase: str, old_port: int, new_port: int, workers: int) -> None:
        if not CUTOVER.exists():
            raise TargetFailed(f"console script {CUTOVER} not found (is the project installed?)")
        inst = self.workdir / target.name
        inst.mkdir()
        port, admin_port = free_port(), free_port()
        suffix = re.sub(r"[^a-z0-9]", "_", target.name.removeprefix("cutover-"))
        try:
            db = self.create_database(suffix)
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            raise TargetFailed(f"cannot create database: {exc}") from exc
        key_prefix = f"cutover-bench-{self.run_id}-{suffix}"
        self.redis_prefixes.append(key_prefix)
        config = inst / "cutover.yaml"
        config.write_text(
            "\n".join(
                [
                    f'listen: "127.0.0.1:{port}"',
                    "admin:",
                    f'  listen: "127.0.0.1:{admin_port}"',
                    "backends:",
                    "  old:",
                    f'    url: "http://127.0.0.1:{old_port}"',
                    "  new:",
                    f'    url: "http://127.0.0.1:{new_port}"',
                    f"default_phase: {phase}",
                    f'postgres_url: "postgresql://postgres@127.0.0.1:5432/{db}"',
                    'redis_url: "redis://127.0.0.1:6379/0"',
                    "buffer:",
                    f'  key_prefix: "{key_prefix}"',
                    "shadow:",
                    "  sample_rate: 1.0",
                    "log_level: warning",
                    "",
                ]
            )
        )
        argv = [str(CUTOVER), "serve", "--config", str(config)]
        if workers > 1:
            argv += ["--workers", str(workers)]
        argv = self._server_argv(argv, target.pinned)
        target.log_path = inst / "server.log"
        env = {**os.environ}
        env.pop("PYTHONPATH", None)
        target.proc = self.procs.start(target.name, argv, cwd=inst, log_path=target.log_path, env=env)
        wait_http_200(f"http://127.0.0.1:{admin_port}/readyz", target.proc, target.log_path, READY_TIMEOUT_S)
        target.url = f"http://127.0.0.1:{port}{REQUEST_PATH}"

    def verify_and_warm(self, target: Target) -> None:
        status, body = http_get(target.url, headers=dict([TENANT_HEADER]), timeout=5.0)
        if status != 200 or body != BODY:
            raise TargetFailed(
                f"probe GET {target.url}: HTTP {status}, body {body[:120]!r} (expected the backend's)"
            )
        warm = self.bench.run_wrk(target.url, self.args.connections, WARMUP_S)
        log(f"  {target.name} warm-up: {warm.rps:,.0f} req/s, errors {warm.non_2xx + warm.socket_errors}")


# --------------------------------------------------------------------------- report


def fmt_ms(value: float) -> str:
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def sh(argv: Sequence[str], timeout: float = 10.0) -> str:
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
        return (proc.stdout + proc.stderr).strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc})"


def environment(pin: bool, args: argparse.Namespace) -> list[str]:
    cpu_model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    py = venv_python()
    versions = sh(
        [
            py,
            "-c",
            "import importlib.metadata as m, platform, sys\n"
            "print(sys.executable, platform.python_version())\n"
            "for n in ('aiohttp', 'httpx', 'uvicorn', 'fastapi', 'uvloop', 'httptools'):\n"
            "    try: print(n, m.version(n))\n"
            "    except Exception: print(n, 'missing')",
        ]
    ).splitlines()
    executable, _, python_version = versions[0].rpartition(" ") if versions else (str(py), "", "")
    interp = f"{_shown(executable)} {python_version}".strip()
    libs = ", ".join(versions[1:])
    nginx_v = sh([NGINX, "-v"]).replace("nginx version: ", "")
    wrk_out = sh([WRK, "-v"])
    wrk_v = wrk_out.splitlines()[0].split(" [")[0] if wrk_out else "unknown"
    argv = list(getattr(sys, "orig_argv", [sys.executable, *sys.argv]))
    command = shlex.join([_shown(argv[0]), *argv[1:]])
    pinning = (
        "server under test on CPU0 (`taskset -c 0`); wrk and the nginx backends on CPU1 (`taskset -c 1`)"
        if pin
        else "none (fewer than 2 CPUs, taskset missing, or --no-pin)"
    )
    if pin and args.workers > 1:
        pinning += f"; `cutover-legacy-w{args.workers}` is NOT pinned (its workers may use both CPUs)"
    return [
        f"- Command: `{command}`" + ("" if Path.cwd() == REPO else f" (cwd `{_shown(os.getcwd())}`)"),
        f"- Date (UTC): {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M:%S')}",
        f"- Machine: nproc={os.cpu_count()} ({sh(['nproc'])} usable), {cpu_model}, "
        f"kernel {os.uname().release}",
        f"- Python: {interp}",
        f"- Versions: {nginx_v}, {wrk_v}, {libs}",
        f"- Pinning: {pinning}",
        f"- Load: `wrk -t1 -c{args.connections} -d{args.duration}s --latency` and the same with `-c1`, "
        f"{args.rounds} round(s) interleaved over the targets, median over rounds; "
        f"`GET {REQUEST_PATH}` with `{TENANT_HEADER[0]}: {TENANT_HEADER[1]}`; "
        f"backend: nginx (1 worker) returning a {len(BODY)}-byte JSON body; "
        f"{WARMUP_S}s wrk warm-up per target",
    ]


def check_rows(
    targets: dict[str, Target], mem: tuple[str, bool | None] | None, conns: int
) -> list[tuple[str, str, str, str]]:
    """(check, measured value, target, PASS/FAIL/SKIPPED). A check on a target with errors fails."""
    rows: list[tuple[str, str, str, str]] = []

    def add(
        label: str, goal: str, a_name: str, b_name: str, metric: str, conn: str, kind: str, limit: float
    ) -> None:
        a, b = targets.get(a_name), targets.get(b_name)
        if a is None or b is None:  # not selected with --only
            rows.append((label, "not run (--only)", goal, "SKIPPED"))
            return
        missing = [n for n, t in ((a_name, a), (b_name, b)) if t is None or not t.ok]
        if missing:
            rows.append(
                (label, "n/a (" + ", ".join(f"{n} not measured" for n in missing) + ")", goal, "FAIL")
            )
            return
        va, vb = a.med(metric, conn), b.med(metric, conn)
        if kind == "ratio_min":  # va / vb >= limit
            value, ok = f"{va / vb:.3f}", va >= limit * vb
        elif kind == "added_max":  # va - vb <= limit (ms)
            value, ok = f"{va - vb:+.3f} ms ({va:.3f} vs {vb:.3f})", va - vb <= limit
        else:  # "pct_max": va vs vb within +limit %
            value, ok = f"{(va / vb - 1) * 100:+.1f}% ({va:.3f} vs {vb:.3f} ms)", va <= vb * (1 + limit / 100)
        dirty = [t.name for t in (a, b) if t.errors()]
        if dirty:
            value += f" (errors in {', '.join(dirty)})"
        rows.append((label, value, goal, "PASS" if ok and not dirty else "FAIL"))

    add(
        f"cutover-legacy / floor, req/s @{conns}",
        ">= 0.90",
        "cutover-legacy",
        "floor",
        "rps",
        "c32",
        "ratio_min",
        0.9,
    )
    add(
        f"cutover-legacy / naive, req/s @{conns}",
        ">= 10",
        "cutover-legacy",
        "naive",
        "rps",
        "c32",
        "ratio_min",
        10,
    )
    add(
        "added p50 over direct @1 conn",
        "<= 1 ms",
        "cutover-legacy",
        "direct",
        "p50_ms",
        "c1",
        "added_max",
        1.0,
    )
    add(
        "added p99 over direct @1 conn",
        "<= 3 ms",
        "cutover-legacy",
        "direct",
        "p99_ms",
        "c1",
        "added_max",
        3.0,
    )
    add(
        f"cutover-shadow / cutover-legacy, req/s @{conns}",
        ">= 0.60",
        "cutover-shadow",
        "cutover-legacy",
        "rps",
        "c32",
        "ratio_min",
        0.6,
    )
    add(
        "cutover-shadow p50 vs cutover-legacy p50 @1 conn",
        "within 10%",
        "cutover-shadow",
        "cutover-legacy",
        "p50_ms",
        "c1",
        "pct_max",
        10.0,
    )
    if mem is not None:
        value, ok = mem
        verdict = "SKIPPED" if ok is None else ("PASS" if ok else "FAIL")
        rows.append(("cutover-legacy RSS under load", value, "flat, within ±10%", verdict))
    return rows


def render(
    header: list[str],
    targets: list[Target],
    checks: list[tuple[str, str, str, str]],
    memory_lines: list[str],
    notes: list[str],
    conns: int,
) -> str:
    out = [MARK_START, "## Proxy benchmark (`loadtests/bench_proxy.py`)", "", *header, ""]
    out += [
        "### Results (median over rounds)",
        "",
        f"| target | req/s @{conns} | p50 @{conns} (ms) | p99 @{conns} (ms) | req/s @1 | p50 @1 (ms) "
        "| p99 @1 (ms) | errors | notes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for t in targets:
        if not t.ok:
            reason = (t.error or "not measured").splitlines()[0][:200]
            out.append(f"| {t.name} | – | – | – | – | – | – | – | FAILED: {reason} |")
            continue
        out.append(
            f"| {t.name} | {t.med('rps', 'c32'):,.0f} | {fmt_ms(t.med('p50_ms', 'c32'))} "
            f"| {fmt_ms(t.med('p99_ms', 'c32'))} | {t.med('rps', 'c1'):,.0f} "
            f"| {fmt_ms(t.med('p50_ms', 'c1'))} "
            f"| {fmt_ms(t.med('p99_ms', 'c1'))} | {t.errors()} | {t.note} |"
        )
    out += ["", f"Per-round req/s @{conns} (drift check):", ""]
    for t in targets:
        if t.c32:
            out.append(f"- {t.name}: " + ", ".join(f"{r.rps:,.0f}" for r in t.c32))
    out += ["", "### Targets", "", "| check | value | target | result |", "|---|---|---|---|"]
    out += [f"| {a} | {b} | {c} | **{d}** |" for a, b, c, d in checks]
    if memory_lines:
        out += ["", "### Memory", "", *memory_lines]
    if notes:
        out += ["", "### Notes", "", *[f"- {n}" for n in notes]]
    out += ["", MARK_END]
    return "\n".join(out) + "\n"


def write_section(path: Path, section: str) -> None:
    text = path.read_text() if path.exists() else ""
    start, end = text.find(MARK_START), text.find(MARK_END)
    if start != -1 and end != -1 and end > start:
        text = text[:start] + section.rstrip("\n") + text[end + len(MARK_END) :]
    else:
        text = (text.rstrip("\n") + "\n\n" if text.strip() else "") + section
    path.write_text(text if text.endswith("\n") else text + "\n")


# --------------------------------------------------------------------------- main


def memory_run(
    bench: Bench, target: Target, seconds: int, conns: int
) -> tuple[list[str], tuple[str, bool | None]]:
    assert target.proc is not None
    pid = target.proc.pid
    log(f"memory run: {target.name} for {seconds}s at {conns} connections, sampling RSS every 5s")
    argv = bench.wrk_argv(target.url, conns, seconds)
    samples: list[tuple[float, int]] = []
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as wrk:
        try:
            t0 = time.monotonic()
            before = rss_kib_tree(pid)
            next_at = MEMORY_SAMPLE_EVERY_S
            while next_at <= seconds + 0.01:
                time.sleep(max(0.0, t0 + next_at - time.monotonic()))
                if target.proc.poll() is not None:
                    raise TargetFailed(f"proxy exited during memory run (code {target.proc.returncode})")
                samples.append((next_at, rss_kib_tree(pid)))
                next_at += MEMORY_SAMPLE_EVERY_S
            stdout, _ = wrk.communicate(timeout=30)
        except BaseException:
            wrk.kill()
            wrk.wait(timeout=5)
            raise
    result = parse_wrk(stdout)
    if len(samples) < 2:
        return ["Memory run too short for 2 samples."], ("too few samples", None)
    # The first sample is taken 5 s into the load (the instance was already warmed up by the rounds).
    first, last = samples[0][1], samples[-1][1]
    dev = max(abs(kib - first) for _, kib in samples) / first * 100
    ok = dev <= 10.0
    lines = [
        f"`{target.name}`, {seconds}s at {conns} connections ({result.rps:,.0f} req/s, "
        f"{result.non_2xx + result.socket_errors} errors); RSS of the process tree (VmRSS) every "
        f"{MEMORY_SAMPLE_EVERY_S:.0f}s. Before load: {before / 1024:.1f} MiB.",
        "",
        f"- first after warm-up (t={samples[0][0]:.0f}s): {first / 1024:.1f} MiB; "
        f"last (t={samples[-1][0]:.0f}s): "
        f"{last / 1024:.1f} MiB ({(last - first) / first * 100:+.1f}%); max deviation from first: {dev:.1f}%",
        "- samples (MiB): " + ", ".join(f"{kib / 1024:.1f}" for _, kib in samples),
    ]
    return lines, (f"first {first / 1024:.1f} MiB, last {last / 1024:.1f} MiB, max dev {dev:.1f}%", ok)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=int, help="seconds per wrk measurement (default 10; --quick: 3)")
    p.add_argument(
        "--connections", type=int, default=32, help="connections for the throughput run (default 32)"
    )
    p.add_argument("--rounds", type=int, help="interleaved rounds, median reported (default 3; --quick: 1)")
    p.add_argument(
        "--memory-seconds", type=int, help="RSS run of cutover-legacy, 0 skips (default 60; --quick: 0)"
    )
    p.add_argument(
        "--workers", type=int, default=1, help="if > 1, add target cutover-legacy-wN (serve --workers N)"
    )
    p.add_argument("--write", type=Path, help="write/replace the Markdown section in this file")
    p.add_argument("--quick", action="store_true", help="smoke run: 3 s, 1 round, no memory run (flags win)")
    p.add_argument("--only", help="comma-separated subset of targets (e.g. direct,floor,naive)")
    p.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temporary directory (logs, configs)")
    p.add_argument("--strict", action="store_true", help="exit 1 if any target check fails")
    args = p.parse_args(argv)
    defaults = (3, 1, 0) if args.quick else (10, 3, 60)
    for name, value in zip(("duration", "rounds", "memory_seconds"), defaults, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.duration < 1 or args.rounds < 1 or args.connections < 1 or args.workers < 1:
        p.error("--duration, --rounds, --connections and --workers must be >= 1")
    return args


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into an exception so the `finally` blocks stop every server."""

    def handler(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    for tool in (NGINX, WRK):
        if not Path(tool).exists():
            print(f"missing {tool}", file=sys.stderr)
            return 2
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
    names = ["direct", "floor", "naive", "cutover-legacy", "cutover-shadow"]
    if args.workers > 1:
        names.append(f"cutover-legacy-w{args.workers}")
    if args.only:
        wanted = {n.strip() for n in args.only.split(",") if n.strip()}
        unknown = wanted - set(names)
        if unknown:
            print(
                f"unknown targets: {', '.join(sorted(unknown))} (known: {', '.join(names)})", file=sys.stderr
            )
            return 2
        names = [n for n in names if n in wanted]
    targets = [
        Target(
            n,
            pinned=not n.startswith("cutover-legacy-w"),
            note="not pinned (uses both CPUs)" if n.startswith("cutover-legacy-w") and pin else "",
        )
        for n in names
    ]
    targets_by_name = {t.name: t for t in targets}
    header = environment(pin, args)
    workdir = Path(tempfile.mkdtemp(prefix="bench_proxy_"))
    harness = Harness(args, workdir, pin)
    memory_lines: list[str] = []
    mem_check: tuple[str, bool | None] | None = None
    started = time.monotonic()
    try:
        with signals_raise():
            old_port = harness.start_nginx("nginx-old")
            new_port = harness.start_nginx("nginx-new")
            for t in targets:
                log(f"setting up {t.name}")
                try:
                    if t.name == "direct":
                        harness.setup_direct(t, old_port)
                    elif t.name in ("floor", "naive"):
                        harness.setup_ref(t, f"{t.name}_proxy", old_port)
                    elif t.name == "cutover-shadow":
                        harness.setup_cutover(t, "shadow", old_port, new_port, 1)
                    elif t.name == "cutover-legacy":
                        harness.setup_cutover(t, "legacy", old_port, new_port, 1)
                    else:
                        harness.setup_cutover(t, "legacy", old_port, new_port, args.workers)
                    harness.verify_and_warm(t)
                except (TargetFailed, ValueError, OSError, subprocess.TimeoutExpired) as exc:
                    t.fail(str(exc))
                    if t.proc is not None:
                        harness.procs.stop(t.proc)
            for rnd in range(1, args.rounds + 1):
                for t in targets:
                    if t.error is not None:
                        continue
                    try:
                        if t.proc is not None and t.proc.poll() is not None:
                            raise TargetFailed(f"server exited (code {t.proc.returncode})")
                        before = nginx_requests(new_port)
                        r32 = harness.bench.run_wrk(t.url, args.connections, args.duration)
                        if t.name.startswith("cutover"):
                            time.sleep(0.2)  # let in-flight shadow requests land
                            after = nginx_requests(new_port)
                            if before is not None and after is not None:
                                t.new_side.append((after - before - 1) / max(1, r32.requests))
                        r1 = harness.bench.run_wrk(t.url, 1, args.duration)
                    except (TargetFailed, ValueError, OSError, subprocess.TimeoutExpired) as exc:
                        t.fail(f"round {rnd}: {exc}")
                        continue
                    t.c32.append(r32)
                    t.c1.append(r1)
                    log(
                        f"round {rnd}/{args.rounds} {t.name:<18} @{args.connections}: {r32.rps:>9,.0f} req/s "
                        f"p50 {r32.p50_ms:.3f} p99 {r32.p99_ms:.3f} ms | @1: {r1.rps:>7,.0f} req/s "
                        f"p50 {r1.p50_ms:.3f} p99 {r1.p99_ms:.3f} ms | "
                        f"errors {r32.non_2xx + r32.socket_errors}+{r1.non_2xx + r1.socket_errors}"
                    )
            legacy = targets_by_name.get("cutover-legacy")
            if args.memory_seconds > 0 and legacy is not None:
                if legacy.ok:
                    try:
                        memory_lines, mem_check = memory_run(
                            harness.bench, legacy, args.memory_seconds, args.connections
                        )
                    except (TargetFailed, ValueError, OSError, subprocess.TimeoutExpired) as exc:
                        memory_lines, mem_check = [f"Memory run failed: {exc}"], (f"failed: {exc}", False)
                else:
                    mem_check = ("n/a (cutover-legacy not measured)", False)
            elif legacy is not None:
                mem_check = ("skipped (--memory-seconds 0)", None)
    except KeyboardInterrupt:
        log("interrupted; stopping servers")
        return 130
    finally:
        harness.procs.stop_all()
        harness.cleanup_external()
        if args.keep_tmp:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    notes = [f"Total wall time {time.monotonic() - started:.0f}s."]
    for t in targets:
        if t.new_side:
            share = statistics.median(t.new_side) * 100
            t.note = (t.note + "; " if t.note else "") + f"new backend saw {share:.0f}% of requests"
    for t in targets:
        if t.error:
            notes.append(f"{t.name} failed: " + " ".join(t.error.split())[:600])
    checks = check_rows(targets_by_name, mem_check, args.connections)
    section = render(header, targets, checks, memory_lines, notes, args.connections)
    print(section)
    if args.write:
        write_section(args.write, section)
        log(f"wrote section to {args.write}")
    if args.strict and any(c[3] == "FAIL" for c in checks):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
