"""A bug while serving a request is answered in cutover's shape, never with the server's plain-text 500,
and logged once with its traceback and the request id the client was given.

The bug is injected by replacing one internal function for the length of a test (monkeypatch), in the
process that runs the proxy.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
import pytest

from proxy.dataplane import executor as executor_module
from tests.support.proxies import Proxy, ProxyBuilder
from tests.support.servers import RunningServer


class InjectedBug(Exception):
    pass


def h(tenant: str, request_id: str) -> dict[str, str]:
    return {"X-Tenant-ID": tenant, "X-Request-ID": request_id}


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.exc_info is not None and isinstance(r.exc_info[1], InjectedBug)]


@pytest.fixture(scope="session")
async def echo_old_proxy(shared_builder: ProxyBuilder, echo_backend: RunningServer) -> Proxy:
    return await shared_builder.start(
        {"backends": {"old": {"url": echo_backend.url}, "new": {"url": echo_backend.url}}}
    )


async def test_data_plane_bug_is_a_json_500_from_the_proxy(
    proxy: Proxy, tenant: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(raw: Any) -> Any:
        raise InjectedBug("secret value 42")

    monkeypatch.setattr(executor_module, "response_headers", broken)  # runs before the response starts
    response = await proxy.client.get("/items", headers=h(tenant, "req-bug-1"))
    assert response.status_code == 500, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-cutover-served-by"] == "proxy"
    body = response.json()
    assert body["error"] == "internal_error", body
    assert body["request_id"] == "req-bug-1", body
    assert "InjectedBug" in body["detail"]
    assert "42" not in body["detail"]
    logged = tracebacks(caplog)
    assert len(logged) == 1, [r.getMessage() for r in caplog.records]
    assert logged[0].name == "cutover.unexpected"
    assert not [r for r in caplog.records if "Exception in ASGI application" in r.getMessage()]
    monkeypatch.undo()
    assert (await proxy.client.get("/items", headers=h(tenant, "req-bug-2"))).status_code == 200


async def test_data_plane_bug_after_the_response_started_cuts_the_connection(
    echo_old_proxy: Proxy, tenant: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    original = aiohttp.StreamReader.iter_any

    def first_chunk_then_bug(self: aiohttp.StreamReader) -> AsyncIterator[bytes]:
        async def chunks() -> AsyncIterator[bytes]:
            async for chunk in original(self):
                yield chunk
                raise InjectedBug("after the first chunk")

        return chunks()

    monkeypatch.setattr(aiohttp.StreamReader, "iter_any", first_chunk_then_bug)
    size = 4 * 1024 * 1024  # over the small-body limit: streamed, so the status line goes out first
    statuses: list[int] = []
    received = 0

    async def read_until_cut() -> None:
        nonlocal received
        async with echo_old_proxy.client.stream(
            "GET", f"/big?size={size}", headers=h(tenant, "r")
        ) as response:
            statuses.append(response.status_code)
            async for chunk in response.aiter_raw():
                received += len(chunk)

    with pytest.raises(httpx.RemoteProtocolError):
        await read_until_cut()
    assert statuses == [200]  # the backend's status line was already sent
    assert 0 < received < size, "the test proved nothing: the body was not cut"
    logged = tracebacks(caplog)
    assert len(logged) == 1, [r.getMessage() for r in caplog.records]
    assert logged[0].name == "cutover.unexpected"
    monkeypatch.undo()
    ok = await echo_old_proxy.client.get("/status/200", headers=h(tenant, "after"))
    assert ok.status_code == 200


async def test_admin_bug_is_a_json_500(
    proxy: Proxy, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> dict[str, object]:
        raise InjectedBug("in the admin API")

    monkeypatch.setattr(proxy.runtime.stats, "as_json", broken)
    response = await proxy.admin.get("/stats", headers={"X-Request-ID": "adm-1"})
    assert response.status_code == 500, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["error"] == "internal_error", body
    assert body["request_id"] == "adm-1", body
    assert len(tracebacks(caplog)) == 1, [r.getMessage() for r in caplog.records]
