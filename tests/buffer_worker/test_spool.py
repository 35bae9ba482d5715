"""The spool's health: checked at start, after every failed spool write and in the background, so that
what the data plane is told (`refusal`) matches what an append would do.

Unwritable spools as root: the spool's directory is swapped for a regular file (every open under it
fails with ENOTDIR whoever asks); a full disk is a 64 KiB tmpfs (mounting needs CAP_SYS_ADMIN, which
root has on these machines).
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from buffer_worker.keys import partition_of, stream_key
from buffer_worker.producer import RedisIntentProducer
from buffer_worker.sink import BufferUnavailableError
from buffer_worker.spool import SpoolingSink
from buffer_worker.spool_check import SpoolUnusableError, check_spool, spool_problem
from tests.buffer_worker.conftest import put_intent
from tests.support.redis_keys import PARTITIONS, REDIS_URL
from tests.support.redis_server import redis_server
from tests.support.servers import free_port
from tests.support.spool_dirs import break_directory, repair_directory
from tests.support.waits import wait_for


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "spool"
    directory.mkdir()
    return directory


def _write_until_it_fails(descriptor: int) -> None:
    while True:
        os.write(descriptor, b"\0" * 4096)


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A directory on a 64 KiB tmpfs, filled up."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        descriptor = os.open(mount_point / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            with pytest.raises(OSError) as full:  # noqa: PT011 - its errno is checked next
                _write_until_it_fails(descriptor)
            assert full.value.errno == errno.ENOSPC
        finally:
            os.close(descriptor)
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def test_problems_are_named(tmp_path: Path, spool_dir: Path) -> None:
    assert spool_problem(spool_dir / "intents.spool.0") is None
    assert not list(spool_dir.iterdir()), "the check leaves nothing behind"
    assert spool_problem(tmp_path / "absent" / "s") == f"directory {tmp_path / 'absent'} does not exist"
    (spool_dir / "dir.0").mkdir()
    assert spool_problem(spool_dir / "dir.0") == f"{spool_dir / 'dir.0'} is not a regular file"
    break_directory(spool_dir)
    assert spool_problem(spool_dir / "s") == f"{spool_dir} is not a directory"
    with pytest.raises(SpoolUnusableError) as raised:
        check_spool(spool_dir / "s")
    assert str(raised.value) == f"spool {spool_dir / 's'} is not usable: {spool_dir} is not a directory" + (
        " (buffer.spool_path)"
    )


def test_a_full_disk_is_named(full_disk: Path) -> None:
    problem = spool_problem(full_disk / "intents.spool.0")
    assert problem is not None, problem
    assert problem.startswith(f"no space left for it in {full_disk}"), problem


# -- the sink ---------------------------------------------------------------------------------------------
async def _sink(redis_url: str, path: Path, **options: float) -> SpoolingSink:
    producer = RedisIntentProducer.from_url(
        redis_url, prefix="spool-test", partitions=PARTITIONS, timeout_s=1
    )
    sink = SpoolingSink(producer, path, max_bytes=1 << 20, **options)
    await sink.start()
    return sink


@pytest.fixture
async def sinks() -> AsyncIterator[list[SpoolingSink]]:
    started: list[SpoolingSink] = []
    yield started
    for sink in started:
        await sink.close()


async def test_start_refuses_an_unusable_spool(tmp_path: Path) -> None:
    producer = RedisIntentProducer.from_url(REDIS_URL, prefix="spool-test", partitions=PARTITIONS)
    sink = SpoolingSink(producer, tmp_path / "absent" / "intents.spool.0", max_bytes=1 << 20)
    with pytest.raises(SpoolUnusableError):
        await sink.start()
    await sink.close()


async def test_an_unforeseen_spool_failure_is_a_buffer_error_and_refuses_the_next_write(
    spool_dir: Path, sinks: list[SpoolingSink]
) -> None:
    # Retries and checks far apart: nothing but the failing append itself can notice the broken spool.
    sink = await _sink(
        f"redis://127.0.0.1:{free_port()}/0",
        spool_dir / "intents.spool.0",
        retry_interval_s=60,
        check_interval_s=60,
    )
    sinks.append(sink)
    await wait_for(lambda: not sink.redis_reachable, timeout_s=5)
    assert sink.refusal() is None  # the spool takes intents while Redis is away
    break_directory(spool_dir)
    assert sink.refusal() is None, "nothing has noticed yet: this is the window an append can fall into"

    with pytest.raises(BufferUnavailableError) as raised:
        await sink.append(put_intent("t1", "k", 1))
    assert "the local spool did not take the intent" in raised.value.detail
    refusal = sink.refusal()
    assert refusal is not None, refusal
    assert refusal.code == "buffer_unavailable", refusal
    assert f"{spool_dir} is not a directory" in refusal.detail
    assert sink.status()["spool_writable"] is False
    assert sink.status()["accepting"] is False


async def test_spool_failure_falls_back_to_redis_when_it_answers_again(
    spool_dir: Path, sinks: list[SpoolingSink], tmp_path: Path
) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    sink = await _sink(url, spool_dir / "intents.spool.0", retry_interval_s=60, check_interval_s=60)
    sinks.append(sink)
    await wait_for(lambda: not sink.redis_reachable, timeout_s=5)
    break_directory(spool_dir)
    async with redis_server(port, tmp_path):
        client = aioredis.Redis.from_url(url)
        try:
            intent = put_intent("t1", "k", 1)
            await sink.append(intent)  # the spool fails; Redis, tried once more, takes it
            entries: Any = await client.xrange(stream_key("spool-test", partition_of("t1", PARTITIONS)))
            assert len(entries) == 1
            assert sink.redis_reachable
            assert sink.status()["spool_writable"] is False
            assert sink.refusal() is None  # Redis takes appends: a broken spool alone refuses nothing
        finally:
            await client.aclose()


async def test_background_check_notices_a_broken_spool_and_its_repair(
    spool_dir: Path, sinks: list[SpoolingSink]
) -> None:
    sink = await _sink(REDIS_URL, spool_dir / "intents.spool.0", check_interval_s=0.05)
    sinks.append(sink)
    await wait_for(lambda: sink.status()["spool_writable"] is True and sink.redis_reachable, timeout_s=5)
    break_directory(spool_dir)
    await wait_for(lambda: sink.status()["spool_writable"] is False, timeout_s=5)
    assert sink.refusal() is None  # Redis is up
    repair_directory(spool_dir)
    await wait_for(lambda: sink.status()["spool_writable"] is True, timeout_s=5)
