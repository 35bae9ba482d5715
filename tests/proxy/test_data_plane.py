"""The data plane end to end: real uvicorn servers for the proxy and both backends, real PostgreSQL and Redis.

Covers routing by phase (headers, what each backend stored, intents in Redis), reverse-proxy behaviour,
bad input, shadow reads and fallback.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from typing import Any

import httpx
import orjson
import pytest
import redis.asyncio as aioredis

from buffer_worker.spool import SpoolingSink
from routing.phases import Phase, Side
from tests.support.demo_backends import BIG_CHUNK, DemoBackend
from tests.support.proxies import (
    IntentBuffer,
    MemoryProxy,
    Proxy,
    ProxyBuilder,
    ProxyFactory,
    raw_request,
)
from tests.support.servers import RunningServer, free_port
from tests.support.waits import wait_for

# phase → (serving side for reads and writes, mirror side of writes, shadow side of reads)
ROUTES: dict[Phase, tuple[Side, Side | None, Side | None]] = {
    Phase.LEGACY: (Side.OLD, None, None),
    Phase.DUAL_WRITE: (Side.OLD, Side.NEW, None),
    Phase.SHADOW: (Side.OLD, Side.NEW, Side.NEW),
    Phase.LIVE: (Side.NEW, Side.OLD, Side.OLD),
    Phase.RAMPDOWN: (Side.NEW, Side.OLD, None),
    Phase.COMPLETE: (Side.NEW, None, None),
}


def backends_of(old: DemoBackend, new: DemoBackend) -> dict[Side, DemoBackend]:
    return {Side.OLD: old, Side.NEW: new}


def assert_served(response: httpx.Response, side: Side | str, phase: Phase | str) -> None:
    assert response.headers.get("x-cutover-served-by") == str(side), (response.status_code, response.text)
    assert response.headers.get("x-cutover-phase") == str(phase)


def h(tenant: str) -> dict[str, str]:
    return {"X-Tenant-ID": tenant}


# -- routing by phase ------------------------------------------------------------------------------------
@pytest.mark.parametrize("phase", list(Phase), ids=[p.value for p in Phase])
async def test_every_phase_routes_reads_and_writes_to_its_side(
    phase: Phase,
    proxy: Proxy,
    old: DemoBackend,
    new: DemoBackend,
    tenant: str,
    intent_buffer: IntentBuffer,
) -> None:
    serving, mirror, shadow = ROUTES[phase]
    backends = backends_of(old, new)
    other = serving.other
    state = await proxy.set_phase_api(tenant, phase)
    assert state["phase"] == phase.value

    # An acknowledged write reaches the serving (authoritative) side only.
    body = {"name": f"written in {phase.value}", "n": 1}
    response = await proxy.client.put("/items/k1", json=body, headers=h(tenant))
    assert response.status_code == 200, response.text
    assert_served(response, serving, phase)
    assert response.json() == {**body, "id": "k1"}
    assert await backends[serving].items_of(tenant) == {"k1": {**body, "id": "k1"}}
    assert await backends[other].items_of(tenant) == {}, f"a {phase.value} write reached {other}"
    assert backends[other].recorder.requests_for(tenant, method="PUT") == []

    # Exactly one intent toward the mirror side in the mirroring phases, none otherwise.
    intents = await intent_buffer.intents_for(tenant)
    if mirror is None:
        assert intents == []
        assert await intent_buffer.pending(tenant, other) == 0
    else:
        assert len(intents) == 1
        intent = intents[0]
        assert intent.target is mirror
        assert (intent.method, intent.path, intent.query, intent.status) == ("PUT", "/items/k1", "", 200)
        assert orjson.loads(intent.body) == body
        assert orjson.loads(intent.response_body) == {**body, "id": "k1"}
        assert ("content-type", "application/json") in intent.headers
        assert await intent_buffer.pending(tenant, mirror) == 1

    # A read is served by the serving side; the shadow side sees the same read only where the phase says.
    response = await proxy.client.get("/items/k1", headers=h(tenant))
    assert response.status_code == 200
    assert_served(response, serving, phase)
    assert response.json() == {**body, "id": "k1"}
    served_reads = backends[serving].recorder.requests_for(tenant, method="GET", path="/items/k1")
    if shadow is not None:

        async def shadowed() -> bool:
            return len(backends[shadow].recorder.requests_for(tenant, method="GET", path="/items/k1")) == 1

        await wait_for(shadowed)
        # Besides the client's read, the shadow process may send the serving side one copy of it (noise
        # learning: every read of a resource until it has `noise.min_copies`), at a time of its own.
        served_reads = backends[serving].recorder.requests_for(tenant, method="GET", path="/items/k1")
        assert 1 <= len(served_reads) <= 2
    else:
        assert len(served_reads) == 1
        await asyncio.sleep(0.05)  # a shadow read that must not be sent leaves nothing to wait for
        assert backends[other].recorder.requests_for(tenant) == []

    # A write the authoritative side refuses (non-2xx) produces no intent.
    missing = await proxy.client.delete("/items/absent", headers=h(tenant))
    assert missing.status_code == 404
    assert_served(missing, serving, phase)
    await backends[serving].control(fail_writes=True)
    failed = await proxy.client.put("/items/k2", json={"n": 2}, headers=h(tenant))
    assert failed.status_code == 503
    assert failed.json()["error"] == "injected_failure"
    assert_served(failed, serving, phase)
    assert len(await intent_buffer.intents_for(tenant)) == (0 if mirror is None else 1)
    assert "k2" not in await backends[serving].items_of(tenant)
    assert await backends[other].items_of(tenant) == {}


async def test_tenants_are_isolated(
    proxy: Proxy, old: DemoBackend, new: DemoBackend, intent_buffer: IntentBuffer
) -> None:
    moved, stayed = "iso-a-" + str(time.time_ns()), "iso-b-" + str(time.time_ns())
    await proxy.set_phase_direct(moved, Phase.COMPLETE)

    a = await proxy.client.put("/items/x", json={"who": "a"}, headers=h(moved))
    b = await proxy.client.put("/items/x", json={"who": "b"}, headers=h(stayed))
    assert_served(a, Side.NEW, Phase.COMPLETE)
    assert_served(b, Side.OLD, Phase.LEGACY)
    assert await new.items_of(moved) == {"x": {"who": "a", "id": "x"}}
    assert await old.items_of(moved) == {}
    assert await old.items_of(stayed) == {"x": {"who": "b", "id": "x"}}
    assert await new.items_of(stayed) == {}
    # Each tenant reads its own data from its own side.
    read_a = await proxy.client.get("/items/x", headers=h(moved))
    read_b = await proxy.client.get("/items/x", headers=h(stayed))
    assert (read_a.json()["who"], read_b.json()["who"]) == ("a", "b")
    assert_served(read_b, Side.OLD, Phase.LEGACY)
    assert await intent_buffer.intents_for(stayed) == []
    tenant_b = await proxy.admin.get(f"/tenants/{stayed}")
    assert tenant_b.json()["phase"] == "legacy"
    assert tenant_b.json()["version"] == 0


async def test_requests_without_tenant_follow_default_phase(
    proxy: Proxy, make_proxy: ProxyFactory, old: DemoBackend, new: DemoBackend, tenant: str
) -> None:
    response = await proxy.client.get("/items")
    assert response.status_code == 200
    assert_served(response, Side.OLD, Phase.LEGACY)

    complete = await make_proxy({"default_phase": "complete"})
    marker = f"no-tenant-{tenant}"
    write = await complete.client.put(f"/items/{marker}", json={"n": 1})
    assert write.status_code == 200
    assert_served(write, Side.NEW, Phase.COMPLETE)
    assert marker in await new.items_of("")
    assert marker not in await old.items_of("")
    # A tenant with no row follows the default too.
    read = await complete.client.get("/items", headers=h(tenant))
    assert_served(read, Side.NEW, Phase.COMPLETE)


# -- reverse-proxy behaviour -----------------------------------------------------------------------------
@pytest.fixture(scope="session")
async def echo_proxy(shared_builder: ProxyBuilder, echo_backend: RunningServer) -> Proxy:
    return await shared_builder.start(
        {
            "backends": {
                "old": {
                    "url": echo_backend.url,
                    "headers": {"set": {"X-Backend-Key": "old-key"}, "remove": ["X-Internal-Debug"]},
                },
                "new": {
                    "url": echo_backend.url.replace("http://", "http://svc-user:svc-pass@") + "/new-base",
                    "headers": {"set": {"X-Backend-Key": "new-key"}, "remove": ["X-Other"]},
                },
            }
        }
    )


def echoed_headers(response: httpx.Response) -> list[tuple[str, str]]:
    return [(name, value) for name, value in response.json()["headers"]]


async def test_method_path_query_and_body_are_forwarded_unchanged(echo_proxy: Proxy, tenant: str) -> None:
    body = bytes(range(256)) * 4
    response = await echo_proxy.client.request(
        "PATCH",
        "/some/Path%20x/~y;z?b=2&a=1&a=3&e=%C3%A9&empty=",
        content=body,
        headers={**h(tenant), "Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 200, response.text
    echoed = response.json()
    assert echoed["method"] == "PATCH"
    assert echoed["raw_path"] == "/some/Path%20x/~y;z"
    assert echoed["query"] == "b=2&a=1&a=3&e=%C3%A9&empty="
    assert base64.b64decode(echoed["body_b64"]) == body
    assert ("content-type", "application/octet-stream") in echoed_headers(response)
    assert_served(response, Side.OLD, Phase.LEGACY)


async def test_backend_base_path_is_prefixed(echo_proxy: Proxy, tenant: str) -> None:
    await echo_proxy.set_phase_direct(tenant, Phase.COMPLETE)
    response = await echo_proxy.client.get("/items/1?x=1", headers=h(tenant))
    assert_served(response, Side.NEW, Phase.COMPLETE)
    assert response.json()["raw_path"] == "/new-base/items/1"
    assert response.json()["query"] == "x=1"


async def test_hop_by_hop_request_headers_are_dropped_and_forwarded_set(
    echo_proxy: Proxy, echo_backend: RunningServer, tenant: str
) -> None:
    response = await echo_proxy.client.get(
        "/echo",
        headers={
            **h(tenant),
            "Connection": "keep-alive, X-Hop-Custom",
            "X-Hop-Custom": "must-not-pass",
            "Keep-Alive": "timeout=5",
            "TE": "trailers",
            "Proxy-Authorization": "Basic c2VjcmV0",
            "Proxy-Connection": "keep-alive",
            "X-Forwarded-For": "203.0.113.7",
            "X-Forwarded-Host": "spoofed.example",
            "X-Forwarded-Proto": "gopher",
            "Forwarded": "for=203.0.113.7",
            "X-Real-IP": "203.0.113.7",
            "X-Original-URL": "/admin",
            "X-End-To-End": "yes",
            "X-Internal-Debug": "drop-me",
            "X-Backend-Key": "client-spoof",
            "X-Other": "kept-for-old",
        },
    )
    assert response.status_code == 200, response.text
    headers = echoed_headers(response)
    names = [name for name, _ in headers]
    for hop in ("connection", "keep-alive", "te", "proxy-connection", "x-hop-custom"):
        assert hop not in names, f"{hop} was forwarded: {headers}"
    # cutover asks for no proxy credentials: they are for a proxy further in (RFC 9110 §11.7.2)
    assert ("proxy-authorization", "Basic c2VjcmV0") in headers
    assert ("x-end-to-end", "yes") in headers
    assert ("x-tenant-id", tenant) in headers
    assert ("x-other", "kept-for-old") in headers  # removed only for `new`
    # forwarding fields are the proxy's own: the client (not a trusted proxy) cannot claim an address
    assert [v for n, v in headers if n == "x-forwarded-for"] == ["127.0.0.1"]
    assert [v for n, v in headers if n == "x-real-ip"] == ["127.0.0.1"]
    for claimed in ("forwarded", "x-original-url"):
        assert claimed not in names
    assert [v for n, v in headers if n == "x-forwarded-proto"] == ["http"]
    assert [v for n, v in headers if n == "x-forwarded-host"] == [f"127.0.0.1:{echo_proxy.port}"]
    assert [v for n, v in headers if n == "host"] == [f"127.0.0.1:{echo_backend.port}"]
    # per-backend rewrite: set replaces the client's value, remove drops
    assert [v for n, v in headers if n == "x-backend-key"] == ["old-key"]
    assert "x-internal-debug" not in names


async def test_a_trusted_proxys_forwarding_fields_are_kept_and_extended(
    make_proxy: ProxyFactory, echo_backend: RunningServer, tenant: str
) -> None:
    proxy = await make_proxy(
        {"trusted_proxies": ["127.0.0.0/8"], "backends": {"old": {"url": echo_backend.url}}}
    )
    response = await proxy.client.get(
        "/echo",
        headers={**h(tenant), "X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"},
    )
    headers = echoed_headers(response)
    assert [v for n, v in headers if n == "x-forwarded-for"] == ["203.0.113.7, 127.0.0.1"]
    assert [v for n, v in headers if n == "x-forwarded-proto"] == ["https"]
    assert [v for n, v in headers if n == "x-real-ip"] == ["127.0.0.1"]


async def test_per_backend_header_rewrites_apply_to_new(echo_proxy: Proxy, tenant: str) -> None:
    await echo_proxy.set_phase_direct(tenant, Phase.COMPLETE)
    response = await echo_proxy.client.get(
        "/echo", headers={**h(tenant), "X-Other": "drop-for-new", "X-Internal-Debug": "kept-for-new"}
    )
    assert_served(response, Side.NEW, Phase.COMPLETE)
    headers = echoed_headers(response)
    assert [v for n, v in headers if n == "x-backend-key"] == ["new-key"]
    assert "x-other" not in [n for n, _ in headers]
    assert ("x-internal-debug", "kept-for-new") in headers


async def test_backend_url_credentials_are_sent_as_basic_auth(echo_proxy: Proxy, tenant: str) -> None:
    await echo_proxy.set_phase_direct(tenant, Phase.COMPLETE)
    response = await echo_proxy.client.get("/echo", headers=h(tenant))
    assert response.status_code == 200
    expected = "Basic " + base64.b64encode(b"svc-user:svc-pass").decode()
    assert [v for n, v in echoed_headers(response) if n == "authorization"] == [expected]


async def test_client_authorization_with_credentialed_backend_url(echo_proxy: Proxy, tenant: str) -> None:
    await echo_proxy.set_phase_direct(tenant, Phase.COMPLETE)
    response = await echo_proxy.client.get("/echo", headers={**h(tenant), "Authorization": "Bearer client"})
    assert response.status_code == 200, response.text
    assert len([v for n, v in echoed_headers(response) if n == "authorization"]) == 1


async def test_hop_by_hop_response_headers_are_dropped(echo_proxy: Proxy, tenant: str) -> None:
    # Check the backend really sends them, so the assertion below cannot pass vacuously.
    async with httpx.AsyncClient() as direct:
        raw = await direct.get(echo_proxy.runtime.upstreams[Side.OLD].url_for("/hop", ""))
    assert raw.headers["x-private-hop"] == "secret"
    assert "keep-alive" in raw.headers

    response = await echo_proxy.client.get("/hop", headers=h(tenant))
    assert response.status_code == 200
    assert response.content == b"hop"
    assert response.headers["x-end-to-end"] == "kept"
    for hop in ("x-private-hop", "keep-alive", "trailer", "proxy-connection"):
        assert hop not in response.headers, f"{hop} reached the client"
    # a proxy further in asks for credentials: relayed, as its Proxy-Authorization is relayed inward
    assert response.headers["proxy-authenticate"] == 'Basic realm="backend"'
    assert response.headers.get("connection") in (None, "keep-alive")


@pytest.mark.parametrize("status", [404, 418, 500, 503])
async def test_status_codes_pass_through(echo_proxy: Proxy, tenant: str, status: int) -> None:
    response = await echo_proxy.client.get(f"/status/{status}", headers=h(tenant))
    assert response.status_code == status
    assert response.json() == {"status": status}
    assert_served(response, Side.OLD, Phase.LEGACY)


async def test_demo_backend_404_passes_through(proxy: Proxy, tenant: str) -> None:
    response = await proxy.client.get("/items/nope", headers=h(tenant))
    assert response.status_code == 404
    assert response.json() == {"error": "not_found", "id": "nope"}


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


async def test_large_response_is_streamed_not_buffered(echo_proxy: Proxy, tenant: str) -> None:
    size = 50 * 1024 * 1024
    expected = hashlib.sha256()
    for start in range(0, size, len(BIG_CHUNK)):
        expected.update(BIG_CHUNK[: min(len(BIG_CHUNK), size - start)])

    before = _rss_kib()
    peak = before
    received = 0
    digest = hashlib.sha256()
    async with echo_proxy.client.stream("GET", f"/big?size={size}", headers=h(tenant)) as response:
        assert response.status_code == 200
        assert_served(response, Side.OLD, Phase.LEGACY)
        assert response.headers["content-length"] == str(size)
        async for chunk in response.aiter_raw():
            received += len(chunk)
            digest.update(chunk)
            peak = max(peak, _rss_kib())
    after = _rss_kib()
    assert received == size
    assert digest.hexdigest() == expected.hexdigest()
    # The proxy, both servers and the client share this process: buffering the body anywhere on the way
    # would show as ~50 MiB of growth.
    growth_mib = (max(peak, after) - before) / 1024
    assert growth_mib < 20, f"RSS grew by {growth_mib:.1f} MiB while streaming 50 MiB"
    # and the proxy still serves normally afterwards
    assert (await echo_proxy.client.get("/status/200", headers=h(tenant))).status_code == 200


# -- bad input -------------------------------------------------------------------------------------------
async def assert_still_serves(proxy: Proxy, tenant: str) -> None:
    response = await proxy.client.get("/items", headers=h(tenant))
    assert response.status_code == 200, response.text
    assert response.headers["x-cutover-served-by"] in ("old", "new")


async def test_body_over_limit_is_413(proxy: Proxy, old: DemoBackend, tenant: str) -> None:
    limit = proxy.runtime.settings.max_body_bytes
    too_big = b'{"x": "' + b"a" * limit + b'"}'
    response = await proxy.client.put(
        "/items/big", content=too_big, headers={**h(tenant), "Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"] == "body_too_large"
    assert response.json()["limit"] == limit

    async def chunks() -> Any:
        for _ in range(limit // 8192 + 2):
            yield b"a" * 8192

    streamed = await proxy.client.put("/items/big", content=chunks(), headers=h(tenant))  # no Content-Length
    assert streamed.status_code == 413
    assert streamed.json()["error"] == "body_too_large"
    assert old.recorder.requests_for(tenant, method="PUT") == []

    at_limit = b'{"x": "' + b"a" * (limit - 20) + b'"}'
    ok = await proxy.client.put(
        "/items/big", content=at_limit, headers={**h(tenant), "Content-Type": "application/json"}
    )
    assert ok.status_code == 200
    await assert_still_serves(proxy, tenant)


async def test_absolute_form_target_is_400(
    proxy: Proxy, old: DemoBackend, new: DemoBackend, tenant: str
) -> None:
    request = (
        f"GET http://evil.example/items HTTP/1.1\r\nHost: evil.example\r\nX-Tenant-ID: {tenant}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    status, headers, body = await raw_request(proxy.port, request)
    assert status == 400
    assert headers["content-type"] == "application/json"
    assert orjson.loads(body)["error"] == "invalid_target"
    assert old.recorder.requests_for(tenant) == []
    assert new.recorder.requests_for(tenant) == []

    # The same request in origin form is fine: the refusal is about the form, not the path.
    origin = f"GET /items HTTP/1.1\r\nHost: x\r\nX-Tenant-ID: {tenant}\r\nConnection: close\r\n\r\n".encode()
    status, _, _ = await raw_request(proxy.port, origin)
    assert status == 200
    await assert_still_serves(proxy, tenant)


@pytest.mark.parametrize(
    "path", ["/a/%2e%2e/b", "/a/%2E%2E/b", "/a/../b", "/a/%2e/b", "/a%2fb", "/a%5c..%5cb"]
)
async def test_dot_segments_and_encoded_slashes_are_400(
    proxy: Proxy, old: DemoBackend, tenant: str, path: str
) -> None:
    request = f"GET {path} HTTP/1.1\r\nHost: x\r\nX-Tenant-ID: {tenant}\r\nConnection: close\r\n\r\n".encode()
    status, _, body = await raw_request(proxy.port, request)
    assert status == 400, body
    assert orjson.loads(body)["error"] == "invalid_target"
    assert old.recorder.requests_for(tenant) == []
    await assert_still_serves(proxy, tenant)


@pytest.mark.parametrize("bad", ["", "has space", "a/b", "x" * 129, "é", ".", ".."])
async def test_invalid_tenant_is_400(proxy: Proxy, old: DemoBackend, bad: str, tenant: str) -> None:
    before = len(old.recorder.seen)
    response = await proxy.client.get("/items", headers=[(b"X-Tenant-ID", bad.encode())])
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_tenant"
    assert len(old.recorder.seen) == before
    await assert_still_serves(proxy, tenant)


async def test_refused_backend_is_502_naming_it(refused_new_proxy: Proxy, tenant: str) -> None:
    proxy = refused_new_proxy
    await proxy.set_phase_direct(tenant, Phase.COMPLETE)
    response = await proxy.client.get("/items", headers=h(tenant))
    assert response.status_code == 502
    body = response.json()
    assert body["error"] == "backend_unreachable"
    assert body["backend"] == "new"
    assert "new" in body["detail"]
    assert response.headers["x-cutover-served-by"] == "new"
    assert response.headers["x-cutover-phase"] == "complete"
    write = await proxy.client.put("/items/a", json={}, headers=h(tenant))
    assert write.status_code == 502
    assert write.json()["backend"] == "new"
    # Other tenants (legacy → old) are unaffected.
    await assert_still_serves(proxy, "someone-else")


async def test_a_backend_that_answers_malformed_http_is_502_bad_response(
    make_proxy: ProxyFactory, tenant: str
) -> None:
    """The backend answered, but not in HTTP: that is not "could not be reached"."""

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 9\r\n\r\nhi")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        proxy = await make_proxy({"backends": {"old": {"url": f"http://127.0.0.1:{port}"}}})
        response = await proxy.client.get("/items", headers=h(tenant))
    finally:
        server.close()
    assert response.status_code == 502
    body = response.json()
    assert body["error"] == "backend_bad_response"
    assert body["backend"] == "old"
    assert "malformed HTTP (Duplicate Content-Length)" in body["detail"]
    assert response.headers["x-cutover-served-by"] == "old"


async def test_slow_backend_is_504_naming_it(make_proxy: ProxyFactory, old: DemoBackend, tenant: str) -> None:
    proxy = await make_proxy({"backends": {"old": {"timeout_s": 0.3}}})
    await old.control(delay_ms=1500)
    started = time.monotonic()
    response = await proxy.client.get("/items", headers=h(tenant))
    elapsed = time.monotonic() - started
    assert response.status_code == 504
    assert response.json()["error"] == "backend_timeout"
    assert response.json()["backend"] == "old"
    assert response.headers["x-cutover-served-by"] == "old"
    assert elapsed < 1.2, f"the timeout did not cut the wait ({elapsed:.2f} s)"
    await old.control(delay_ms=0)
    await assert_still_serves(proxy, tenant)


# -- shadow reads ----------------------------------------------------------------------------------------
async def test_shadow_read_is_off_the_critical_path_and_equal_answers_are_not_stored(
    proxy: Proxy, old: DemoBackend, new: DemoBackend, tenant: str
) -> None:
    item = {"name": "same", "tags": ["a", "b"]}
    await old.seed(tenant, "s1", item)
    await new.seed(tenant, "s1", item)
    await proxy.set_phase_api(tenant, Phase.SHADOW)
    before = (await proxy.stats())["shadow"]
    await new.control(delay_ms=1500)

    started = time.monotonic()
    response = await proxy.client.get("/items/s1", headers=h(tenant))
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert_served(response, Side.OLD, Phase.SHADOW)
    assert response.json() == {**item, "id": "s1"}
    assert elapsed < 0.75, f"the client waited {elapsed:.2f} s for a 1.5 s shadow"
    assert proxy.runtime.shadow.in_flight == 1

    async def compared() -> bool:
        return bool((await proxy.stats())["shadow"]["compared"] == before["compared"] + 1)

    await wait_for(compared, timeout_s=5)
    after = (await proxy.stats())["shadow"]
    assert after["equal"] == before["equal"] + 1
    assert after["divergent"] == before["divergent"]
    assert len(new.recorder.requests_for(tenant, method="GET", path="/items/s1")) == 1
    stored = await proxy.admin.get(f"/tenants/{tenant}/divergences")
    assert stored.status_code == 200
    assert stored.json() == {"tenant": tenant, "divergences": [], "next": None}


async def test_shadow_divergence_is_counted_and_stored_with_paths(
    proxy: Proxy, old: DemoBackend, new: DemoBackend, tenant: str
) -> None:
    await old.seed(tenant, "d1", {"name": "alpha", "n": 1, "nested": {"k": [1, 2]}})
    await new.seed(tenant, "d1", {"name": "beta", "n": 1, "nested": {"k": [1, 3]}})
    await proxy.set_phase_api(tenant, Phase.SHADOW)
    before = await proxy.stats()

    response = await proxy.client.get("/items/d1?view=full", headers=h(tenant))
    assert response.status_code == 200
    assert_served(response, Side.OLD, Phase.SHADOW)
    assert response.json()["name"] == "alpha"  # the client always gets the serving side's answer

    async def stored() -> bool:
        return bool((await proxy.stats())["divergences"]["stored"] == before["divergences"]["stored"] + 1)

    await wait_for(stored, timeout_s=5)
    stats = await proxy.stats()
    assert stats["shadow"]["divergent"] == before["shadow"]["divergent"] + 1
    assert stats["shadow"]["compared"] == before["shadow"]["compared"] + 1
    listed = await proxy.admin.get(f"/tenants/{tenant}/divergences")
    assert listed.status_code == 200
    entries = listed.json()["divergences"]
    assert len(entries) == 1
    entry = entries[0]
    assert sorted(d["path"] for d in entry["differences"]) == ["$.name", "$.nested.k[1]"]
    name_diff = next(d for d in entry["differences"] if d["path"] == "$.name")
    assert (name_diff["serving"], name_diff["shadow"]) == ("alpha", "beta")
    assert entry["tenant"] == tenant
    assert entry["phase"] == "shadow"
    assert entry["serving_side"] == "old"
    assert (entry["method"], entry["path"], entry["query"]) == ("GET", "/items/d1", "view=full")
    assert (entry["serving_status"], entry["shadow_status"]) == (200, 200)
    # Another tenant has nothing recorded.
    other = await proxy.admin.get("/tenants/nobody-here/divergences")
    assert other.json()["divergences"] == []


# -- fallback --------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
async def refused_new_proxy(shared_builder: ProxyBuilder) -> Proxy:
    """A proxy whose `new` backend refuses connections."""
    return await shared_builder.start({"backends": {"new": {"url": f"http://127.0.0.1:{free_port()}"}}})


def fallback_counts(stats: dict[str, Any]) -> tuple[dict[str, int], int]:
    return dict(stats["fallbacks"]), int(stats["fallback_refused"])


@pytest.mark.parametrize("phase", [Phase.LIVE, Phase.RAMPDOWN], ids=["live", "rampdown"])
async def test_failed_read_falls_back_to_old_when_nothing_is_pending(
    phase: Phase, proxy: Proxy, old: DemoBackend, new: DemoBackend, tenant: str, intent_buffer: IntentBuffer
) -> None:
    await old.seed(tenant, "f1", {"from": "old"})
    await proxy.set_phase_api(tenant, phase)
    await new.control(fail_reads=True)
    assert await intent_buffer.pending(tenant, Side.OLD) == 0
    fallbacks, refused = fallback_counts(await proxy.stats())

    response = await proxy.client.get("/items/f1", headers=h(tenant))
    assert response.status_code == 200, response.text
    assert_served(response, Side.OLD, phase)
    assert response.json() == {"from": "old", "id": "f1"}
    assert len(new.recorder.requests_for(tenant, method="GET", path="/items/f1")) >= 1
    after, after_refused = fallback_counts(await proxy.stats())
    assert after.get(phase.value, 0) == fallbacks.get(phase.value, 0) + 1
    assert after_refused == refused


@pytest.mark.parametrize("phase", [Phase.LIVE, Phase.RAMPDOWN], ids=["live", "rampdown"])
async def test_failed_read_is_503_while_intents_toward_old_are_pending(
    phase: Phase, proxy: Proxy, old: DemoBackend, new: DemoBackend, tenant: str, intent_buffer: IntentBuffer
) -> None:
    await proxy.set_phase_api(tenant, phase)
    write = await proxy.client.put("/items/p1", json={"v": 2}, headers=h(tenant))
    assert write.status_code == 200
    assert_served(write, Side.NEW, phase)
    assert await intent_buffer.pending(tenant, Side.OLD) == 1  # no worker runs: it stays pending
    await new.control(fail_reads=True)
    fallbacks, refused = fallback_counts(await proxy.stats())

    response = await proxy.client.get("/items/p1", headers=h(tenant))
    assert response.status_code == 503
    assert response.headers["retry-after"].isdigit()
    assert response.json()["error"] == "fallback_unsafe"
    assert response.headers["x-cutover-phase"] == phase.value
    assert fallback_counts(await proxy.stats()) == (fallbacks, refused + 1)
    # Old never saw the write (it is still only an intent).
    assert await old.items_of(tenant) == {}


async def test_refused_new_falls_back_to_old_but_writes_do_not(
    refused_new_proxy: Proxy, old: DemoBackend, tenant: str, intent_buffer: IntentBuffer
) -> None:
    proxy = refused_new_proxy
    await old.seed(tenant, "r1", {"from": "old"})
    await proxy.set_phase_direct(tenant, Phase.RAMPDOWN)
    fallbacks, _ = fallback_counts(await proxy.stats())

    read = await proxy.client.get("/items/r1", headers=h(tenant))
    assert read.status_code == 200
    assert_served(read, Side.OLD, Phase.RAMPDOWN)
    after, _ = fallback_counts(await proxy.stats())
    assert after.get("rampdown", 0) == fallbacks.get("rampdown", 0) + 1

    write = await proxy.client.put("/items/r2", json={"v": 1}, headers=h(tenant))
    assert write.status_code == 502
    assert write.json()["backend"] == "new"
    assert "r2" not in await old.items_of(tenant)
    assert old.recorder.requests_for(tenant, method="PUT", path="/items/r2") == []
    assert await intent_buffer.intents_for(tenant) == []


async def test_failed_write_on_new_never_falls_back(
    proxy: Proxy, old: DemoBackend, new: DemoBackend, tenant: str, intent_buffer: IntentBuffer
) -> None:
    await proxy.set_phase_api(tenant, Phase.LIVE)
    await new.control(fail_writes=True)
    before = fallback_counts(await proxy.stats())
    response = await proxy.client.put("/items/w1", json={"v": 1}, headers=h(tenant))
    assert response.status_code == 503
    assert response.json() == {"error": "injected_failure", "backend": "new"}
    assert_served(response, Side.NEW, Phase.LIVE)
    assert old.recorder.requests_for(tenant, method="PUT") == []
    assert await old.items_of(tenant) == {}
    assert await intent_buffer.intents_for(tenant) == []
    assert fallback_counts(await proxy.stats()) == before


async def test_fallback_refused_when_sink_reports_pending(
    memory_proxy: MemoryProxy, old: DemoBackend, new: DemoBackend, tenant: str
) -> None:
    proxy, sink = memory_proxy.proxy, memory_proxy.sink
    await old.seed(tenant, "m1", {"from": "old"})
    await proxy.set_phase_direct(tenant, Phase.RAMPDOWN)
    await new.control(fail_reads=True)
    fallbacks, refused = fallback_counts(await proxy.stats())

    sink.pending_counts[(tenant, Side.OLD)] = 3
    answer = await proxy.client.get("/items/m1", headers=h(tenant))
    assert answer.status_code == 503
    assert answer.json()["error"] == "fallback_unsafe"
    assert "retry-after" in answer.headers

    sink.pending_counts[(tenant, Side.OLD)] = 0
    sink.fail_pending = True  # an unknown answer is not safe either
    unknown = await proxy.client.get("/items/m1", headers=h(tenant))
    assert unknown.status_code == 503
    assert unknown.json()["error"] == "fallback_unsafe"

    sink.fail_pending = False
    served = await proxy.client.get("/items/m1", headers=h(tenant))
    assert served.status_code == 200
    assert_served(served, Side.OLD, Phase.RAMPDOWN)
    after, after_refused = fallback_counts(await proxy.stats())
    assert after_refused == refused + 2
    assert after.get("rampdown", 0) == fallbacks.get("rampdown", 0) + 1


async def test_write_whose_intent_cannot_be_buffered_is_503(
    memory_proxy: MemoryProxy, new: DemoBackend, tenant: str
) -> None:
    proxy, sink = memory_proxy.proxy, memory_proxy.sink
    await proxy.set_phase_direct(tenant, Phase.DUAL_WRITE)
    before = (await proxy.stats())["intents"]

    ok = await proxy.client.put("/items/b1", json={"v": 1}, headers=h(tenant))
    assert ok.status_code == 200
    assert [(i.tenant, i.target, i.path) for i in sink.intents] == [(tenant, Side.NEW, "/items/b1")]

    sink.fail_append = True
    response = await proxy.client.put("/items/b2", json={"v": 2}, headers=h(tenant))
    assert response.status_code == 503
    assert response.json()["error"] == "buffer_unavailable"
    assert "retry-after" in response.headers
    assert len(sink.intents) == 1
    after = (await proxy.stats())["intents"]
    assert (after["appended"], after["failed"]) == (before["appended"] + 1, before["failed"] + 1)
    assert await new.items_of(tenant) == {}


async def test_write_is_refused_before_forwarding_when_the_buffer_cannot_accept(
    memory_proxy: MemoryProxy, old: DemoBackend, new: DemoBackend, tenant: str
) -> None:
    proxy, sink = memory_proxy.proxy, memory_proxy.sink
    sink.accepting = False
    await proxy.set_phase_direct(tenant, Phase.SHADOW)
    response = await proxy.client.put("/items/n1", json={"v": 1}, headers=h(tenant))
    assert response.status_code == 503
    assert response.json()["error"] == "buffer_full"
    assert "retry-after" in response.headers
    assert old.recorder.requests_for(tenant) == []
    assert new.recorder.requests_for(tenant) == []
    assert sink.intents == []
    ready = (await proxy.anon_admin.get("/readyz")).json()
    assert ready["buffer"]["accepting"] is False
    # Reads are not affected.
    read = await proxy.client.get("/items", headers=h(tenant))
    assert read.status_code == 200
    assert_served(read, Side.OLD, Phase.SHADOW)


async def test_the_production_sink_buffers_intents_in_redis(
    make_proxy: ProxyFactory, tenant: str, redis_client: aioredis.Redis
) -> None:
    proxy = await make_proxy()
    assert isinstance(proxy.runtime.sink, SpoolingSink)  # what `cutover serve` runs, unless a test says
    intent_buffer = IntentBuffer.of(proxy, redis_client)
    await proxy.set_phase_api(tenant, Phase.DUAL_WRITE)
    response = await proxy.client.post("/items", json={"v": 1}, headers=h(tenant))
    assert response.status_code == 201
    assert_served(response, Side.OLD, Phase.DUAL_WRITE)
    created = response.json()["id"]
    intents = await intent_buffer.intents_for(tenant)
    assert [(i.target, i.method, i.path, i.status) for i in intents] == [(Side.NEW, "POST", "/items", 201)]
    assert orjson.loads(intents[0].response_body)["id"] == created
    assert ("location", f"/items/{created}") in [(k.lower(), v) for k, v in intents[0].response_headers]
    ready = (await proxy.anon_admin.get("/readyz")).json()
    assert ready["buffer"]["spooled"] == 0
    assert ready["buffer"]["accepting"] is True
