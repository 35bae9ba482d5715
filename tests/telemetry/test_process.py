"""Process start-up: the heap settled before serving; Ctrl-C ends the main coroutine as interrupted."""

from __future__ import annotations

import gc
import subprocess
import sys
from collections.abc import Iterator

import pytest

from telemetry.process import YOUNG_GENERATION_THRESHOLD, settle_heap


@pytest.fixture
def restore_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


class _Cycle:
    """One tracked object referring to itself: only the cycle collector can free it."""

    __slots__ = ("me",)
    alive = 0
    most_alive = 0

    def __init__(self) -> None:
        self.me = self
        _Cycle.alive += 1
        _Cycle.most_alive = max(_Cycle.most_alive, _Cycle.alive)

    def __del__(self) -> None:
        _Cycle.alive -= 1


@pytest.mark.usefixtures("restore_gc")
def test_settle_heap_freezes_what_start_up_built_and_raises_the_young_threshold() -> None:
    built_at_start_up = [{"setting": index} for index in range(1000)]
    settle_heap()
    assert gc.get_freeze_count() >= len(built_at_start_up)
    assert gc.get_threshold()[0] == YOUNG_GENERATION_THRESHOLD
    # Frozen objects are out of every generation the collector walks.
    tracked = {id(obj) for obj in gc.get_objects()}
    assert id(built_at_start_up) not in tracked
    assert not any(id(entry) in tracked for entry in built_at_start_up)


@pytest.mark.usefixtures("restore_gc")
def test_cyclic_garbage_stays_bounded_after_the_heap_is_settled() -> None:
    settle_heap()
    _Cycle.alive = _Cycle.most_alive = 0
    for _ in range(20 * YOUNG_GENERATION_THRESHOLD):
        _Cycle()
    # Each cycle is garbage at once; a young collection frees them once about the threshold's worth has
    # piled up, so what is alive at once is bounded by the threshold, not by the 200,000 made.
    assert _Cycle.most_alive < 2 * YOUNG_GENERATION_THRESHOLD
    gc.collect()
    assert _Cycle.alive == 0


# Ctrl-C while the main task runs (`signal.raise_signal` runs the handler before it returns): the task
# is cancelled, and the cancellation is delivered where it next waits, which swallows it, as Python
# 3.11's `asyncio.wait_for` does when the call it waits for has finished by then.
SWALLOWED = """
import asyncio, signal
from telemetry.process import run_async

async def main() -> str:
    signal.raise_signal(signal.SIGINT)
    try:
        await asyncio.sleep(0)
    except asyncio.CancelledError:
        pass
    return "finished"

try:
    print(run_async(main()))
except KeyboardInterrupt:
    print("interrupted")
"""


def test_ctrl_c_is_not_lost_when_the_main_coroutine_swallows_its_cancellation() -> None:
    out = subprocess.run([sys.executable, "-c", SWALLOWED], capture_output=True, text=True, timeout=30)
    assert (out.stdout.strip(), out.returncode) == ("interrupted", 0), out.stderr
