"""The proxy's half of the authority-switch barrier: hold a tenant's writes, confirm when none is in flight.

When a tenant's authoritative side is about to change (shadow ↔ live), the admin API asks every proxy
to hold that tenant's writes. A proxy holds new writes (they wait, they do not fail), waits until the
tenant's writes already in flight have finished (their intents are durable) and its spool holds none of
the tenant's intents, then confirms in PostgreSQL. The coordinator flips the phase once every live proxy
confirmed and the buffer drained toward the new authority, or aborts; either way it notifies a release,
and held writes go on under whatever phase is then in force. A hold also ends by itself after its bound
plus a margin, so a lost notification cannot stall a tenant.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any

from common.tasks import cancel_and_wait

log = logging.getLogger("cutover.barrier")
_CONFIRM_POLL_S = 0.005


class WriteGate:
    def __init__(
        self,
        *,
        hold_timeout_s: float,
        confirm: Callable[[int], Awaitable[None]],
        spooled: Callable[[str], int],
    ) -> None:
        self._hold_timeout_s = hold_timeout_s
        self._confirm = confirm  # writes the ack row for a barrier id
        self._spooled = spooled  # intents of a tenant still in the local spool
        self._held: dict[str, asyncio.Event] = {}
        self._in_flight: Counter[str] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()
        self.holds = 0
        self.held_writes = 0

    # -- data plane -----------------------------------------------------------------------------------
    async def enter(self, tenant: str) -> None:
        """Called before a write is routed: wait while the tenant is held, then count it in flight."""
        released = self._held.get(tenant)
        if released is not None:
            self.held_writes += 1
            with suppress(TimeoutError):
                async with asyncio.timeout(self._hold_timeout_s + 1.0):
                    await released.wait()
        self._in_flight[tenant] += 1

    def exit(self, tenant: str) -> None:
        remaining = self._in_flight[tenant] - 1
        if remaining:
            self._in_flight[tenant] = remaining
        else:
            del self._in_flight[tenant]

    # -- barrier notifications ------------------------------------------------------------------------
    def handle(self, notification: dict[str, Any]) -> None:
        """A `cutover_barrier` notification: `{"action": "hold" | "release", "barrier": id, "tenant": t}`."""
        if notification["action"] == "hold":
            self.hold(int(notification["barrier"]), str(notification["tenant"]))
        elif notification["action"] == "release":
            self.release(str(notification["tenant"]))

    def hold(self, barrier_id: int, tenant: str) -> None:
        self.holds += 1
        event = self._held.setdefault(tenant, asyncio.Event())
        task = asyncio.create_task(self._confirm_when_quiet(barrier_id, tenant, event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def release(self, tenant: str) -> None:
        event = self._held.pop(tenant, None)
        if event is not None:
            event.set()

    async def _confirm_when_quiet(self, barrier_id: int, tenant: str, event: asyncio.Event) -> None:
        deadline = time.monotonic() + self._hold_timeout_s
        try:
            while self._in_flight.get(tenant) or self._spooled(tenant):
                if time.monotonic() > deadline:
                    log.warning(
                        "barrier %d: tenant %r still has writes in flight; not confirming", barrier_id, tenant
                    )
                    return
                await asyncio.sleep(_CONFIRM_POLL_S)
            await self._confirm(barrier_id)
            # Safety net: release by ourselves if the coordinator's release never arrives.
            await asyncio.sleep(self._hold_timeout_s + 1.0)
        except Exception:
            log.exception("barrier %d: confirmation failed", barrier_id)
        finally:
            if self._held.get(tenant) is event:  # not a later hold of the same tenant
                self.release(tenant)

    async def stop(self) -> None:
        for tenant in list(self._held):
            self.release(tenant)
        await cancel_and_wait(*self._tasks, reraise=False)
