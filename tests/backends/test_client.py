"""The upstream client adds nothing the client did not send (no default Accept, Accept-Encoding,
User-Agent or Content-Type): a transparent proxy must not change what the backend negotiates."""

from __future__ import annotations

import orjson

from backends.client import BackendClient
from config.settings import BackendSettings
from routing.phases import Side
from tests.support.servers import RunningServer

_AUTO = {"accept", "accept-encoding", "user-agent", "content-type"}


async def _echoed_header_names(
    upstream: BackendClient, method: str, headers: list[tuple[str, str]], body: bytes
) -> list[str]:
    response = await upstream.request(method, upstream.url_for("/echo", ""), headers, body)
    try:
        payload = orjson.loads(await upstream.read_body(response))
    finally:
        response.release()
    return [name.lower() for name, _value in payload["headers"]]


async def test_no_header_is_added_to_a_bare_request(echo_backend: RunningServer) -> None:
    upstream = BackendClient(Side.OLD, BackendSettings.model_validate({"url": echo_backend.url}))
    await upstream.start()
    try:
        names = await _echoed_header_names(upstream, "GET", [], b"")
        assert not _AUTO & set(names), names
        names = await _echoed_header_names(upstream, "POST", [], b"raw body")
        assert not _AUTO & set(names), names
        assert "content-length" in names  # the body is still framed
    finally:
        await upstream.close()


async def test_client_headers_pass_once_and_unchanged(echo_backend: RunningServer) -> None:
    upstream = BackendClient(Side.OLD, BackendSettings.model_validate({"url": echo_backend.url}))
    await upstream.start()
    sent = [
        ("Accept", "text/csv"),
        ("Accept-Encoding", "br"),
        ("User-Agent", "svc/1"),
        ("Content-Type", "a/b"),
    ]
    try:
        response = await upstream.request("PUT", upstream.url_for("/echo", ""), sent, b"x")
        payload = orjson.loads(await upstream.read_body(response))
        response.release()
    finally:
        await upstream.close()
    echoed = [(name.lower(), value) for name, value in payload["headers"]]
    for name, value in sent:
        assert [v for n, v in echoed if n == name.lower()] == [value]
