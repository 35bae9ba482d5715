"""Start-up shared by every cutover process (proxy, shadow process, worker): the event loop and the heap.

uvloop where available: its loop is markedly cheaper per I/O event than asyncio's default one, which
is most of what a proxy process does. Logging is set up by `telemetry.logs.configure_logging`.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any, TypeVar

from common.tasks import stop_if_cancelled

T = TypeVar("T")

# Collect the young generation after this many net allocations of tracked objects, not CPython's 700.
# Requests allocate and free their objects by reference counting; what is alive at once stays in the low
# thousands (32 requests in flight: no young collection at all over 10 s with 7,000), while at 700 the
# collector ran ~280 times a second and promoted in-flight objects into the old generation. Cyclic
# garbage still triggers a collection once this many objects pile up, so memory stays bounded.
YOUNG_GENERATION_THRESHOLD = 10_000


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop

        loop_factory: Any = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(_cancellable(coro))


async def _cancellable(coro: Coroutine[Any, Any, T]) -> T:
    """`coro`, ending as cancelled if it returns while its cancellation is still requested.

    Ctrl-C cancels the main task (`asyncio.Runner`), which then exits through KeyboardInterrupt; but a
    call that swallows the cancellation lets the coroutine carry on and return as if it had not been
    interrupted. Python 3.11's `asyncio.wait_for` does when the call it waits for finishes as the
    cancellation arrives, and redis-py sends each command through it (with a socket timeout)."""
    result = await coro
    stop_if_cancelled()
    return result


def settle_heap() -> None:
    """Call once a process has started, before it serves.

    What start-up built (modules, settings, pools: ~140,000 tracked objects in a proxy process) lives
    as long as the process. Frozen, the collector no longer walks it: full collections over it took
    ~45 ms each, ~7 % of a saturated proxy's CPU, because every young collection promoted objects of
    the requests then in flight towards the old generation (BENCHMARKS.md, the choices at its top).
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, middle, old)
