"""Start-up shared by every cutover process (proxy, shadow process, worker): the event loop.

uvloop where available: its loop is markedly cheaper per I/O event than asyncio's default one, which
is most of what a proxy process does. Logging is set up by `telemetry.logs.configure_logging`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop

        loop_factory: Any = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(coro)
