"""Waiting on observable state instead of sleeping: poll a condition until it holds or a deadline passes."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable

Condition = Callable[[], Awaitable[bool] | bool]


async def wait_for(
    condition: Condition,
    what: str = "condition not met",
    *,
    timeout_s: float = 3.0,
    interval_s: float = 0.02,
    still_valid: Callable[[], None] | None = None,
    ignoring: tuple[type[Exception], ...] = (),
) -> float:
    """Poll `condition` (plain or async) until it holds; return the seconds it took.

    Fails the test with `what` (what went wrong) once `timeout_s` has passed. `still_valid` runs before
    every poll and raises to end the wait early (a process the condition depends on has died, say). An
    exception of a type in `ignoring` raised by `condition` counts as "not yet" (a server still starting).
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    while True:
        if still_valid is not None:
            still_valid()
        try:
            outcome = condition()
            if inspect.isawaitable(outcome):
                outcome = await outcome
        except ignoring:
            outcome = False
        if outcome:
            return loop.time() - start
        if loop.time() - start > timeout_s:
            raise AssertionError(f"{what} (waited {timeout_s} s)")
        await asyncio.sleep(interval_s)
