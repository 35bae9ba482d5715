"""Stopping background tasks: one helper for every component's `stop`/`close`, so that each one cancels,
waits a bounded time, and says what it leaves behind, the same way.

Why `asyncio.wait` and not `with suppress(CancelledError): await task`: that suppress also swallows a
cancellation of the caller itself (its shutdown would carry on as if not cancelled), and it waits without
bound for a task that does not end when cancelled.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger("cutover.tasks")
STOP_TIMEOUT_S = 10.0


async def cancel_and_wait(
    *tasks: asyncio.Future[Any] | None, timeout_s: float | None = STOP_TIMEOUT_S, reraise: bool = True
) -> None:
    """Cancel `tasks` (None and finished ones are passed over) and wait until they have ended, at most
    `timeout_s` (None: without bound). A task still running then is abandoned, with a warning naming it.

    A task that ended with an error other than its cancellation (it had crashed before the stop) is raised
    once all have ended, as awaiting it would (the first in argument order; any other is logged); with
    `reraise=False` each is logged with its traceback and the stop goes on. A cancellation of the caller
    propagates."""
    given = [task for task in tasks if task is not None]
    running = [task for task in given if not task.done()]
    for task in running:
        task.cancel()
    still: set[asyncio.Future[Any]] = set()
    if running:
        _done, still = await asyncio.wait(running, timeout=timeout_s)
    for task in still:
        log.warning("abandoned task %s: still running %.1f s after it was cancelled", _name(task), timeout_s)
    failures = [
        (task, error)
        for task in given
        if task not in still and not task.cancelled() and (error := task.exception()) is not None
    ]
    if reraise and failures:
        failures, (_task, first) = failures[1:], failures[0]
    else:
        first = None
    for task, error in failures:
        log.error("task %s had failed", _name(task), exc_info=error)
    if first is not None:
        raise first


def _name(task: asyncio.Future[Any]) -> str:
    return task.get_name() if isinstance(task, asyncio.Task) else repr(task)


def stop_if_cancelled() -> None:
    """Raise CancelledError when the current task's cancellation is still requested though the call that
    should have delivered it returned: Python 3.11's `asyncio.wait_for` (redis-py sends each command
    through it) swallows a cancellation that arrives as the call it waits for finishes."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
