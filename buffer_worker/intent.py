"""The update intent: one acknowledged write, as the mirrored side must replay it.

Wire format: three Redis Stream fields per entry, `m` (orjson metadata), `b` (request body bytes) and
`r` (authoritative response body bytes). Bodies stay raw bytes: no base64, no re-encoding cost.
The metadata's optional `tp` is the W3C traceparent of the write's request span: the worker's apply
continues that trace. Readers ignore metadata keys they do not know, so adding one keeps the version.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

from routing.phases import Side

WIRE_VERSION = 1


class IntentDecodeError(ValueError):
    """A stream entry is not a valid intent (wrong version, missing field, bad JSON)."""


@dataclass(frozen=True, slots=True)
class Intent:
    tenant: str
    target: Side  # the side the intent is applied to (the mirror)
    method: str
    path: str  # path as received, without the backend base path
    query: str
    headers: tuple[tuple[str, str], ...]  # the request headers the apply needs (content type etc.)
    body: bytes
    status: int  # the authoritative side's status
    response_body: bytes  # for ids the authoritative side assigned
    response_headers: tuple[tuple[str, str], ...] = ()
    intent_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created_ms: int = field(default_factory=lambda: time.time_ns() // 1_000_000)
    traceparent: str | None = None

    def to_fields(self) -> dict[bytes, bytes]:
        meta: dict[str, Any] = {
            "v": WIRE_VERSION,
            "id": self.intent_id,
            "t": self.tenant,
            "to": self.target.value,
            "m": self.method,
            "p": self.path,
            "q": self.query,
            "h": self.headers,
            "s": self.status,
            "rh": self.response_headers,
            "c": self.created_ms,
        }
        if self.traceparent is not None:
            meta["tp"] = self.traceparent
        return {b"m": orjson.dumps(meta), b"b": self.body, b"r": self.response_body}

    @classmethod
    def from_fields(cls, fields: dict[bytes, bytes]) -> Intent:
        try:
            meta = orjson.loads(fields[b"m"])
            if not isinstance(meta, dict):
                raise IntentDecodeError("intent metadata is not a JSON object")
            if meta.get("v") != WIRE_VERSION:
                raise IntentDecodeError(f"unsupported intent wire version {meta.get('v')!r}")
            return cls(
                tenant=meta["t"],
                target=Side(meta["to"]),
                method=meta["m"],
                path=meta["p"],
                query=meta["q"],
                headers=tuple((k, v) for k, v in meta["h"]),
                body=fields.get(b"b", b""),
                status=int(meta["s"]),
                response_body=fields.get(b"r", b""),
                response_headers=tuple((k, v) for k, v in meta.get("rh", ())),
                intent_id=meta["id"],
                created_ms=int(meta["c"]),
                traceparent=meta.get("tp"),
            )
        except (KeyError, TypeError, ValueError, orjson.JSONDecodeError) as exc:
            if isinstance(exc, IntentDecodeError):
                raise
            raise IntentDecodeError(f"malformed intent entry: {exc!r}") from exc
