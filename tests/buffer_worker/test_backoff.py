"""Retry delays: full jitter under a capped exponential ceiling. The bounds are checked, never timing."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from buffer_worker.apply_errors import UnreachableError
from buffer_worker.backoff import Backoff
from buffer_worker.intent import Intent
from buffer_worker.worker import Worker, WorkerStats
from config.settings import WorkerSettings
from routing.phases import Side


def test_each_delay_lies_under_a_doubling_ceiling_capped_at_retry_max_s() -> None:
    backoff = Backoff(0.1, 5.0, rng=random.Random(7))
    ceilings, delays = [], []
    for _ in range(40):
        ceilings.append(backoff.ceiling_s)
        delays.append(backoff.next_s())
    assert ceilings[:7] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0])
    assert set(ceilings[6:]) == {5.0}
    assert all(0.0 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    # Jitter: the delays are spread over the window, not its edge (the old schedule sat on the ceiling).
    capped = delays[6:]
    assert min(capped) < 2.5 < max(capped), capped


def test_the_bounds_reach_both_ends_of_the_window() -> None:
    class Edges(random.Random):
        def __init__(self, pick: str) -> None:
            super().__init__()
            self.pick = pick

        def uniform(self, a: float, b: float) -> float:
            return a if self.pick == "low" else b

    high = Backoff(0.5, 3.0, rng=Edges("high"))
    assert [high.next_s() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    low = Backoff(0.5, 3.0, rng=Edges("low"))
    assert [low.next_s() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert Backoff(10.0, 1.0).ceiling_s == 1.0  # an initial delay over the cap is capped too
    with pytest.raises(ValueError, match="must be positive"):
        Backoff(0.0, 1.0)


async def test_the_worker_sleeps_jittered_delays_within_retry_max_s(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker's retry loop draws its waits from the jittered backoff: an outage of 30 attempts never
    waits longer than `retry_max_s`, and the waits are not the fixed doubling schedule."""
    slept: list[float] = []
    # `asyncio.sleep` is one function for the whole process: only this test's task records instead of
    # sleeping. Servers other tests left running in this loop keep sleeping for real (a uvicorn server's
    # tick loop that never suspends would hold the loop, and the run, for ever).
    real_sleep = asyncio.sleep
    test_task = asyncio.current_task()

    async def record(delay_s: float, result: Any = None) -> Any:
        if asyncio.current_task() is not test_task:
            return await real_sleep(delay_s, result)
        slept.append(delay_s)
        return result

    monkeypatch.setattr("buffer_worker.worker.asyncio.sleep", record)
    worker = Worker.__new__(Worker)  # only the retry loop runs: no Redis, no applier
    worker._config = WorkerSettings(retry_initial_s=0.1, retry_max_s=2.0, max_attempts=3)
    worker.stats = WorkerStats()
    calls = 0
    intent = Intent(
        tenant="t",
        target=Side.NEW,
        method="PUT",
        path="/items/1",
        query="",
        headers=(),
        body=b"",
        status=200,
        response_body=b"",
    )

    async def attempt(_in_doubt: bool) -> None:
        nonlocal calls
        calls += 1
        if calls <= 30:
            raise UnreachableError(intent, "connection refused")

    assert await worker._with_retry(attempt, what="test apply") is None
    assert len(slept) == 30, "the test proved nothing"
    assert all(0.0 <= s <= 2.0 for s in slept)
    doubling = [min(0.1 * 2**n, 2.0) for n in range(30)]
    assert slept != pytest.approx(doubling)
    assert len(set(slept[6:])) > 1  # once capped, the old schedule repeated retry_max_s exactly
