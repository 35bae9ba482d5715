"""Excerpts of answer bodies: decompressed, decoded by charset, short, and never raw bytes."""

from __future__ import annotations

import gzip
import os
import zlib

import brotli
import pytest

from backends.content import EXCERPT_CHARS, excerpt

TEXT = '{"error": "name must not be empty", "field": "name"}'


@pytest.mark.parametrize(
    ("coding", "body"),
    [
        ("gzip", gzip.compress(TEXT.encode())),
        ("deflate", zlib.compress(TEXT.encode())),
        ("br", brotli.compress(TEXT.encode())),
        ("br, gzip", gzip.compress(brotli.compress(TEXT.encode()))),
        ("identity", TEXT.encode()),
    ],
)
def test_the_content_encoding_is_undone(coding: str, body: bytes) -> None:
    headers = {"content-type": "application/json", "content-encoding": coding}
    assert excerpt(body, headers) == TEXT


def test_text_is_decoded_by_its_charset_with_replacement_characters_for_bad_bytes() -> None:
    assert (
        excerpt("déjà vu".encode("latin-1"), {"content-type": "text/plain; charset=ISO-8859-1"}) == "déjà vu"
    )
    assert excerpt(b"caf\xc3\xa9 \xff ok", {"content-type": "text/plain"}) == "café \ufffd ok"
    assert excerpt(b"x", {"content-type": "text/plain; charset=no-such-charset"}) == "x"


def test_whitespace_is_folded_and_a_long_body_is_cut() -> None:
    assert excerpt(b"<html>\n  <body>\r\n\tfailed</body>", {}) == "<html> <body> failed</body>"
    shown = excerpt(("é" * 5000).encode(), {"content-type": "text/plain"})
    assert shown == "é" * EXCERPT_CHARS + "…"


def test_binary_or_undecodable_bodies_are_described_never_shown() -> None:
    noise = os.urandom(600)
    assert excerpt(noise, {}) == "<binary, 600 bytes>"
    assert excerpt(b"PNG....", {"content-type": "image/png"}) == "<binary, 7 bytes>"
    compressed = gzip.compress(TEXT.encode())
    # Compressed, but not said to be: the bytes are not text.
    assert excerpt(compressed, {"content-type": "application/json"}).startswith("<binary, ")
    assert excerpt(b"\x1f\x8b not gzip", {"content-encoding": "gzip"}).startswith("<binary, 11 bytes: ")
    assert "zstd" in excerpt(b"(\xb5/\xfd", {"content-encoding": "zstd"})
    assert excerpt(b"", {}) == "<empty>"


def test_a_compression_bomb_is_decoded_only_as_far_as_the_excerpt_needs() -> None:
    bomb = gzip.compress(b"a" * 5_000_000)
    assert excerpt(bomb, {"content-encoding": "gzip"}) == "a" * EXCERPT_CHARS + "…"
