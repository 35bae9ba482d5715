"""Whether a proxy process can serve: one rule for `GET /readyz` and the `cutover_ready` metric."""

from __future__ import annotations

from enum import StrEnum

from buffer_worker.sink import IntentSink
from proxy.dataplane.phase_cache import PhaseCache


class Readiness(StrEnum):
    READY = "ready"
    # Served, but something a failure could soon need is missing (the phase store, Redis, the spool).
    DEGRADED = "degraded"
    # Requests would be refused: no phases yet, or mirroring writes that the buffer could not take.
    NOT_READY = "not_ready"


def readiness(cache: PhaseCache, sink: IntentSink) -> Readiness:
    if not cache.loaded or sink.refusal() is not None:
        return Readiness.NOT_READY
    buffer = sink.status()
    if not cache.connected or buffer.get("redis_reachable") is False or buffer.get("spool_writable") is False:
        return Readiness.DEGRADED
    return Readiness.READY
