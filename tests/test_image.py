"""The image runs: its build stage reproduced from the Dockerfile (tests/support/dockerfile.py; there is no
Docker daemon here), then `cutover demo-backend`, `cutover serve` and `cutover worker` started from what it
installed, as one working set: a write through the proxy reaches old and is mirrored to new.

None of the checkout may be importable by those processes: the development environment has the project
installed editable, and its path finder (run from a .pth file) would quietly serve a package the image
lacks. So they run on the base interpreter with `-S` (no site: no site-packages, no .pth file) and
PYTHONPATH set to the installed prefix, then the development environment's site-packages for the
dependencies (the image installs those from the same pyproject.toml). Spawned children inherit both.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import sysconfig
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml

from buffer_worker.keys import workers_key
from tests.support.dockerfile import (
    ROOT,
    BuildResult,
    materialise_context,
    read_dockerfile,
    reproduce_build_stage,
)
from tests.support.postgres import create_database, database_url, drop_database
from tests.support.redis_keys import REDIS_URL
from tests.support.servers import free_port

pytestmark = pytest.mark.slow

STARTUP_S = 45

PACKAGES_FOR_DEVELOPMENT = {"tests", "loadtests", "benchmarks", "docs"}
TOKEN = "image-test-token-" + "x" * 16


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> BuildResult:
    stages = read_dockerfile()
    build, final = stages[0], stages[-1]
    assert build is not final, "the Dockerfile has no separate build stage"
    copies_from_build = [i.words() for i in final.all("COPY") if i.words()[0] == f"--from={build.name}"]
    assert len(copies_from_build) == 1, copies_from_build
    _, prefix, installed_at = copies_from_build[0]
    assert installed_at == "/usr/local", "the image's interpreter finds the packages under its own prefix"
    base = tmp_path_factory.mktemp("image")
    context = base / "context"
    materialise_context(context)
    return reproduce_build_stage(build, context, base / "build-stage", prefix=prefix)


def top_level_python_directories(files: list[str]) -> set[str]:
    return {Path(f).parts[0] for f in files if f.endswith(".py") and len(Path(f).parts) > 1}


def test_every_top_level_package_is_installed_and_nothing_for_development(built: BuildResult) -> None:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    in_checkout = top_level_python_directories(listed)
    assert in_checkout, "the test proved nothing: no package found in the checkout"
    installed = {p.name for p in built.site_packages.iterdir() if (p / "__init__.py").exists()}
    assert installed == in_checkout - PACKAGES_FOR_DEVELOPMENT, (
        "every top-level directory with Python code must be a package (with an __init__.py) that the "
        "image installs, or be one of the development-only ones"
    )
    assert (built.scripts / "cutover").exists()


# -- running what was installed ---------------------------------------------------------------------------
class Processes:
    """The processes of one test, started from the installed result; whatever is left is killed."""

    def __init__(self, built: BuildResult, logs: Path) -> None:
        self.built = built
        self.logs = logs
        self.started: list[tuple[str, subprocess.Popen[bytes]]] = []
        dev_site_packages = sysconfig.get_path("purelib")
        self.env = {
            "PATH": os.environ["PATH"],
            "PYTHONPATH": f"{built.site_packages}{os.pathsep}{dev_site_packages}",
            "HOME": str(logs),
        }
        # -S: no site (no .pth file runs); -P: neither the script's directory nor the working one on the path.
        self.interpreter = [sys._base_executable, "-S", "-P"]  # type: ignore[attr-defined]
        self.command = [*self.interpreter, str(built.scripts / "cutover")]

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.log").open("wb") as log:
            process = subprocess.Popen(
                [*self.command, *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**self.env, **(env or {})},
                cwd=self.logs,  # the image's working directory holds no code either
            )
        self.started.append((name, process))
        return process

    def run(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.command, *args],
            capture_output=True,
            text=True,
            timeout=30,
            env={**self.env, **(env or {})},
        )

    def output(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]

    def stop(self, name: str, process: subprocess.Popen[bytes]) -> int:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
            raise AssertionError(f"{name} did not stop on SIGTERM:\n{self.output(name)}") from None

    def close(self) -> None:
        for _, process in self.started:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)


@pytest.fixture
def processes(built: BuildResult, tmp_path: Path) -> Iterator[Processes]:
    running = Processes(built, tmp_path)
    yield running
    running.close()


def wait_until_answered(
    url: str, process: subprocess.Popen[bytes], what: str, logs: Callable[[], str], **kw: Any
) -> None:
    # A process of the image imports from a site-packages without bytecode caches at first: on a loaded
    # machine (the suite runs two workers on two cores) its first start can take tens of seconds.
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        # The log as it is when the process has exited, not as it was when the wait began.
        assert process.poll() is None, f"{what} exited with {process.returncode}:\n{logs()}"
        try:
            if httpx.get(url, timeout=1, **kw).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{what} did not answer {url} within {STARTUP_S} s:\n{logs()}")


def test_installed_packages_come_from_the_image_not_the_checkout(processes: Processes) -> None:
    found = subprocess.run(
        [*processes.interpreter, "-c", "import proxy, telemetry; print(proxy.__file__, telemetry.__file__)"],
        capture_output=True,
        text=True,
        env=processes.env,
        cwd=ROOT,  # even from the checkout
        timeout=30,
    )
    assert found.returncode == 0, found.stderr
    paths = found.stdout.split()
    assert paths, paths
    assert all(path.startswith(str(processes.built.site_packages)) for path in paths), paths


@pytest.fixture
async def own_pg_url() -> AsyncIterator[str]:
    """A database of the image test's own: what other tests of the session left in theirs (an open
    transaction, a lock) cannot hold up the image's first start and its schema creation."""
    name = await create_database("cutover_image")
    try:
        yield database_url(name)
    finally:
        await drop_database(name)


def sessions_of(url: str) -> str:
    """What every session of the database is doing: the first thing to read when a start hangs."""
    done = subprocess.run(
        [
            "psql",
            url,
            "-Atc",
            "SELECT pid, state, wait_event_type, wait_event, left(query, 100) "
            "FROM pg_stat_activity WHERE datname = current_database()",
        ],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    return f"sessions of its database:\n{done.stdout}{done.stderr}"


@pytest.mark.timeout(3 * STARTUP_S)
def test_serve_worker_and_demo_backends_run_from_the_image(
    processes: Processes, own_pg_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    pg_url = own_pg_url
    ports = {name: free_port() for name in ("old", "new", "data", "admin")}
    backends = {
        side: processes.start(side, "demo-backend", side, "--host", "127.0.0.1", "--port", str(ports[side]))
        for side in ("old", "new")
    }
    # The image's spool directory is a volume; here a directory stands for it.
    image_env = dict(w.split("=", 1) for i in read_dockerfile()[-1].all("ENV") for w in i.words())
    spool_dir = tmp_path / "volume"
    spool_dir.mkdir()
    spool_path = spool_dir / Path(image_env.get("CUTOVER_BUFFER__SPOOL_PATH", "intents.spool")).name
    prefix = f"{redis_prefix}:image-{uuid.uuid4().hex[:6]}"
    config = tmp_path / "cutover.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "listen": f"127.0.0.1:{ports['data']}",
                "admin": {
                    "listen": f"127.0.0.1:{ports['admin']}",
                    "tokens": {"ops": {"token": TOKEN, "scope": "write"}},
                },
                "backends": {side: {"url": f"http://127.0.0.1:{ports[side]}"} for side in ("old", "new")},
                "postgres_url": pg_url,
                "redis_url": REDIS_URL,
                "buffer": {"key_prefix": prefix, "partitions": 2},
                "worker": {"lease_ttl_s": 1.5, "block_ms": 100},
                "shadow": {"process_nice": 0},
            }
        )
    )
    serve = processes.start(
        "serve", "serve", "--config", str(config), env={"CUTOVER_BUFFER__SPOOL_PATH": str(spool_path)}
    )
    worker = processes.start("worker", "worker", "--config", str(config))
    for side, process in backends.items():
        wait_until_answered(
            f"http://127.0.0.1:{ports[side]}/docs", process, side, functools.partial(processes.output, side)
        )
    admin = f"http://127.0.0.1:{ports['admin']}"

    def serve_log() -> str:
        return f"{processes.output('serve')}\n{sessions_of(pg_url)}"

    wait_until_answered(f"{admin}/healthz", serve, "cutover serve", serve_log)
    wait_until_answered(f"{admin}/readyz", serve, "cutover serve", serve_log)

    tenant = f"image-{uuid.uuid4().hex[:6]}"
    moved = httpx.put(
        f"{admin}/tenants/{tenant}/phase",
        json={"phase": "dual_write", "reason": "image test"},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    assert moved.status_code == 200, moved.text
    write = httpx.put(
        f"http://127.0.0.1:{ports['data']}/items/k1",
        json={"v": 1},
        headers={"X-Tenant-ID": tenant},
        timeout=10,
    )
    assert write.status_code == 200, write.text
    assert write.headers["x-cutover-served-by"] == "old", write.text

    def on_new() -> dict[str, Any]:
        dump = httpx.get(f"http://127.0.0.1:{ports['new']}/_dump", timeout=5).json()
        return dump["items"].get(tenant, {})  # type: ignore[no-any-return]

    deadline = time.monotonic() + 15
    while not on_new() and time.monotonic() < deadline:
        assert worker.poll() is None, f"cutover worker exited:\n{processes.output('worker')}"
        time.sleep(0.1)
    assert on_new() == {"k1": {"id": "k1", "v": 1}}, processes.output("worker")

    # The compose file's worker health check, against this worker: alive, then gone once stopped.
    alive = processes.run("worker", "--check", "--config", str(config))
    assert alive.returncode == 0, (alive.stdout, alive.stderr)
    assert "alive" in alive.stdout, (alive.stdout, alive.stderr)
    assert processes.stop("worker", worker) == 0, processes.output("worker")
    gone = processes.run("worker", "--check", "--config", str(config))
    assert gone.returncode == 1, (gone.stdout, gone.stderr)
    assert "no worker of host" in gone.stderr, (gone.stdout, gone.stderr)
    client = redis.Redis.from_url(REDIS_URL)
    try:
        assert client.zcard(workers_key(prefix)) == 0, "the worker did not leave the live set"
    finally:
        client.close()

    assert processes.stop("serve", serve) == 0, processes.output("serve")
    for side, process in backends.items():
        processes.stop(side, process)
    assert "Traceback" not in processes.output("serve") + processes.output("worker"), processes.output(
        "serve"
    ) + processes.output("worker")
