"""The request as the executor sees it: read once from ASGI, immutable afterwards."""

from __future__ import annotations

from dataclasses import dataclass, replace

from proxy.dataplane.errors import PayloadTooLarge
from proxy.dataplane.types import Receive
from routing.phases import Side


class ClientDisconnected(Exception):
    """The client went away before its request body arrived; there is nobody to answer."""


@dataclass(frozen=True, slots=True)
class ProxyRequest:
    method: str
    raw_path: str  # as received (percent-encoding kept), without query
    query: str
    headers: list[tuple[bytes, bytes]]  # lower-cased names, as the ASGI server gives them
    body: bytes
    tenant: str | None
    client_host: str | None
    scheme: str
    new_body: bytes | None = None  # SQL endpoints: the body rewritten for `new`'s dialect
    sql_read: bool = False  # a SQL endpoint request whose statements only read: safe to shadow

    def body_for(self, side: Side) -> bytes:
        return self.new_body if side is Side.NEW and self.new_body is not None else self.body

    def for_side(self, side: Side) -> ProxyRequest:
        """This request as it is sent to `side` (the shadow process gets the body it must send)."""
        if side is Side.NEW and self.new_body is not None:
            return replace(self, body=self.new_body, new_body=None)
        return self

    @property
    def mirror_tenant(self) -> str:
        # Requests without a tenant follow default_phase; their intents use "" (never a valid tenant id).
        return self.tenant or ""


async def read_body(receive: Receive, *, limit: int, declared_length: int | None) -> bytes:
    """Read the whole request body, refusing more than `limit` bytes before and while reading."""
    if declared_length is not None and declared_length > limit:
        raise PayloadTooLarge(
            f"request body of {declared_length} bytes exceeds max_body_bytes ({limit})", limit=limit
        )
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientDisconnected
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        if len(body) > limit:
            raise PayloadTooLarge(f"request body exceeds max_body_bytes ({limit})", limit=limit)
        return body
    chunks = [body]
    size = len(body)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds max_body_bytes ({limit})", limit=limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
