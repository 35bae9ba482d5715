"""Stopping background tasks (`common.tasks.cancel_and_wait`). Pure asyncio, no server (about 0.1 s)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from common.tasks import cancel_and_wait


async def _forever() -> None:
    await asyncio.Event().wait()


async def _crashed() -> None:
    raise RuntimeError("crashed before the stop")


async def _ignores_cancel(release: asyncio.Event) -> None:
    while not release.is_set():
        try:
            await release.wait()
        except asyncio.CancelledError:
            continue  # a task that does not end when cancelled


async def test_cancels_and_waits_for_every_task_passing_over_none() -> None:
    tasks = [asyncio.create_task(_forever()) for _ in range(3)]
    await cancel_and_wait(*tasks, None)
    assert all(task.cancelled() for task in tasks)


async def test_a_task_that_does_not_end_is_abandoned_with_its_name(caplog: pytest.LogCaptureFixture) -> None:
    release = asyncio.Event()
    stubborn = asyncio.create_task(_ignores_cancel(release), name="stubborn")
    await asyncio.sleep(0)  # started: a task cancelled before its first step never runs its handler
    with caplog.at_level(logging.WARNING, logger="cutover.tasks"):
        await cancel_and_wait(stubborn, timeout_s=0.05)
    assert not stubborn.done()
    assert "abandoned task stubborn" in caplog.text
    release.set()
    await stubborn


async def test_a_crash_before_the_stop_is_raised_as_awaiting_the_task_would() -> None:
    crashed = asyncio.create_task(_crashed())
    running = asyncio.create_task(_forever())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="crashed before the stop"):
        await cancel_and_wait(crashed, running)
    assert running.cancelled(), "the other tasks are stopped before the error is raised"


async def test_without_reraise_a_crash_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    crashed = asyncio.create_task(_crashed(), name="crasher")
    await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR, logger="cutover.tasks"):
        await cancel_and_wait(crashed, reraise=False)
    assert "task crasher had failed" in caplog.text


async def test_the_callers_own_cancellation_is_not_swallowed() -> None:
    release = asyncio.Event()
    stubborn = asyncio.create_task(_ignores_cancel(release))
    await asyncio.sleep(0)
    stopping = asyncio.create_task(cancel_and_wait(stubborn, timeout_s=None))
    await asyncio.sleep(0.01)
    stopping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopping
    release.set()
    await stubborn
