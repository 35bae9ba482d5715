#!/usr/bin/env python3
"""CPU cost of the data plane's per-request telemetry, piece by piece, in one process without network.

The end-to-end benchmark (`bench_telemetry.py`) measures what the proxy pays as a whole, but on a shared
2-vCPU machine its noise (±3 % and more between identical instances) is as large as the pieces being
compared. This one runs `proxy.dataplane.request_telemetry.RequestTelemetry` exactly as the data plane calls
it (`begin`, `call_backend` around one backend call, `finish`) against a backend stand-in that answers at
once, and reports CPU time per request (`time.process_time`: all threads, so the OTLP exporter's
background thread is counted):

    none            the backend call alone (what the data plane does with telemetry off)
    metrics         metrics on, tracing off, no health history (operator.health.enabled: false)
    health          metrics and the per-tenant health history on, tracing off (the default proxy)
    unsampled       metrics and tracing on, a new trace not sampled (trace_sample_rate 0)
    recorded        metrics and tracing on, every request recorded (server + client span), no exporter
    exported        the same, spans sent over OTLP/HTTP to a stand-in collector (nginx answering 200);
                    the span queue is flushed every 1,000 requests so no span is dropped

    .venv/bin/python benchmarks/micro_telemetry.py --write BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from harness import write_section  # this folder's harness (scripts run from here)

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from config.telemetry import TelemetrySettings  # noqa: E402
from proxy.dataplane.request_outcome import RequestOutcome  # noqa: E402
from proxy.dataplane.request_telemetry import RequestTelemetry  # noqa: E402
from proxy.health.series import SideSeries  # noqa: E402
from telemetry.tracing import build_tracer_provider  # noqa: E402

MARK_START = "<!-- bench_telemetry_micro:start -->"
MARK_END = "<!-- bench_telemetry_micro:end -->"
TENANT = "bench-tenant"
SCOPE: dict[str, Any] = {
    "type": "http",
    "method": "GET",
    "path": "/v1/orders/42",
    "raw_path": b"/v1/orders/42",
    "query_string": b"include=items",
    "scheme": "http",
    "http_version": "1.1",
    "client": ("127.0.0.1", 50000),
    "headers": [(b"host", b"127.0.0.1:8080"), (b"x-tenant-id", TENANT.encode()), (b"accept", b"*/*")],
}
HEADERS = [("accept", "*/*"), ("x-forwarded-for", "127.0.0.1"), ("x-forwarded-proto", "http")]
FLUSH_EVERY = 1000


class Response:
    status = 200


class Backend:
    """What `call_backend` uses of an `Upstream`; its request completes without suspending."""

    name = "old"
    host = "127.0.0.1"
    port = 8081
    display = "http://127.0.0.1:8081"

    async def request(self, method: str, url: str, headers: list[tuple[str, str]], body: bytes) -> Response:
        return Response()


BACKEND = Backend()


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    raise RuntimeError("the backend stand-in suspended")


def bare() -> None:
    run(BACKEND.request("GET", "http://127.0.0.1:8081/v1/orders/42", HEADERS, b""))


def observed(telemetry: RequestTelemetry) -> Callable[[], None]:
    def one() -> None:
        scope = dict(SCOPE)
        exchange = telemetry.begin(scope)
        run(
            telemetry.call_backend(
                BACKEND,  # type: ignore[arg-type]
                "GET",
                "http://127.0.0.1:8081/v1/orders/42",
                "/v1/orders/42",
                list(HEADERS),
                b"",
                exchange,
                "serving",
                None,  # backend times are kept for the access log only
            )
        )
        outcome = RequestOutcome(TENANT, "legacy", "read", "respond", "old", "old", 200)
        telemetry.finish(exchange, outcome)

    return one


def telemetry(
    rate: float, *, tracing: bool, metrics: bool = True, endpoint: str | None = None, health: bool = False
) -> RequestTelemetry:
    settings = TelemetrySettings(
        tracing=tracing,
        metrics=metrics,
        trace_sample_rate=rate,
        tenant_labels=[TENANT],
        otlp_endpoint=endpoint,
        otlp_export_delay_ms=1000,
    )
    series = SideSeries(capacity=512) if health else None
    return RequestTelemetry(settings, build_tracer_provider(settings, component="proxy"), series=series)


def collector(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    for sub in ("b", "p", "f", "u", "s"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    (workdir / "nginx.conf").write_text(
        f"""daemon off; worker_processes 1; pid {workdir}/nginx.pid; error_log {workdir}/error.log warn;
events {{ worker_connections 256; }}
http {{ access_log off; client_body_temp_path {workdir}/b; proxy_temp_path {workdir}/p;
  fastcgi_temp_path {workdir}/f; uwsgi_temp_path {workdir}/u; scgi_temp_path {workdir}/s;
  client_max_body_size 64m; keepalive_timeout 120s;
  server {{ listen 127.0.0.1:{port}; location / {{ return 200; }} }}
}}
"""
    )
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    proc = subprocess.Popen([nginx, "-p", str(workdir), "-c", str(workdir / "nginx.conf")])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return proc, port
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the stand-in collector did not start")


def measure(one: Callable[[], None], requests: int, flush: Callable[[], object] | None) -> float:
    gc.collect()
    started = time.process_time()
    for i in range(requests):
        one()
        if flush is not None and i % FLUSH_EVERY == FLUSH_EVERY - 1:
            flush()
    if flush is not None:
        flush()
    return (time.process_time() - started) / requests * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=10_000, help="requests per measurement")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    parser.add_argument("--write", type=Path, help="write/replace the Markdown section in this file")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="micro_telemetry_"))
    proc, port = collector(workdir)
    try:
        exporting = telemetry(1.0, tracing=True, endpoint=f"http://127.0.0.1:{port}")
        assert exporting.tracer_provider is not None
        variants: dict[str, tuple[Callable[[], None], Callable[[], object] | None]] = {
            "none": (bare, None),
            "metrics": (observed(telemetry(0.0, tracing=False)), None),
            "health": (observed(telemetry(0.0, tracing=False, health=True)), None),
            "unsampled": (observed(telemetry(0.0, tracing=True)), None),
            "recorded": (observed(telemetry(1.0, tracing=True)), None),
            "exported": (observed(exporting), exporting.tracer_provider.force_flush),
        }
        results: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, (one, flush) in variants.items():
                results[name].append(measure(one, args.requests, flush))
        exporting.shutdown()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)

    base = statistics.median(results["none"])
    medians = {name: statistics.median(values) for name, values in results.items()}
    rows = [
        f"| {name} | {medians[name]:.2f} | {min(values):.2f} | {medians[name] - base:.2f} |"
        for name, values in results.items()
    ]
    recorded = medians["recorded"] - medians["unsampled"]
    health = medians["health"] - medians["metrics"]
    exported = medians["exported"] - medians["unsampled"]
    lines = [
        MARK_START,
        "## Telemetry cost per request, piece by piece (`benchmarks/micro_telemetry.py`)",
        "",
        f"- Command: `.venv/bin/python benchmarks/micro_telemetry.py --requests {args.requests} "
        f"--rounds {args.rounds}`",
        f"- Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; machine: {os.cpu_count()} vCPU, "
        f"{platform.platform()}, Python {platform.python_version()} (the project venv); shared with other "
        "work while measuring.",
        "- One process, no network: `RequestTelemetry.begin`, `call_backend` around a backend stand-in that "
        "answers at once, `finish`; CPU time of all threads per request (the OTLP exporter's thread "
        "included). A hot loop: in the proxy, with its caches cold, the same code costs more (compare "
        "the end-to-end section, `bench_telemetry`).",
        "",
        "| variant | CPU µs/request (median) | best round | above `none` |",
        "|---|---:|---:|---:|",
        *rows,
        "",
        f"The per-tenant health history (`health`, on by default) adds {health:.2f} µs to `metrics`.",
        "",
        f"A recorded request (server + client span) adds {recorded:.1f} µs with the exporter disabled and "
        f"{exported:.1f} µs with OTLP/HTTP export; at `trace_sample_rate` r a request pays "
        f"{medians['unsampled'] - base:.1f} µs + r × that. At r = 0.01 / 0.1 / 1.0: "
        + " / ".join(f"{medians['unsampled'] - base + r * recorded:.1f}" for r in (0.01, 0.1, 1.0))
        + " µs without export, "
        + " / ".join(f"{medians['unsampled'] - base + r * exported:.1f}" for r in (0.01, 0.1, 1.0))
        + " µs with it.",
        "",
        MARK_END,
    ]
    section = "\n".join(lines) + "\n"
    print(section)
    if args.write:
        write_section(args.write, section, MARK_START, MARK_END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
