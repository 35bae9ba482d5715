"""`common.periodic.Periodic`: ticks after each interval, a last bounded run on stop, errors surfaced."""

from __future__ import annotations

import asyncio

import pytest

from common.periodic import Periodic


async def test_ticks_after_each_interval_then_runs_final_once_on_stop() -> None:
    ticks: list[str] = []
    ticked = asyncio.Event()

    async def tick() -> None:
        ticks.append("tick")
        if ticks.count("tick") == 3:
            ticked.set()

    async def final() -> None:
        ticks.append("final")

    periodic = Periodic("test", 0.01, tick, final=final)
    periodic.start()
    assert ticks == []  # the first run waits one interval
    await asyncio.wait_for(ticked.wait(), 5)
    await periodic.stop()
    assert ticks[-1] == "final"
    assert ticks.count("final") == 1
    assert not periodic.running
    await periodic.stop()  # stopping twice runs nothing more
    assert ticks.count("final") == 1


async def test_stop_without_start_runs_nothing() -> None:
    ran: list[str] = []

    async def final() -> None:
        ran.append("final")

    await Periodic("test", 10, final, final=final).stop()
    assert ran == []


async def test_a_final_run_is_bounded_and_its_expected_errors_are_passed_over() -> None:
    async def nothing() -> None:
        return None

    async def hangs() -> None:
        await asyncio.sleep(60)

    async def store_gone() -> None:
        raise ConnectionError("gone")

    slow = Periodic("test", 10, nothing, final=hangs, final_timeout_s=0.05)
    slow.start()
    await asyncio.wait_for(slow.stop(), 5)
    gone = Periodic("test", 10, nothing, final=store_gone, final_errors=(ConnectionError,))
    gone.start()
    await gone.stop()
    unexpected = Periodic("test", 10, nothing, final=store_gone)
    unexpected.start()
    with pytest.raises(ConnectionError):
        await unexpected.stop()


async def test_an_error_that_escapes_a_tick_ends_the_loop_and_is_raised_by_stop() -> None:
    async def broken() -> None:
        raise RuntimeError("bug")

    periodic = Periodic("test", 0.001, broken)
    periodic.start()
    for _ in range(500):
        await asyncio.sleep(0.01)
        if periodic._task is not None and periodic._task.done():  # noqa: SLF001 - the loop ended
            break
    with pytest.raises(RuntimeError, match="bug"):
        await periodic.stop()
