"""The update intent: one acknowledged write, as the mirrored side must replay it.

Wire format: three Redis Stream fields per entry, `m` (JSON metadata), `b` (request body bytes) and
`r` (authoritative response body bytes). Bodies stay raw bytes: no base64, no re-encoding cost.
The metadata's optional `tp` is the W3C traceparent of the write's request span: the worker's apply
continues that trace. Readers ignore metadata keys they do not know, so adding one keeps the version.

Intents are msgspec structs: the proxy builds one per mirrored write and the worker decodes one per
entry, and a frozen dataclass with orjson costs about five times as much to build and to decode
(BENCHMARKS.md, intent codec). The metadata is decoded straight into a typed struct, so a wrong
type is a decode error, not a later crash.
"""

from __future__ import annotations

import os
import time

import msgspec

from routing.phases import Side

WIRE_VERSION = 1


class IntentDecodeError(ValueError):
    """A stream entry is not a valid intent (wrong version, missing field, bad JSON)."""


def _new_id() -> str:
    return os.urandom(16).hex()  # 128 random bits, like uuid4, at a fraction of its cost


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


Headers = tuple[tuple[str, str], ...]


class Intent(msgspec.Struct, frozen=True, kw_only=True):
    tenant: str
    target: Side  # the side the intent is applied to (the mirror)
    method: str
    path: str  # path as received, without the backend base path
    query: str
    headers: Headers  # the request headers the apply needs (content type etc.)
    body: bytes
    status: int  # the authoritative side's status
    response_body: bytes  # for ids the authoritative side assigned
    response_headers: Headers = ()
    intent_id: str = msgspec.field(default_factory=_new_id)
    created_ms: int = msgspec.field(default_factory=_now_ms)
    traceparent: str | None = None

    def to_fields(self) -> dict[bytes, bytes]:
        meta = _Meta(
            v=WIRE_VERSION,
            id=self.intent_id,
            t=self.tenant,
            to=self.target,
            m=self.method,
            p=self.path,
            q=self.query,
            h=self.headers,
            s=self.status,
            rh=self.response_headers,
            c=self.created_ms,
            tp=self.traceparent,
        )
        return {b"m": _ENCODER.encode(meta), b"b": self.body, b"r": self.response_body}

    @classmethod
    def from_fields(cls, fields: dict[bytes, bytes]) -> Intent:
        raw = fields.get(b"m")
        if raw is None:
            raise IntentDecodeError("malformed intent entry: no metadata field 'm'")
        try:
            meta = _DECODER.decode(raw)
        except msgspec.DecodeError as exc:  # ValidationError (wrong shape or type) included
            raise IntentDecodeError(f"malformed intent entry: {_version_problem(raw) or exc}") from exc
        if meta.v != WIRE_VERSION:
            raise IntentDecodeError(f"unsupported intent wire version {meta.v!r}")
        return cls(
            tenant=meta.t,
            target=meta.to,
            method=meta.m,
            path=meta.p,
            query=meta.q,
            headers=meta.h,
            body=fields.get(b"b", b""),
            status=meta.s,
            response_body=fields.get(b"r", b""),
            response_headers=meta.rh,
            intent_id=meta.id,
            created_ms=meta.c,
            traceparent=meta.tp,
        )


class _Meta(msgspec.Struct, frozen=True, omit_defaults=True):
    """The `m` field. Short keys: it is stored once per buffered write."""

    v: int
    id: str
    t: str
    to: Side
    m: str
    p: str
    q: str
    h: Headers
    s: int
    c: int
    rh: Headers = ()
    tp: str | None = None


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(_Meta)


def _version_problem(raw: bytes) -> str | None:
    """Name the version when an entry of another wire version fails to decode as this one."""
    try:
        version = msgspec.json.decode(raw, type=dict[str, object]).get("v")
    except msgspec.DecodeError:
        return None
    return None if version == WIRE_VERSION else f"unsupported intent wire version {version!r}"
