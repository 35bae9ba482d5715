"""`cutover serve` as a process, configured for telemetry by the standard `OTEL_*` variables only: it
stops promptly whatever state its collector is in, prints spans with the console exporter, and writes
clean JSON logs (one start line naming both addresses, no repeated uvicorn lines, no ANSI fields).

Each test starts a real proxy process (a shadow process included) against the session's PostgreSQL
database and Redis; its backends are closed ports, so every proxied request is a quick 502."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.support.redis_keys import REDIS_URL
from tests.support.servers import free_port
from tests.telemetry.test_tracing import unreachable_collector

pytestmark = pytest.mark.slow

TOKEN = f"serve-test-{uuid.uuid4().hex}"
CUTOVER = Path(sys.executable).with_name("cutover")


@dataclass
class Stopped:
    stdout: str
    stderr: str
    exit_s: float  # from SIGTERM to the process's exit
    returncode: int

    def log_lines(self) -> list[dict[str, Any]]:
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        return [orjson.loads(line) for line in lines]  # every line is one JSON object


@dataclass
class ServeProcess:
    process: subprocess.Popen[str]
    data_url: str
    admin_url: str

    def stop(self) -> Stopped:
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        stdout, stderr = self.process.communicate(timeout=30)
        stopped = Stopped(stdout, stderr, time.monotonic() - started, self.process.returncode)
        print(f"stopped in {stopped.exit_s:.2f} s")  # shown with -s: the margin under the bound
        return stopped


@contextmanager
def serve(tmp_path: Path, pg_url: str, otel: dict[str, str]) -> Iterator[ServeProcess]:
    data, admin = free_port(), free_port()
    config = tmp_path / "cutover.yaml"
    config.write_text(
        orjson.dumps(  # JSON is YAML
            {
                "listen": f"127.0.0.1:{data}",
                "admin": {"listen": f"127.0.0.1:{admin}", "tokens": {"t": {"token": TOKEN}}},
                "backends": {
                    "old": {"url": f"http://127.0.0.1:{free_port()}", "timeout_s": 2},
                    "new": {"url": f"http://127.0.0.1:{free_port()}", "timeout_s": 2},
                },
                "postgres_url": pg_url,
                "redis_url": REDIS_URL,
                "buffer": {"key_prefix": f"serve-{uuid.uuid4().hex[:8]}", "spool_path": str(tmp_path / "sp")},
                "proxy_id": f"serve-{uuid.uuid4().hex[:8]}",
            }
        ).decode()
    )
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CUTOVER_"))}
    process = subprocess.Popen(
        [str(CUTOVER), "serve", "--config", str(config)],
        env={**environ, **otel},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    running = ServeProcess(process, f"http://127.0.0.1:{data}", f"http://127.0.0.1:{admin}")
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.communicate()[1]
            try:
                if httpx.get(f"{running.admin_url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the proxy did not become ready within 30 s"
            time.sleep(0.1)
        yield running
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def traffic(running: ServeProcess, count: int = 5) -> None:
    """Requests that make spans (sampled: OTEL_TRACES_SAMPLER=always_on); the backends are closed ports."""
    with httpx.Client(base_url=running.data_url, timeout=10) as client:
        for n in range(count):
            response = client.get(f"/items/k{n}", headers={"X-Tenant-ID": "serve-tenant"})
            assert response.status_code == 502, response.text


def test_stops_within_seconds_with_a_collector_that_never_answers(tmp_path: Path, pg_url: str) -> None:
    with unreachable_collector("blackhole") as collector:
        otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_TRACES_SAMPLER": "always_on"}
        with serve(tmp_path, pg_url, otel) as running:
            traffic(running)  # spans queued for the next export, due in 5 s: shutdown has to send them
            stopped = running.stop()
        assert collector.contacted(), "no span was exported: the test proved nothing"
    assert stopped.returncode == 0, stopped.stderr
    # Telemetry waits at most 1 s; 3 s is the whole process's stop, generously. Before: 10 s and more.
    assert stopped.exit_s < 3.0, f"took {stopped.exit_s:.1f} s to stop"


def test_stops_within_seconds_with_a_collector_port_that_refuses(tmp_path: Path, pg_url: str) -> None:
    with unreachable_collector("closed") as collector:
        otel = {
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{collector.url}/v1/traces",
            "OTEL_TRACES_SAMPLER": "always_on",
        }
        with serve(tmp_path, pg_url, otel) as running:
            traffic(running)
            stopped = running.stop()
    assert stopped.returncode == 0, stopped.stderr
    exporter = [line for line in stopped.log_lines() if line["logger"].startswith("opentelemetry.exporter")]
    assert exporter, "no span was exported: the test proved nothing"
    assert stopped.exit_s < 3.0, f"took {stopped.exit_s:.1f} s to stop"


def test_console_spans_and_clean_logs(tmp_path: Path, pg_url: str) -> None:
    otel = {
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_TRACES_SAMPLER": "always_on",
        "OTEL_SERVICE_NAME": "cutover-serve-test",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test",
    }
    with serve(tmp_path, pg_url, otel) as running:
        traffic(running, count=3)
        stopped = running.stop()
    assert stopped.returncode == 0, stopped.stderr

    # Spans: one JSON object per line on stdout, named by method and route, with the resource asked for.
    spans = [orjson.loads(line) for line in stopped.stdout.splitlines() if line.startswith("{")]
    servers = [span for span in spans if span["kind"] == "SpanKind.SERVER"]
    assert len(servers) == 3, stopped.stdout
    assert {span["name"] for span in spans} == {"cutover GET /items/*"}
    resource = servers[0]["resource"]["attributes"]
    assert resource["service.name"] == "cutover-serve-test"
    assert resource["deployment.environment"] == "test"
    assert all(span["attributes"]["http.response.status_code"] == 502 for span in servers)

    # Logs: JSON lines on stderr, no ANSI copy of the message, no line twice, one start line.
    logs = stopped.log_lines()
    assert logs, "no log lines: the test proved nothing"
    assert not [line for line in logs if "color_message" in line]
    rendered = [(line["logger"], line["component"], line["message"]) for line in logs]
    repeated = {line for line in rendered if rendered.count(line) > 1}
    assert not repeated, repeated
    starts = [line for line in logs if line["message"].startswith("proxy process 0 serving")]
    data, admin = running.data_url.removeprefix("http://"), running.admin_url.removeprefix("http://")
    assert len(starts) == 1
    assert data in starts[0]["message"]
    assert admin in starts[0]["message"]
    assert starts[0]["data_plane"] == data
    assert starts[0]["admin"] == admin
    assert not [line for line in logs if line["logger"].startswith("uvicorn")], (
        "uvicorn's own lifecycle lines"
    )
    assert any(line["message"] == "proxy process 0 stopped" for line in logs)
