"""What a backend's answer body says, for comparing it and for showing it to an operator.

Bodies are read as sent (the backend client never decompresses: it is a transparent proxy), so whoever
reads one undoes its `Content-Encoding` here: gzip, deflate, and br when the `brotli` module is
installed. Decoding is bounded: a compressed body can expand a thousandfold.

`excerpt` is the short, printable text an operator sees of an error answer (a dead letter's, a failed
repair's): decompressed, decoded by its charset (a bad byte becomes U+FFFD), whitespace folded, cut to a
few hundred characters; a body that is not text, or whose encoding cannot be undone, is shown as
`<binary, N bytes>` and never as its raw bytes.
"""

from __future__ import annotations

import codecs
import importlib
import re
import zlib
from typing import Any

try:  # optional: without it a br body cannot be decoded (said so, never shown raw)
    brotli: Any = importlib.import_module("brotli")
except ImportError:  # pragma: no cover - installed with the project
    brotli = None

EXCERPT_CHARS = 300
# Enough decoded bytes for an excerpt in any charset (at most 4 bytes a character), with room for
# the whitespace folding takes out.
_EXCERPT_BYTES = 8 * EXCERPT_CHARS
_BINARY_TYPES = ("image/", "audio/", "video/", "font/", "application/octet-stream", "application/zip")
# Not text: control characters (other than whitespace) over 2 % of it, or bad bytes (U+FFFD) over
# 20 %. Random bytes come out at ~24 % controls as latin-1 and over half bad bytes as UTF-8; a text
# has no controls, and a stray bad byte in a short one is ~10 %.
_CONTROL_SHARE, _BAD_SHARE = 0.02, 0.2
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_WHITESPACE = re.compile(r"\s+")


class UndecodableContent(Exception):
    """A body whose content-encoding cannot be undone (unknown coding, corrupt, or too large)."""

    def __init__(self, reason: str, *, too_large: bool = False) -> None:
        super().__init__(reason)
        self.too_large = too_large


def codings_of(content_encoding: str) -> list[str]:
    """The codings a `Content-Encoding` value lists, in the order they were applied."""
    return [part.strip().lower() for part in content_encoding.split(",") if part.strip()]


def decode_content(body: bytes, codings: list[str], max_bytes: int, *, partial: bool = False) -> bytes:
    """`body` with `codings` undone, last applied first (RFC 9110 §8.4). More than `max_bytes` decoded
    raises `UndecodableContent(too_large=True)`, or with `partial` returns the first `max_bytes`."""
    for coding in reversed(codings):
        if coding == "identity":
            continue
        if coding in ("gzip", "x-gzip"):
            body = _inflate(body, 16 + zlib.MAX_WBITS, max_bytes, partial)
        elif coding == "deflate":
            try:  # "deflate" is the zlib format; some servers send raw deflate
                body = _inflate(body, zlib.MAX_WBITS, max_bytes, partial)
            except UndecodableContent:
                body = _inflate(body, -zlib.MAX_WBITS, max_bytes, partial)
        elif coding == "br" and brotli is not None:
            body = _unbrotli(body, max_bytes, partial)
        else:
            raise UndecodableContent(f"content-encoding {coding!r} not supported")
    return body


def excerpt(body: bytes, headers: Any, limit: int = EXCERPT_CHARS) -> str:
    """A printable excerpt of an answer body; `headers` is any mapping with `.get` (case-insensitive
    names, as the backend client's answers have)."""
    if not body:
        return "<empty>"
    received = len(body)
    content_type = str(headers.get("content-type") or "")
    codings = [c for c in codings_of(str(headers.get("content-encoding") or "")) if c != "identity"]
    if codings:
        try:  # one byte more than is shown tells whether there is more
            body = decode_content(body, codings, _EXCERPT_BYTES + 1, partial=True)
        except UndecodableContent as exc:
            return f"<binary, {received} bytes: {exc}>"
    if content_type.lower().startswith(_BINARY_TYPES):
        return f"<binary, {received} bytes>"
    more = len(body) > _EXCERPT_BYTES
    text = _decoded(body[:_EXCERPT_BYTES], _charset(content_type), complete=not more)
    controls, bad = len(_CONTROL.findall(text)), text.count("\ufffd")
    if controls > _CONTROL_SHARE * len(text) or bad > _BAD_SHARE * len(text):
        return f"<binary, {received} bytes>"
    text = _CONTROL.sub("\ufffd", _WHITESPACE.sub(" ", text)).strip()
    cut = more or len(text) > limit
    return text[:limit] + ("…" if cut else "")


def _charset(content_type: str) -> str:
    for parameter in content_type.split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"') or "utf-8"
            try:
                codec = codecs.lookup(charset)
            except LookupError:
                return "utf-8"
            # Not a bytes-to-bytes codec such as base64, which a charset never names.
            return codec.name if getattr(codec, "_is_text_encoding", True) else "utf-8"
    return "utf-8"


def _decoded(data: bytes, charset: str, *, complete: bool) -> str:
    # Incremental, so a character cut at the excerpt's end is dropped rather than shown as U+FFFD.
    try:
        return str(codecs.getincrementaldecoder(charset)(errors="replace").decode(data, final=complete))
    except UnicodeError:  # e.g. UTF-16 without its byte-order mark: read as UTF-8 then
        return data.decode(errors="replace")


def _inflate(body: bytes, wbits: int, max_bytes: int, partial: bool) -> bytes:
    try:
        inflater = zlib.decompressobj(wbits)
        out = inflater.decompress(body, max_bytes + 1)
    except zlib.error:
        raise UndecodableContent("body is not valid for its content-encoding") from None
    return _bounded(out, max_bytes, partial)


def _unbrotli(body: bytes, max_bytes: int, partial: bool) -> bytes:
    try:
        try:
            out = brotli.Decompressor().process(body, output_buffer_limit=max_bytes + 1)
        except TypeError:  # brotli < 1.1 has no output limit
            out = brotli.decompress(body)
    except brotli.error:
        raise UndecodableContent("body is not valid brotli") from None
    return _bounded(bytes(out), max_bytes, partial)


def _bounded(out: bytes, max_bytes: int, partial: bool) -> bytes:
    if len(out) <= max_bytes:
        return out
    if partial:
        return out[:max_bytes]
    raise UndecodableContent(f"decoded body larger than {max_bytes} bytes", too_large=True)
