"""The HTTP edge against hostile clients (`proxy.dataplane.edge`), over raw sockets: a client library would
tidy the requests these tests send (no trailers, one Host, no underscores, whole heads at once).

Every test sends to a path of its own and checks what reached the backends under that path: a refused
request must reach neither.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from tests.support.asgi import Receive, Scope, Send
from tests.support.demo_backends import echo_app
from tests.support.proxies import Proxy, ProxyBuilder
from tests.support.servers import RunningServer, backend_config, start_server

HEADER_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 1.0


@dataclass
class Recorder:
    """The echo backend (it answers with the headers it got), remembering every request's head."""

    heads: list[tuple[str, list[tuple[bytes, bytes]]]] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.heads.append((scope["raw_path"].decode("latin-1"), list(scope["headers"])))
        await echo_app(scope, receive, send)


@dataclass
class Edge:
    proxy: Proxy
    old: Recorder
    new: Recorder

    @property
    def port(self) -> int:
        return self.proxy.port

    def reached(self, path: str) -> int:
        return sum(1 for backend in (self.old, self.new) for seen, _ in backend.heads if seen == path)


@pytest.fixture(scope="session")
async def edge(shared_builder: ProxyBuilder) -> AsyncIterator[Edge]:
    old, new = Recorder(), Recorder()
    servers: list[RunningServer] = [await start_server(backend_config(app)) for app in (old, new)]
    proxy = await shared_builder.start(
        {
            "backends": {"old": {"url": servers[0].url}, "new": {"url": servers[1].url}},
            "limits": {"client_header_timeout_s": HEADER_TIMEOUT_S, "client_body_timeout_s": BODY_TIMEOUT_S},
        }
    )
    yield Edge(proxy, old, new)
    for server in servers:
        await server.stop()


@pytest.fixture
def path() -> str:
    return f"/edge/{uuid.uuid4().hex[:12]}"


# -- raw HTTP ------------------------------------------------------------------------------------------------
@dataclass
class Response:
    status: int
    headers: dict[str, list[str]]
    body: bytes

    def header(self, name: str) -> str:
        values = self.headers.get(name, [])
        assert len(values) == 1, (name, self.headers)
        return values[0]

    def json(self) -> Any:
        return orjson.loads(self.body)

    def echoed(self, name: str) -> list[str]:
        """Values of `name` in the request the echo backend received."""
        return [value for key, value in self.json()["headers"] if key == name]


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def read_response(reader: asyncio.StreamReader, *, timeout_s: float = 10.0) -> Response:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout_s)
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
    length = int(headers.get("content-length", ["0"])[0])
    body = await asyncio.wait_for(reader.readexactly(length), timeout_s)
    return Response(int(lines[0].split(" ")[1]), headers, body)


async def closed(reader: asyncio.StreamReader, *, timeout_s: float = 10.0) -> bool:
    """Whether the proxy ends the connection (nothing more but the end of the stream)."""
    return await asyncio.wait_for(reader.read(), timeout_s) == b""


async def exchange(port: int, request: bytes) -> Response:
    reader, writer = await connect(port)
    try:
        writer.write(request)
        await writer.drain()
        return await read_response(reader)
    finally:
        writer.close()


def get(path: str, *lines: str, version: str = "1.1") -> bytes:
    return "\r\n".join([f"GET {path} HTTP/{version}", *lines, "Connection: close", "", ""]).encode()


def assert_refused(response: Response, status: int, code: str) -> None:
    assert response.status == status, (response.status, response.body)
    assert response.header("content-type") == "application/json"
    assert response.header("x-cutover-served-by") == "proxy"
    assert response.json()["error"] == code, response.body


# -- trailers ------------------------------------------------------------------------------------------------
async def test_trailer_fields_never_become_headers(edge: Edge, path: str, tenant: str) -> None:
    request = (
        f"PUT {path} HTTP/1.1\r\nHost: front.example\r\nX-Tenant-ID: {tenant}\r\n"
        "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        "5\r\nhello\r\n0\r\n"
        "X-Tenant-ID: ../../etc\r\nHost: evil.example\r\nX-Trailer-Only: yes\r\n\r\n"
    ).encode()
    response = await exchange(edge.port, request)
    assert response.status == 200, response.body
    assert response.echoed("x-tenant-id") == [tenant]
    assert response.echoed("x-forwarded-host") == ["front.example"]
    assert response.echoed("x-trailer-only") == []
    assert edge.reached(path) == 1


async def test_a_tenant_named_only_in_a_trailer_is_no_tenant_anywhere(
    edge: Edge, path: str, tenant: str
) -> None:
    # Routed as a request without a tenant, so the backend must not see one either.
    request = (
        f"PUT {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        f"2\r\n{{}}\r\n0\r\nX-Tenant-ID: {tenant}\r\n\r\n"
    ).encode()
    response = await exchange(edge.port, request)
    assert response.status == 200, response.body
    assert response.echoed("x-tenant-id") == []
    assert edge.reached(path) == 1


# -- one tenant per request ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("lines", "why"),
    [
        (["X-Tenant-ID: {t}", "X-Tenant-ID: other-{t}"], "more than once"),
        (["X-Tenant-ID: {t}", "x-tenant-id: {t}"], "more than once"),
        (["X-Tenant-ID: {t}, other-{t}"], "several tenants"),
        (["X-Tenant-ID: {t},other-{t}"], "several tenants"),
        (["X-Tenant-ID: {t}", "Connection: keep-alive, X-Tenant-ID"], "Connection"),
    ],
    ids=["repeated", "repeated-case", "comma-joined", "comma-joined-tight", "hop-by-hop"],
)
async def test_a_request_names_one_tenant(
    edge: Edge, path: str, tenant: str, lines: list[str], why: str
) -> None:
    response = await exchange(edge.port, get(path, "Host: x", *(line.format(t=tenant) for line in lines)))
    assert_refused(response, 400, "invalid_tenant")
    assert why in response.json()["detail"]
    assert edge.reached(path) == 0


async def test_header_names_with_underscores_are_dropped(edge: Edge, path: str, tenant: str) -> None:
    # CGI and WSGI backends read all of these as HTTP_X_TENANT_ID (or HTTP_X_FORWARDED_FOR).
    response = await exchange(
        edge.port,
        get(
            path,
            "Host: x",
            f"X-Tenant-ID: {tenant}",
            "X_Tenant_ID: intruder",
            "x_tenant_id: intruder",
            "X-Tenant_ID: intruder",
            "X_Forwarded_For: 203.0.113.9",
            "X-Kept: yes",
        ),
    )
    assert response.status == 200, response.body
    names = [name for name, _ in response.json()["headers"]]
    assert [name for name in names if "_" in name] == []
    assert response.echoed("x-tenant-id") == [tenant]
    assert response.echoed("x-forwarded-for") == ["127.0.0.1"]
    assert response.echoed("x-kept") == ["yes"]


# -- sizes ---------------------------------------------------------------------------------------------------
async def test_a_head_over_max_header_bytes_is_431(edge: Edge, path: str) -> None:
    limit = edge.proxy.runtime.settings.limits.max_header_bytes
    reader, writer = await connect(edge.port)
    writer.write(get(path, "Host: x", "X-Big: " + "a" * limit))
    response = await read_response(reader)
    assert_refused(response, 431, "header_too_large")
    assert response.header("connection") == "close"
    assert await closed(reader)
    writer.close()
    assert edge.reached(path) == 0

    fits = await exchange(edge.port, get(path, "Host: x", "X-Big: " + "a" * (limit - 200)))
    assert fits.status == 200
    assert fits.echoed("x-big") == ["a" * (limit - 200)]


async def test_more_than_max_header_fields_is_431(edge: Edge, path: str) -> None:
    fields = edge.proxy.runtime.settings.limits.max_header_fields
    too_many = [f"X-F{i}: {i}" for i in range(fields)]  # plus Host and Connection
    assert_refused(await exchange(edge.port, get(path, "Host: x", *too_many)), 431, "header_too_large")
    assert edge.reached(path) == 0
    fits = await exchange(edge.port, get(path, "Host: x", *too_many[: fields - 2]))
    assert fits.status == 200
    assert len(fits.echoed(f"x-f{fields - 3}")) == 1


async def test_an_endless_header_is_cut_at_the_bound(edge: Edge, path: str) -> None:
    # 4 MiB of one header, as fast as the proxy takes it: answered once the bound is passed, and the
    # answer arrives although the client goes on sending (the proxy half-closes and discards).
    reader, writer = await connect(edge.port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nX-Endless: ".encode())
    sent = 0
    while sent < 4 * 1024 * 1024:
        writer.write(b"a" * 65536)
        sent += 65536
        await writer.drain()
    response = await read_response(reader)
    assert_refused(response, 431, "header_too_large")
    assert await closed(reader)
    writer.close()
    assert edge.reached(path) == 0


@pytest.mark.parametrize(
    "endless",
    [b"1\r\na\r\n0\r\nX-Endless-Trailer: ", b"1\r\na\r\n1;ext="],
    ids=["trailer", "chunk-extension"],
)
async def test_chunk_framing_and_trailers_are_bounded(edge: Edge, path: str, endless: bytes) -> None:
    # Neither is body data, so max_body_bytes never counted them. Bounded like a head: 1 MiB is over it
    # whatever the reads' boundaries (the bound may be passed by up to one read before it is seen).
    reader, writer = await connect(edge.port)
    writer.write(f"PUT {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode() + endless)
    for _ in range(16):
        writer.write(b"a" * 65536)
        await writer.drain()
    response = await read_response(reader)
    assert_refused(response, 431, "header_too_large")
    assert "chunk framing or trailer" in response.json()["detail"]
    assert await closed(reader)
    writer.close()
    assert edge.reached(path) == 0


# -- time ----------------------------------------------------------------------------------------------------
async def test_a_head_not_complete_in_time_is_408_and_closed(edge: Edge, path: str, tenant: str) -> None:
    # Slow clients, each holding a half-sent head: all answered and closed, none forwarded.
    connections = [await connect(edge.port) for _ in range(50)]
    for _reader, writer in connections:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nX-Tenant-ID: {tenant}\r\nX-Slow: ".encode())
    for reader, writer in connections:
        response = await read_response(reader, timeout_s=HEADER_TIMEOUT_S + 10)
        assert_refused(response, 408, "request_timeout")
        assert "client_header_timeout_s" in response.json()["detail"]
        assert await closed(reader)
        writer.close()
    assert edge.reached(path) == 0
    assert (await exchange(edge.port, get(path, "Host: x"))).status == 200


async def test_a_connection_that_sends_nothing_is_closed_without_an_answer(edge: Edge) -> None:
    reader, writer = await connect(edge.port)
    assert await asyncio.wait_for(reader.read(), HEADER_TIMEOUT_S + 10) == b""
    writer.close()


async def test_a_body_read_that_waits_too_long_is_408_and_closed(edge: Edge, path: str) -> None:
    for head, partial in [
        ("Content-Length: 100", b"only ten b"),
        ("Transfer-Encoding: chunked", b"a\r\nonly ten b\r\n"),
    ]:
        reader, writer = await connect(edge.port)
        writer.write(f"PUT {path} HTTP/1.1\r\nHost: x\r\n{head}\r\n\r\n".encode() + partial)
        response = await read_response(reader, timeout_s=BODY_TIMEOUT_S + 10)
        assert_refused(response, 408, "request_timeout")
        assert "client_body_timeout_s" in response.json()["detail"]
        assert await closed(reader)
        writer.close()
    assert edge.reached(path) == 0


async def test_a_slow_body_that_keeps_coming_is_served(edge: Edge, path: str) -> None:
    # Each read well within the timeout, the whole body over twice as long: the bound is per read.
    pieces = 30
    reader, writer = await connect(edge.port)
    writer.write(
        f"PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {pieces}\r\nConnection: close\r\n\r\n".encode()
    )
    for _ in range(pieces):
        writer.write(b"b")
        await writer.drain()
        await asyncio.sleep(BODY_TIMEOUT_S * 2 / pieces)
    response = await read_response(reader)
    writer.close()
    assert response.status == 200, response.body
    assert edge.reached(path) == 1


# -- a response sent before the body was read ----------------------------------------------------------------
async def test_a_chunked_body_over_the_limit_is_413_and_the_connection_ends(edge: Edge, path: str) -> None:
    limit = edge.proxy.runtime.settings.max_body_bytes
    reader, writer = await connect(edge.port)
    writer.write(f"PUT {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
    chunk = b"4000\r\n" + b"c" * 0x4000 + b"\r\n"
    for _ in range(limit // 0x4000 + 8):  # more than the limit, and never the last chunk
        writer.write(chunk)
        await writer.drain()
    response = await read_response(reader)
    assert_refused(response, 413, "body_too_large")
    assert await closed(reader)
    writer.close()
    assert edge.reached(path) == 0


async def test_an_early_refusal_does_not_read_the_rest_of_the_body(edge: Edge, path: str) -> None:
    reader, writer = await connect(edge.port)
    head = f"PUT {path} HTTP/1.1\r\nHost: x\r\nX-Tenant-ID: not/valid\r\nContent-Length: 1000000\r\n\r\n"
    writer.write(head.encode() + b"0123")
    response = await read_response(reader)
    assert_refused(response, 400, "invalid_tenant")
    assert await closed(reader)
    writer.close()
    assert edge.reached(path) == 0


# -- Host and malformed requests -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("lines", "version", "why"),
    [
        ([], "1.1", "without Host"),
        (["Host: a.example", "Host: b.example"], "1.1", "2 Host"),
        (["Host: a.example", "Host: a.example"], "1.0", "2 Host"),
    ],
    ids=["http11-no-host", "two-hosts", "two-hosts-http10"],
)
async def test_host_is_required_once(edge: Edge, path: str, lines: list[str], version: str, why: str) -> None:
    response = await exchange(edge.port, get(path, *lines, version=version))
    assert_refused(response, 400, "bad_request")
    assert why in response.json()["detail"]
    assert edge.reached(path) == 0


async def test_http10_without_host_is_served(edge: Edge, path: str) -> None:
    response = await exchange(edge.port, get(path, version="1.0"))
    assert response.status == 200, response.body
    assert edge.reached(path) == 1


@pytest.mark.parametrize(
    "request_text",
    [
        "GET {p} HTTP/1.1\r\nHost: x\r\nBad Name: y\r\n\r\n",
        "PUT {p} HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "GET {p} HTTP/1.1\r\nHost: x\nX-Bare-LF: y\r\n\r\n",
    ],
    ids=["bad-name", "cl-and-te", "bare-lf"],
)
async def test_malformed_requests_are_answered_in_cutovers_shape(
    edge: Edge, path: str, request_text: str
) -> None:
    for port in (edge.port, edge.proxy.admin_server.port):  # the admin API has the same edge
        response = await exchange(port, request_text.format(p=path).encode())
        assert_refused(response, 400, "bad_request")
        assert response.json()["detail"].startswith("malformed HTTP request: ")
    assert edge.reached(path) == 0


# -- what the edge must keep doing ---------------------------------------------------------------------------
async def test_keep_alive_and_pipelining_still_work(edge: Edge, path: str, tenant: str) -> None:
    reader, writer = await connect(edge.port)
    # One after another on one connection, then three at once: a chunked body with a trailer between two.
    for _ in range(3):
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nX-Tenant-ID: {tenant}\r\n\r\n".encode())
        assert (await read_response(reader)).status == 200
    writer.write(
        (
            f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"
            f"PUT {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            "3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n"
            f"GET {path} HTTP/1.1\r\nHost: x\r\nX-Last: yes\r\nConnection: close\r\n\r\n"
        ).encode()
    )
    answers = [await read_response(reader) for _ in range(3)]
    assert [answer.status for answer in answers] == [200, 200, 200]
    assert [answer.json()["method"] for answer in answers] == ["GET", "PUT", "GET"]
    assert answers[1].echoed("x-t") == []
    assert answers[2].echoed("x-last") == ["yes"]
    assert await closed(reader)
    writer.close()
    assert edge.reached(path) == 6


async def test_a_pipelined_request_whose_body_is_still_coming_is_served(edge: Edge, path: str) -> None:
    # The PUT is queued behind the GET with half its body: the GET's answer must not end the connection.
    reader, writer = await connect(edge.port)
    get_head = f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"
    writer.write(f"{get_head}PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nfirst".encode())
    assert (await read_response(reader)).status == 200
    writer.write(b"-half")
    answer = await read_response(reader)
    assert answer.status == 200, answer.body
    assert answer.json()["body_b64"] == "Zmlyc3QtaGFsZg=="  # first-half
    writer.close()
    assert edge.reached(path) == 2
