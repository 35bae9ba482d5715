"""A redis-server of one test's own, so it can be paused (SIGSTOP) or stopped without touching anyone else."""

from __future__ import annotations

import asyncio
import shutil
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.support.waits import wait_for


@asynccontextmanager
async def redis_server(port: int, directory: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """Start redis-server on `port` (no persistence, files under `directory`), wait until it answers a
    PING, and stop it on exit (resumed first, in case the test left it paused)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed")
    process = await asyncio.create_subprocess_exec(
        *(binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
        *("--dir", str(directory)),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    client = aioredis.Redis.from_url(f"redis://127.0.0.1:{port}/0")

    async def answers() -> bool:
        try:
            return bool(await client.ping())
        except (OSError, aioredis.ConnectionError):
            return False

    def running() -> None:
        assert process.returncode is None, f"redis-server on port {port} exited with {process.returncode}"

    try:
        await wait_for(
            answers, f"redis-server on port {port} did not answer", timeout_s=10, still_valid=running
        )
        yield process
    finally:
        await client.aclose()
        if process.returncode is None:
            process.send_signal(signal.SIGCONT)
            process.terminate()
        await asyncio.wait_for(process.wait(), 10)
