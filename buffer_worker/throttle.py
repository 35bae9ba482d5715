"""Per-tenant rate limit for applies: a token bucket per tenant, so one tenant's burst cannot flood the
mirrored side (or starve the other tenants of a partition) while the buffer catches up."""

from __future__ import annotations

import asyncio
import time


class TenantThrottle:
    def __init__(self, rate_per_s: float, *, burst: float | None = None) -> None:
        self._rate = rate_per_s
        self._burst = burst if burst is not None else max(1.0, rate_per_s)
        self._buckets: dict[str, tuple[float, float]] = {}  # tenant → (tokens, at)
        self.waited_s = 0.0

    @property
    def limited(self) -> bool:
        return self._rate > 0

    async def take(self, tenant: str, count: int = 1) -> None:
        """Wait until `tenant` may apply `count` more intents (no wait when unlimited). A batch larger
        than the bucket goes into debt and waits for it: the long-run rate holds either way."""
        if self._rate <= 0:
            return
        now = time.monotonic()
        tokens, at = self._buckets.get(tenant, (self._burst, now))
        tokens = min(self._burst, tokens + (now - at) * self._rate) - count
        self._buckets[tenant] = (tokens, now)
        if tokens < 0:
            wait_s = -tokens / self._rate
            self.waited_s += wait_s
            await asyncio.sleep(wait_s)
