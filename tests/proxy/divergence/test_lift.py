"""Lifting: content-encodings undone (bounded), JSON parsed, other bodies digested, headers selected."""

from __future__ import annotations

import gzip
import zlib

import brotli
import orjson
import pytest

from proxy.shadow.differ import diff
from proxy.shadow.lift import BodyKind, lift

DOC = {"items": [{"id": i, "name": f"item {i}"} for i in range(20)]}
RAW = orjson.dumps(DOC)


def _raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


ENCODED = [
    ("gzip", gzip.compress(RAW)),
    ("x-gzip", gzip.compress(RAW)),
    ("deflate", zlib.compress(RAW)),
    ("deflate", _raw_deflate(RAW)),
    ("br", brotli.compress(RAW)),
    ("identity", RAW),
    ("br, gzip", gzip.compress(brotli.compress(RAW))),
    ("GZIP", gzip.compress(RAW)),
]


@pytest.mark.parametrize(("coding", "body"), ENCODED, ids=[f"{c}-{i}" for i, (c, _) in enumerate(ENCODED)])
def test_encodings_are_undone(coding: str, body: bytes) -> None:
    lifted = lift(200, body, [(b"Content-Encoding", coding.encode())])
    assert lifted.kind is BodyKind.JSON
    assert lifted.document == DOC
    assert lifted.body == RAW
    assert lifted.note is None


def test_compressed_and_plain_answers_compare_equal() -> None:
    served = lift(200, gzip.compress(RAW), [(b"content-encoding", b"gzip")])
    shadow = lift(200, RAW, [])
    assert diff(served, shadow).equal


def test_unknown_encoding_is_compared_as_bytes_with_a_note() -> None:
    lifted = lift(200, b"\x28\xb5\x2f\xfd...", [(b"content-encoding", b"zstd")])
    assert lifted.kind is BodyKind.BYTES
    assert lifted.note is not None
    assert "zstd" in lifted.note


def test_corrupt_gzip_is_compared_as_bytes() -> None:
    lifted = lift(200, b"\x1f\x8b not really gzip", [(b"content-encoding", b"gzip")])
    assert lifted.kind is BodyKind.BYTES
    assert lifted.note is not None


@pytest.mark.parametrize("coding", ["gzip", "br"])
def test_decompression_is_bounded(coding: str) -> None:
    bomb = b"\0" * 4_000_000
    body = gzip.compress(bomb) if coding == "gzip" else brotli.compress(bomb)
    lifted = lift(200, body, [(b"content-encoding", coding.encode())], max_bytes=100_000)
    assert lifted.kind is BodyKind.ABSENT
    assert lifted.note is not None
    assert "larger than" in lifted.note
    assert lifted.body is None


def test_non_json_body_is_digested() -> None:
    a, b = lift(200, b"plain text", []), lift(200, b"plain text", [])
    assert a.kind is BodyKind.BYTES
    assert a.document is None
    assert a.digest == b.digest
    assert a.digest is not None
    assert lift(200, b"", []).kind is BodyKind.BYTES


def test_selected_headers_kept_with_lower_case_names_and_joined() -> None:
    raw = [(b"ETag", b' "a" '), (b"Vary", b"Accept"), (b"vary", b"Origin"), (b"X-Trace", b"1")]
    lifted = lift(200, b"{}", raw, keep_headers=frozenset({"etag", "vary"}))
    assert lifted.headers == {"etag": '"a"', "vary": "Accept, Origin"}


def test_error_and_uncaptured_bodies() -> None:
    failed = lift(None, None, [], error="timeout")
    assert (failed.error, failed.kind) == ("timeout", BodyKind.ABSENT)
    assert lift(200, None, []).kind is BodyKind.ABSENT
