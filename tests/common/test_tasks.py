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


async def test_wait_for_on_this_python_drops_a_cancellation_that_asyncio_timeout_keeps() -> None:
    """Why ruff bans `asyncio.wait_for` outside the tests (pyproject.toml, TID251): on Python 3.11, when
    the awaited call finishes in the same turn as the waiting task is cancelled, wait_for returns the
    result and the cancellation is gone. `asyncio.timeout` raises it. (Python 3.12 fixed wait_for; on
    it this test fails and the ban can go.)"""

    async def waiting(bounded: str, done: asyncio.Future[str]) -> str:
        if bounded == "wait_for":
            return await asyncio.wait_for(done, 10)
        async with asyncio.timeout(10):
            return await done

    outcomes: dict[str, str] = {}
    for bounded in ("wait_for", "timeout"):
        done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(waiting(bounded, done))
        await asyncio.sleep(0)  # the task now waits on `done`
        done.set_result("answer")
        task.cancel()  # in the same turn: the answer and the cancellation race
        try:
            outcomes[bounded] = await task
        except asyncio.CancelledError:
            outcomes[bounded] = "cancelled"
    assert outcomes == {"wait_for": "answer", "timeout": "cancelled"}
