"""Reverse-proxy header handling: hop-by-hop fields, forwarding fields, per-backend rewrites."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Sequence

import pytest
from pydantic import SecretStr

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
]


def build(
    headers: list[tuple[bytes, bytes]],
    *,
    rewrite: HeaderRewrite | None = None,
    client_host: str | None = "10.0.0.9",
    scheme: str = "https",
    trusted: Sequence[str] = (),
) -> list[tuple[str, str]]:
    rewriter = RequestHeaderRewriter(
        rewrite if rewrite is not None else HeaderRewrite(),
        trusted_proxies=[ipaddress.ip_network(network) for network in trusted],
    )
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
        ("x-real-ip", "10.0.0.9"),
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
    assert "x-a" not in names(out)
    assert "x-b" not in names(out)


def test_without_connection_header_nothing_extra_is_dropped() -> None:
    out = build([(b"close", b"1"), (b"keep", b"2")])
    assert ("close", "1") in out
    assert ("keep", "2") in out


CLIENT_FORWARDING = [
    (b"x-forwarded-for", b"203.0.113.7, 198.51.100.2"),
    (b"x-forwarded-for", b"192.0.2.1"),
    (b"x-forwarded-proto", b"gopher"),
    (b"x-forwarded-host", b"evil.example"),
    (b"x-forwarded-port", b"1"),
    (b"x-forwarded-prefix", b"/admin"),
    (b"forwarded", b"for=6.6.6.6;proto=http"),
    (b"x-real-ip", b"6.6.6.6"),
    (b"x-original-url", b"/admin/secret"),
    (b"x-rewrite-url", b"/admin/secret"),
    (b"x-original-host", b"evil.example"),
    (b"host", b"api.example.com:8443"),
]


def test_an_untrusted_clients_forwarding_fields_are_replaced_by_ours() -> None:
    out = build(CLIENT_FORWARDING, client_host="10.0.0.9", scheme="https")
    assert out == [
        ("x-forwarded-for", "10.0.0.9"),
        ("x-real-ip", "10.0.0.9"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "api.example.com:8443"),
    ]


def test_ipv6_peer() -> None:
    out = build([], client_host="2001:db8::1")
    assert values(out, "x-forwarded-for") == ["2001:db8::1"]
    assert values(out, "x-real-ip") == ["2001:db8::1"]


def test_without_client_host_nothing_is_invented() -> None:
    out = build([(b"x-forwarded-for", b"1.2.3.4"), (b"x-real-ip", b"1.2.3.4")], client_host=None)
    assert values(out, "x-forwarded-for") == []
    assert values(out, "x-real-ip") == []
    assert values(out, "x-forwarded-proto") == ["https"]


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_x_forwarded_proto_is_ours(scheme: str) -> None:
    out = build([(b"x-forwarded-proto", b"gopher")], scheme=scheme)
    assert values(out, "x-forwarded-proto") == [scheme]


def test_client_x_forwarded_host_dropped_without_host() -> None:
    out = build([(b"x-forwarded-host", b"evil.example")])
    assert values(out, "x-forwarded-host") == []


@pytest.mark.parametrize("peer", ["10.1.2.3", "::ffff:10.1.2.3", "fd00::7"])
def test_a_trusted_proxys_fields_pass_and_the_peer_is_appended(peer: str) -> None:
    out = build(CLIENT_FORWARDING, client_host=peer, trusted=["10.0.0.0/8", "fd00::/8"])
    assert values(out, "x-forwarded-for") == [f"203.0.113.7, 198.51.100.2, 192.0.2.1, {peer}"]
    assert values(out, "x-forwarded-proto") == ["gopher"]
    assert values(out, "x-forwarded-host") == ["evil.example"]
    assert values(out, "x-real-ip") == ["6.6.6.6"]
    assert values(out, "forwarded") == ["for=6.6.6.6;proto=http"]
    assert values(out, "x-original-url") == ["/admin/secret"]
    assert values(out, "host") == []


def test_a_trusted_proxy_that_sent_none_gets_ours() -> None:
    out = build([(b"host", b"h")], client_host="10.1.2.3", trusted=["10.0.0.0/8"], scheme="http")
    assert out == [
        ("x-forwarded-for", "10.1.2.3"),
        ("x-real-ip", "10.1.2.3"),
        ("x-forwarded-proto", "http"),
        ("x-forwarded-host", "h"),
    ]


@pytest.mark.parametrize("peer", ["10.1.2.3", "not-an-address", "2001:db8::1"])
def test_a_peer_outside_trusted_proxies_is_not_trusted(peer: str) -> None:
    out = build(CLIENT_FORWARDING, client_host=peer, trusted=["192.168.0.0/16"])
    assert values(out, "x-forwarded-for") == [peer]
    assert values(out, "forwarded") == []
    assert values(out, "x-original-url") == []


def test_proxy_authorization_passes() -> None:
    """cutover asks for no proxy credentials: they are for a proxy further in (RFC 9110 §11.7.2)."""
    out = build([(b"proxy-authorization", b"Basic c2VjcmV0")])
    assert values(out, "proxy-authorization") == ["Basic c2VjcmV0"]


def test_a_forwarding_field_the_operator_sets_makes_all_of_them_the_operators() -> None:
    rewrite = HeaderRewrite.model_validate({"set": {"X-Forwarded-For": "edge"}})
    out = build([(b"x-forwarded-for", b"6.6.6.6")], rewrite=rewrite, client_host="10.0.0.9")
    assert values(out, "x-forwarded-for") == ["edge"]
    assert values(out, "x-real-ip") == []


def test_rewrite_set_overrides_client_header_case_insensitively() -> None:
    rewrite = HeaderRewrite(
        set={"Authorization": SecretStr("Bearer backend"), "X-Api-Key": SecretStr("k1")}, remove=[]
    )
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
    out = build([(b"accept", b"*/*")], rewrite=HeaderRewrite(set={"X-Source": SecretStr("cutover")}))
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
    rewrite = HeaderRewrite(set={"X-Env": SecretStr("prod")}, remove=["x-internal"])
    out = build([(b"x-internal", b"secret"), (b"x-env", b"dev"), (b"x-other", b"o")], rewrite=rewrite)
    assert values(out, "x-internal") == []
    assert values(out, "x-env") == ["prod"]
    assert values(out, "x-other") == ["o"]


def test_rewriter_is_reusable_and_does_not_mutate_input() -> None:
    rewriter = RequestHeaderRewriter(HeaderRewrite(set={"X-A": SecretStr("1")}))
    headers = [(b"connection", b"x-b"), (b"x-b", b"2"), (b"x-c", b"3")]
    snapshot = list(headers)
    first = rewriter.build(headers, client_host="1.1.1.1", scheme="http")
    second = rewriter.build(headers, client_host="1.1.1.1", scheme="http")
    assert first == second
    assert headers == snapshot
    assert first == [
        ("x-c", "3"),
        ("x-forwarded-for", "1.1.1.1"),
        ("x-real-ip", "1.1.1.1"),
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


@pytest.mark.parametrize("name", [b"Connection", b"TRANSFER-ENCODING", b"Keep-Alive", b"Proxy-Connection"])
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
        (b"Proxy-Authenticate", b"Basic realm=next-hop"),  # a proxy further in asks: relayed
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
