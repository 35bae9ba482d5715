"""A background task that does one thing every few seconds, and once more when it stops.

Several components gather in memory on the request path and write out in the background (seen tenants,
per-tenant health, shadow counters): each needs the same loop (first run after one interval, so start-up
does not pay for it) and the same stop (cancel, then one last bounded run, so that what arrived since
the last run is not lost). Errors are the tick's to handle: one that escapes ends the task, and `stop`
raises it, as awaiting the task would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import suppress

from common.tasks import cancel_and_wait

Tick = Callable[[], Awaitable[object]]


class Periodic:
    def __init__(
        self,
        name: str,
        interval_s: float,
        tick: Tick,
        *,
        final: Tick | None = None,
        final_timeout_s: float = 2.0,
        final_errors: tuple[type[BaseException], ...] = (),
    ) -> None:
        """`tick` every `interval_s`; on `stop`, `final` once, at most `final_timeout_s`, its
        `final_errors` passed over (the store may be gone by then)."""
        self._name = name
        self._interval_s = interval_s
        self._tick = tick
        self._final = final
        self._final_timeout_s = final_timeout_s
        self._final_errors = final_errors
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self._name)

    async def stop(self) -> None:
        """Cancel the loop, then run `final` (only if the loop had started)."""
        if self._task is None:
            return
        task, self._task = self._task, None
        await cancel_and_wait(task)
        if self._final is not None:
            with suppress(TimeoutError, *self._final_errors):
                async with asyncio.timeout(self._final_timeout_s):
                    await self._final()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            await self._tick()
