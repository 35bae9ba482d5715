"""The buffer interface the proxy hands acknowledged writes to.

`append` returns only once the intent is durable (in Redis or the local spool); the proxy acknowledges
the client after that. `refusal` is asked *before* a mirroring write is forwarded: when neither Redis nor
the spool can take an intent, the write is refused and the authoritative side never sees it. `pending`
answers whether intents toward a side are still unapplied for a tenant: the proxy asks before serving a
read from a fallback side, which would otherwise serve data older than a write the tenant already saw
acknowledged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from buffer_worker.intent import Intent
from routing.phases import Side


class BufferUnavailableError(Exception):
    """The intent could not be made durable."""

    def __init__(self, tenant: str, detail: str) -> None:
        self.tenant = tenant
        self.detail = detail
        super().__init__(f"buffer unavailable for tenant {tenant!r}: {detail}")


@dataclass(frozen=True)
class Refusal:
    """Why an append would fail now: `code` is the client's error code, `detail` the sentence."""

    code: str  # buffer_full | buffer_unavailable
    detail: str


class IntentSink(Protocol):
    async def start(self) -> None: ...

    def refusal(self) -> Refusal | None:
        """Not None when an append would fail for sure: the write is refused before it is forwarded."""

    def spooled(self, tenant: str) -> int:
        """Intents of `tenant` waiting in a local spool (not yet in Redis)."""

    def status(self) -> dict[str, object]:
        """Depth and health figures for readiness and metrics (`accepting`, `spooled`, `spool_bytes`, and
        where known `redis_reachable`, `spool_writable`, `spool_problem`)."""

    async def append(self, intent: Intent) -> None:
        """Make `intent` durable or raise `BufferUnavailableError`."""

    async def pending(self, tenant: str, target: Side) -> int:
        """How many intents toward `target` are appended but not yet applied for `tenant`."""

    async def close(self) -> None: ...
