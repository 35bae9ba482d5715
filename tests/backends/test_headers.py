"""Reverse-proxy header handling: hop-by-hop fields, forwarded-* fields, per-backend rewrites."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from backends.headers import HOP_BY_HOP, RequestHeaderRewriter, response_headers
from config.settings import HeaderRewrite

HOP_NAMES = [
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
]


def build(
    headers: list[tuple[bytes, bytes]],
    *,
    rewrite: HeaderRewrite | None = None,
    client_host: str | None = "10.0.0.9",
    scheme: str = "https",
) -> list[tuple[str, str]]:
    rewriter = RequestHeaderRewriter(rewrite if rewrite is not None else HeaderRewrite())
    return rewriter.build(headers, client_host=client_host, scheme=scheme)


def values(out: list[tuple[str, str]], name: str) -> list[str]:
    return [v for n, v in out if n.lower() == name.lower()]


def names(out: list[tuple[str, str]]) -> list[str]:
    return [n.lower() for n, _ in out]


def test_hop_by_hop_constant() -> None:
    assert {n.encode() for n in HOP_NAMES} == HOP_BY_HOP


# --- requests -------------------------------------------------------------------------------------------


def test_plain_request_headers_pass_through_in_order() -> None:
    out = build(
        [
            (b"accept", b"application/json"),
            (b"x-tenant-id", b"acme"),
            (b"accept", b"text/plain"),
            (b"authorization", b"Bearer abc"),
            (b"cookie", b"a=1"),
        ],
        client_host="10.0.0.9",
        scheme="https",
    )
    assert out == [
        ("accept", "application/json"),
        ("x-tenant-id", "acme"),
        ("accept", "text/plain"),
        ("authorization", "Bearer abc"),
        ("cookie", "a=1"),
        ("x-forwarded-for", "10.0.0.9"),
        ("x-forwarded-proto", "https"),
    ]
    assert all(isinstance(n, str) and isinstance(v, str) for n, v in out)


@pytest.mark.parametrize("name", HOP_NAMES)
def test_request_hop_by_hop_dropped(name: str) -> None:
    out = build([(b"accept", b"*/*"), (name.encode(), b"whatever"), (b"x-keep", b"1")])
    assert name not in names(out)
    assert ("accept", "*/*") in out
    assert ("x-keep", "1") in out


@pytest.mark.parametrize("name", ["host", "content-length", "expect"])
def test_request_owned_fields_dropped(name: str) -> None:
    out = build([(name.encode(), b"value"), (b"x-keep", b"1")])
    assert name not in names(out)
    assert ("x-keep", "1") in out


def test_headers_named_in_connection_are_dropped() -> None:
    out = build(
        [
            (b"connection", b"keep-alive, X-Custom ,  x-other"),
            (b"x-custom", b"1"),
            (b"x-other", b"2"),
            (b"x-keep", b"3"),
        ]
    )
    assert "x-custom" not in names(out)
    assert "x-other" not in names(out)
    assert "connection" not in names(out)
    assert ("x-keep", "3") in out


def test_connection_tokens_from_several_connection_lines() -> None:
    out = build(
        [
            (b"connection", b"x-a"),
            (b"x-a", b"1"),
            (b"x-b", b"2"),
            (b"connection", b"X-B,,"),
            (b"x-c", b"3"),
        ]
    )
    assert names(out)[:1] == ["x-c"]
    assert "x-a" not in names(out) and "x-b" not in names(out)


def test_without_connection_header_nothing_extra_is_dropped() -> None:
    out = build([(b"close", b"1"), (b"keep", b"2")])
    assert ("close", "1") in out and ("keep", "2") in out


def test_x_forwarded_for_is_appended_to_existing() -> None:
    out = build([(b"x-forwarded-for", b"203.0.113.7, 198.51.100.2")], client_host="10.0.0.9")
    assert values(out, "x-forwarded-for") == ["203.0.113.7, 198.51.100.2, 10.0.0.9"]


def test_x_forwarded_for_is_set_without_existing() -> None:
    out = build([], client_host="2001:db8::1")
    assert values(out, "x-forwarded-for") == ["2001:db8::1"]


def test_x_forwarded_for_without_client_host() -> None:
    out = build([(b"x-forwarded-for", b"1.2.3.4")], client_host=None)
    # The client's value is never passed through as is, and nothing is invented.
    assert values(out, "x-forwarded-for") == []
    assert values(out, "x-forwarded-proto") == ["https"]


def test_x_forwarded_for_combines_several_lines() -> None:
    out = build([(b"x-forwarded-for", b"1.1.1.1"), (b"x-forwarded-for", b"2.2.2.2")], client_host="3.3.3.3")
    assert values(out, "x-forwarded-for") == ["1.1.1.1, 2.2.2.2, 3.3.3.3"]


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_x_forwarded_proto_is_ours(scheme: str) -> None:
    out = build([(b"x-forwarded-proto", b"gopher")], scheme=scheme)
    assert values(out, "x-forwarded-proto") == [scheme]


def test_x_forwarded_host_comes_from_host() -> None:
    out = build([(b"host", b"api.example.com:8443"), (b"x-forwarded-host", b"evil.example")])
    assert values(out, "x-forwarded-host") == ["api.example.com:8443"]
    assert values(out, "host") == []


def test_client_x_forwarded_host_dropped_without_host() -> None:
    out = build([(b"x-forwarded-host", b"evil.example")])
    assert values(out, "x-forwarded-host") == []


def test_client_forwarded_fields_are_never_passed_as_is() -> None:
    out = build(
        [
            (b"x-forwarded-for", b"6.6.6.6"),
            (b"x-forwarded-proto", b"http"),
            (b"x-forwarded-host", b"evil"),
            (b"host", b"good"),
        ],
        client_host="10.0.0.1",
        scheme="https",
    )
    assert ("x-forwarded-for", "6.6.6.6") not in out
    assert ("x-forwarded-proto", "http") not in out
    assert ("x-forwarded-host", "evil") not in out
    forwarded = [(n, v) for n, v in out if n.startswith("x-forwarded-")]
    assert forwarded == [
        ("x-forwarded-for", "6.6.6.6, 10.0.0.1"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "good"),
    ]


def test_rewrite_set_overrides_client_header_case_insensitively() -> None:
    rewrite = HeaderRewrite(set={"Authorization": "Bearer backend", "X-Api-Key": "k1"}, remove=[])
    out = build(
        [(b"authorization", b"Bearer client"), (b"x-api-key", b"client-key"), (b"accept", b"*/*")],
        rewrite=rewrite,
    )
    assert values(out, "authorization") == ["Bearer backend"]
    assert values(out, "x-api-key") == ["k1"]
    assert ("Authorization", "Bearer backend") in out
    assert ("accept", "*/*") in out
    # set headers come after the forwarded-* fields
    assert out[-2:] == [("Authorization", "Bearer backend"), ("X-Api-Key", "k1")]


def test_rewrite_set_adds_header_client_did_not_send() -> None:
    out = build([(b"accept", b"*/*")], rewrite=HeaderRewrite(set={"X-Source": "cutover"}))
    assert values(out, "x-source") == ["cutover"]


def test_rewrite_remove_drops_case_insensitively() -> None:
    rewrite = HeaderRewrite(remove=["Cookie", "X-DEBUG"])
    out = build(
        [(b"cookie", b"a=1"), (b"cookie", b"b=2"), (b"x-debug", b"1"), (b"accept", b"*/*")], rewrite=rewrite
    )
    assert values(out, "cookie") == []
    assert values(out, "x-debug") == []
    assert ("accept", "*/*") in out


def test_rewrite_remove_and_set_together() -> None:
    rewrite = HeaderRewrite(set={"X-Env": "prod"}, remove=["x-internal"])
    out = build([(b"x-internal", b"secret"), (b"x-env", b"dev"), (b"x-other", b"o")], rewrite=rewrite)
    assert values(out, "x-internal") == []
    assert values(out, "x-env") == ["prod"]
    assert values(out, "x-other") == ["o"]


def test_rewriter_is_reusable_and_does_not_mutate_input() -> None:
    rewriter = RequestHeaderRewriter(HeaderRewrite(set={"X-A": "1"}))
    headers = [(b"connection", b"x-b"), (b"x-b", b"2"), (b"x-c", b"3")]
    snapshot = list(headers)
    first = rewriter.build(headers, client_host="1.1.1.1", scheme="http")
    second = rewriter.build(headers, client_host="1.1.1.1", scheme="http")
    assert first == second
    assert headers == snapshot
    assert first == [
        ("x-c", "3"),
        ("x-forwarded-for", "1.1.1.1"),
        ("x-forwarded-proto", "http"),
        ("X-A", "1"),
    ]


def test_non_ascii_bytes_are_decoded_as_latin1() -> None:
    out = build([(b"x-name", b"caf\xe9")])
    assert ("x-name", "café") in out


# --- responses ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", HOP_NAMES)
def test_response_hop_by_hop_dropped(name: str) -> None:
    raw = [(b"content-type", b"application/json"), (name.encode(), b"x"), (b"x-keep", b"1")]
    assert response_headers(raw) == [(b"content-type", b"application/json"), (b"x-keep", b"1")]


@pytest.mark.parametrize("name", [b"Connection", b"TRANSFER-ENCODING", b"Keep-Alive", b"Proxy-Authenticate"])
def test_response_hop_by_hop_dropped_case_insensitively(name: bytes) -> None:
    raw = [(name, b"x"), (b"X-Keep", b"1")]
    assert response_headers(raw) == [(b"X-Keep", b"1")]


def test_response_headers_named_in_connection_dropped() -> None:
    raw = [
        (b"Connection", b"close, X-Backend-Hop"),
        (b"X-Backend-Hop", b"1"),
        (b"x-backend-hop", b"2"),
        (b"Content-Type", b"text/plain"),
    ]
    assert response_headers(raw) == [(b"Content-Type", b"text/plain")]


def test_response_headers_otherwise_unchanged() -> None:
    raw = [
        (b"Content-Type", b"application/json"),
        (b"Set-Cookie", b"a=1"),
        (b"Set-Cookie", b"b=2"),
        (b"Content-Length", b"12"),
        (b"Host", b"backend"),
        (b"X-Forwarded-For", b"1.2.3.4"),
    ]
    assert response_headers(raw) == raw


def test_response_headers_accepts_a_one_shot_iterable() -> None:
    def gen() -> Iterator[tuple[bytes, bytes]]:
        yield (b"x-a", b"1")
        yield (b"connection", b"x-a")
        yield (b"x-b", b"2")

    assert response_headers(gen()) == [(b"x-b", b"2")]


def test_response_headers_empty() -> None:
    assert response_headers([]) == []
