"""The buffer interface the proxy hands acknowledged writes to.

`append` returns only once the intent is durable (in Redis); the proxy acknowledges the client after
that. `pending` answers whether intents toward a side are still unapplied for a tenant: the proxy asks
before serving a read from a fallback side, which would otherwise serve data older than a write the
tenant already saw acknowledged.
"""

from __future__ import annotations

from typing import Protocol

from buffer_worker.intent import Intent
from routing.phases import Side


class BufferUnavailableError(Exception):
    """The intent could not be made durable."""

    def __init__(self, tenant: str, detail: str) -> None:
        self.tenant = tenant
        self.detail = detail
        super().__init__(f"buffer unavailable for tenant {tenant!r}: {detail}")


class IntentSink(Protocol):
    async def start(self) -> None: ...

    def can_accept(self) -> bool:
        """False when an append would fail for sure (spool full): refuse the write before forwarding it."""

    def spooled(self, tenant: str) -> int:
        """Intents of `tenant` waiting in a local spool (not yet in Redis)."""

    def status(self) -> dict[str, object]:
        """Depth figures for readiness and metrics."""

    async def append(self, intent: Intent) -> None:
        """Make `intent` durable or raise `BufferUnavailableError`."""

    async def pending(self, tenant: str, target: Side) -> int:
        """How many intents toward `target` are appended but not yet applied for `tenant`."""

    async def close(self) -> None: ...
