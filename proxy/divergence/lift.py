"""Lifting: turn one side's raw answer into what the differ compares.

The content-encoding is undone (gzip, deflate, and br when the `brotli` module is installed), the body is
parsed as JSON when it is JSON, otherwise it is reduced to a digest; the headers the rules compare are
kept, with lower-case names. Decoding is bounded: an answer that inflates beyond the comparison limit is
not compared (a compressed body can expand a thousandfold).
"""

from __future__ import annotations

import hashlib
import importlib
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import orjson

try:  # optional: br bodies are compared by digest of the encoded bytes without it
    brotli: Any = importlib.import_module("brotli")
except ImportError:  # pragma: no cover - installed in the test environment
    brotli = None


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


class _Undecodable(Exception):
    def __init__(self, note: str, *, too_large: bool = False) -> None:
        super().__init__(note)
        self.too_large = too_large


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
            encodings.extend(part.strip().lower() for part in value.split(",") if part.strip())
        if name in keep_headers:
            kept[name] = f"{kept[name]}, {value}" if name in kept else value
    if error is not None or body is None:
        return Lifted(status, error, kept)
    note = None
    if encodings:
        try:
            body = _decode(body, encodings, max_bytes)
        except _Undecodable as exc:
            note = str(exc)
            if exc.too_large:
                return Lifted(status, None, kept, note=note)
    digest = hashlib.blake2b(body, digest_size=16).hexdigest()
    if note is None and body:
        try:
            return Lifted(status, None, kept, BodyKind.JSON, orjson.loads(body), body, digest)
        except orjson.JSONDecodeError:
            pass
    return Lifted(status, None, kept, BodyKind.BYTES, None, body, digest, note)


def _decode(body: bytes, encodings: list[str], max_bytes: int) -> bytes:
    # Codings are listed in the order they were applied (RFC 9110 §8.4): undo them last to first.
    for coding in reversed(encodings):
        if coding == "identity":
            continue
        if coding in ("gzip", "x-gzip"):
            body = _inflate(body, 16 + zlib.MAX_WBITS, max_bytes)
        elif coding == "deflate":
            try:  # "deflate" is the zlib format; some servers send raw deflate
                body = _inflate(body, zlib.MAX_WBITS, max_bytes)
            except zlib.error:
                body = _inflate(body, -zlib.MAX_WBITS, max_bytes)
        elif coding == "br" and brotli is not None:
            body = _unbrotli(body, max_bytes)
        else:
            raise _Undecodable(f"content-encoding {coding!r} not supported; compared as encoded bytes")
    return body


def _inflate(body: bytes, wbits: int, max_bytes: int) -> bytes:
    try:
        inflater = zlib.decompressobj(wbits)
        out = inflater.decompress(body, max_bytes + 1)
    except zlib.error:
        if wbits == zlib.MAX_WBITS:
            raise
        raise _Undecodable("body is not valid for its content-encoding; compared as bytes") from None
    if len(out) > max_bytes:
        raise _Undecodable(f"decoded body larger than {max_bytes} bytes; not compared", too_large=True)
    return out


def _unbrotli(body: bytes, max_bytes: int) -> bytes:
    try:
        try:
            out = brotli.Decompressor().process(body, output_buffer_limit=max_bytes + 1)
        except TypeError:  # brotli < 1.1 has no output limit
            out = brotli.decompress(body)
    except brotli.error:
        raise _Undecodable("body is not valid brotli; compared as bytes") from None
    if len(out) > max_bytes:
        raise _Undecodable(f"decoded body larger than {max_bytes} bytes; not compared", too_large=True)
    return bytes(out)
