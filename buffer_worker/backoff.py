"""Retry delays with full jitter (the "Exponential Backoff And Jitter" scheme of the AWS Architecture
Blog): the n-th delay is drawn uniformly from [0, min(retry_max_s, retry_initial_s * 2**n)].

Without jitter every worker that met the same outage (a mirror restarting, Redis failing over) retried on
the same schedule: 0.1, 0.2, 0.4 s ... after the failure, so their retries arrived together, in waves, at
a backend that was just coming back. Full jitter spreads them over the whole window; of the schemes that
post compares it does the least work for the same completion time. The expected delay is half the
capped exponential one, so a mirror that is back is found sooner on average.
"""

from __future__ import annotations

import random


class Backoff:
    """One retry sequence. `next_s()` grows the ceiling and draws a delay under it."""

    def __init__(self, initial_s: float, max_s: float, *, rng: random.Random | None = None) -> None:
        if initial_s <= 0 or max_s <= 0:
            raise ValueError("backoff delays must be positive")
        self._initial_s = initial_s
        self._max_s = max_s
        self._ceiling_s = min(initial_s, max_s)
        self._rng = rng if rng is not None else random.Random()

    @property
    def ceiling_s(self) -> float:
        """The bound of the next delay."""
        return self._ceiling_s

    def next_s(self) -> float:
        delay_s = self._rng.uniform(0.0, self._ceiling_s)
        self._ceiling_s = min(self._ceiling_s * 2, self._max_s)
        return delay_s
