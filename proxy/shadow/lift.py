"""Lifting: turn one side's raw answer into what the differ compares.

The content-encoding is undone (`backends.content`: gzip, deflate, br), the body is
parsed as JSON when it is JSON, otherwise it is reduced to a digest; the headers the rules compare are
kept, with lower-case names. Decoding is bounded: an answer that inflates beyond the comparison limit is
not compared (a compressed body can expand a thousandfold).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import orjson

from backends.content import UndecodableContent, codings_of, decode_content


class BodyKind(Enum):
    ABSENT = "absent"  # not captured (too large, or no answer)
    JSON = "json"
    BYTES = "bytes"  # not JSON: compared by digest


@dataclass(frozen=True, slots=True)
class Lifted:
    status: int | None
    error: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    kind: BodyKind = BodyKind.ABSENT
    document: Any = None  # the parsed JSON when kind is JSON
    body: bytes | None = None  # the decoded body (kept for storage)
    digest: str | None = None
    note: str | None = None  # why a body could not be decoded or was not compared


def lift(
    status: int | None,
    body: bytes | None,
    headers: Sequence[tuple[bytes, bytes]],
    *,
    error: str | None = None,
    keep_headers: frozenset[str] = frozenset(),
    max_bytes: int = 1_048_576,
) -> Lifted:
    kept: dict[str, str] = {}
    encodings: list[str] = []
    for raw_name, raw_value in headers:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1").strip()
        if name == "content-encoding":
            encodings.extend(codings_of(value))
        if name in keep_headers:
            kept[name] = f"{kept[name]}, {value}" if name in kept else value
    if error is not None or body is None:
        return Lifted(status, error, kept)
    note = None
    if encodings:
        try:
            body = decode_content(body, encodings, max_bytes)
        except UndecodableContent as exc:
            if exc.too_large:
                return Lifted(status, None, kept, note=f"{exc}; not compared")
            note = f"{exc}; compared as encoded bytes"
    digest = hashlib.blake2b(body, digest_size=16).hexdigest()
    if note is None and body:
        try:
            return Lifted(status, None, kept, BodyKind.JSON, orjson.loads(body), body, digest)
        except orjson.JSONDecodeError:
            pass
    return Lifted(status, None, kept, BodyKind.BYTES, None, body, digest, note)
