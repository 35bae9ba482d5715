"""HttpApplier: replays an intent over real HTTP and classifies the answer."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from buffer_worker.apply_errors import ApplyError, PermanentApplyError, TransientApplyError, UnreachableError
from buffer_worker.http_applier import HttpApplier
from buffer_worker.intent import Intent
from routing.phases import Side
from tests.buffer_worker.conftest import Backend, BackendFactory, RecordingApp, make_settings
from tests.support.asgi import Receive, Scope, Send, respond
from tests.support.servers import free_port

BINARY = bytes(range(256)) * 4


async def status_app(scope: Scope, receive: Receive, send: Send) -> None:
    """`/status/<code>` answers that code, `/sleep` answers after 2 s (unless the client is gone by then),
    anything else 200 `{}`."""
    path: str = scope["path"]
    if path.startswith("/status/"):
        code = int(path.rsplit("/", 1)[1])
        await respond(send, code, b"" if code in (204, 304) else orjson.dumps({"status": code}))
        return
    if path == "/sleep":
        # Waiting for the disconnect, not just sleeping: stopping the server waits for this handler.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(_disconnected(receive), 2)
            return
    await respond(send, 200, b"{}")


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


@dataclass
class Mirrors:
    old: Backend
    new: Backend
    old_rec: RecordingApp
    new_rec: RecordingApp


@pytest.fixture
async def mirrors(start_backend: BackendFactory) -> Mirrors:
    old_rec, new_rec = RecordingApp(status_app), RecordingApp(status_app)
    return Mirrors(await start_backend(old_rec), await start_backend(new_rec), old_rec, new_rec)


@pytest.fixture
async def applier(mirrors: Mirrors, prefix: str) -> AsyncIterator[HttpApplier]:
    settings = make_settings(
        prefix,
        mirrors.old.url,
        mirrors.new.url,
        backends={
            "old": {"url": mirrors.old.url, "headers": {"set": {"Authorization": "Bearer old-secret"}}},
            "new": {
                "url": mirrors.new.url + "/",  # a trailing slash must not double up
                "headers": {
                    "set": {"Authorization": "Bearer new-secret", "X-Mirror": "yes"},
                    "remove": ["X-Client-Only", "if-match"],
                },
            },
        },
    )
    applier = HttpApplier(settings)
    await applier.start()
    yield applier
    await applier.close()


def intent(**overrides: Any) -> Intent:
    values: dict[str, Any] = {
        "tenant": "acme",
        "target": Side.NEW,
        "method": "PUT",
        "path": "/items/1",
        "query": "",
        "headers": (("Content-Type", "application/octet-stream"),),
        "body": BINARY,
        "status": 200,
        "response_body": b"{}",
    }
    values.update(overrides)
    return Intent(**values)


async def test_replays_method_path_query_body_and_headers(applier: HttpApplier, mirrors: Mirrors) -> None:
    sent = intent(
        method="PATCH",
        path="/items/a%2Fb/x%20y",
        query="x=1&y=a%20b&z=c+d&e=%26",
        headers=(
            ("Content-Type", "application/octet-stream"),
            ("X-Client-Only", "drop me"),
            ("If-Match", '"v1"'),
            ("Authorization", "Bearer client-token"),
            ("Idempotency-Key", "client-chosen"),
            ("X-Tenant-ID", "someone-else"),
            ("Content-Language", "de"),
        ),
    )
    await applier.apply(sent)
    assert mirrors.old_rec.seen == []
    [seen] = mirrors.new_rec.seen
    assert seen.method == "PATCH"
    assert seen.path == "/items/a%2Fb/x%20y"
    assert seen.query == "x=1&y=a%20b&z=c+d&e=%26"
    assert seen.body == BINARY
    assert seen.header("content-type") == "application/octet-stream"
    assert seen.header("content-language") == "de"
    assert seen.header("x-client-only") is None  # headers.remove
    assert seen.header("if-match") is None  # headers.remove matches case-insensitively
    assert seen.header("authorization") == "Bearer new-secret"  # headers.set wins over the client's
    assert seen.header("x-mirror") == "yes"
    assert seen.tenant == "acme"  # the intent's tenant, always
    assert seen.idempotency_key == sent.intent_id  # the intent id, never the client's key
    assert [name for name, _ in seen.headers].count("idempotency-key") == 1
    assert [name for name, _ in seen.headers].count("authorization") == 1


async def test_target_old_uses_the_old_backend_and_its_rewrites(
    applier: HttpApplier, mirrors: Mirrors
) -> None:
    sent = intent(target=Side.OLD, method="DELETE", path="/items/9", body=b"", headers=(("If-Match", "*"),))
    await applier.apply(sent)
    assert mirrors.new_rec.seen == []
    [seen] = mirrors.old_rec.seen
    assert (seen.method, seen.path, seen.query, seen.body) == ("DELETE", "/items/9", "", b"")
    assert seen.header("authorization") == "Bearer old-secret"
    assert seen.header("x-mirror") is None
    assert seen.header("if-match") == "*"  # only the new backend removes it
    assert seen.idempotency_key == sent.intent_id


async def test_create_with_location_becomes_put_to_that_location(
    applier: HttpApplier, mirrors: Mirrors
) -> None:
    body = orjson.dumps({"name": "widget"})
    sent = intent(
        method="POST",
        path="/items",
        query="notify=1",
        body=body,
        status=201,
        response_body=orjson.dumps({"id": "srv-7", "name": "widget"}),
        response_headers=(("content-type", "application/json"), ("Location", "/items/srv-7")),
    )
    await applier.apply(sent)
    [seen] = mirrors.new_rec.seen
    assert (seen.method, seen.path, seen.body) == ("PUT", "/items/srv-7", body)
    assert seen.query == "notify=1"
    assert seen.idempotency_key == sent.intent_id


async def test_create_without_location_injects_the_assigned_id(
    applier: HttpApplier, mirrors: Mirrors
) -> None:
    sent = intent(
        method="POST",
        path="/items",
        body=orjson.dumps({"name": "widget", "n": 3}),
        status=201,
        response_body=orjson.dumps({"id": "srv-8", "name": "widget", "n": 3}),
    )
    await applier.apply(sent)
    [seen] = mirrors.new_rec.seen
    assert (seen.method, seen.path) == ("POST", "/items")
    assert orjson.loads(seen.body) == {"name": "widget", "n": 3, "id": "srv-8"}


async def test_absolute_location_on_another_host_is_not_followed(
    applier: HttpApplier, mirrors: Mirrors
) -> None:
    sent = intent(
        method="POST",
        path="/items",
        body=orjson.dumps({"name": "w"}),
        status=201,
        response_body=orjson.dumps({"id": 42}),
        response_headers=(("Location", "http://elsewhere.example/items/42"),),
    )
    await applier.apply(sent)
    [seen] = mirrors.new_rec.seen
    assert (seen.method, seen.path) == ("POST", "/items")
    assert orjson.loads(seen.body) == {"name": "w", "id": 42}


@pytest.mark.parametrize(
    ("status", "response_body", "body"),
    [
        pytest.param(201, b"not json", b'{"name": "w"}', id="response-not-json"),
        pytest.param(201, b'{"other": 1}', b'{"name": "w"}', id="no-id-field"),
        pytest.param(201, b'{"id": "x"}', BINARY, id="request-not-json"),
        pytest.param(201, b'{"id": "x"}', b"[1, 2]", id="request-not-object"),
    ],
)
async def test_create_without_usable_id_is_replayed_as_is(
    applier: HttpApplier, mirrors: Mirrors, status: int, response_body: bytes, body: bytes
) -> None:
    await applier.apply(
        intent(method="POST", path="/items", body=body, status=status, response_body=response_body)
    )
    [seen] = mirrors.new_rec.seen
    assert (seen.method, seen.path, seen.body) == ("POST", "/items", body)


async def test_id_field_is_configurable(mirrors: Mirrors, prefix: str) -> None:
    settings = make_settings(prefix, mirrors.old.url, mirrors.new.url, worker={"id_field": "uuid"})
    applier = HttpApplier(settings)
    await applier.start()
    try:
        await applier.apply(
            intent(
                method="POST",
                path="/items",
                body=b'{"name": "w", "id": "client"}',
                status=201,
                response_body=b'{"uuid": "u-1", "id": "ignored"}',
            )
        )
    finally:
        await applier.close()
    [seen] = mirrors.new_rec.seen
    assert orjson.loads(seen.body) == {"name": "w", "id": "client", "uuid": "u-1"}


@pytest.mark.parametrize("status", [404, 410])
async def test_delete_of_a_missing_resource_is_applied(
    applier: HttpApplier, mirrors: Mirrors, status: int
) -> None:
    await applier.apply(intent(method="DELETE", path=f"/status/{status}", body=b"", status=204))
    assert len(mirrors.new_rec.seen) == 1


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
async def test_2xx_is_applied(applier: HttpApplier, status: int) -> None:
    await applier.apply(intent(path=f"/status/{status}"))


@pytest.mark.parametrize("status", [500, 502, 503, 504, 599, 429, 408, 425])
async def test_5xx_and_throttling_are_transient(applier: HttpApplier, status: int) -> None:
    sent = intent(path=f"/status/{status}")
    with pytest.raises(TransientApplyError) as info:
        await applier.apply(sent)
    assert not isinstance(info.value, UnreachableError)
    assert info.value.intent is sent
    assert str(status) in info.value.detail


@pytest.mark.parametrize(
    ("method", "status"),
    [("PUT", 400), ("POST", 400), ("PUT", 401), ("PUT", 403), ("PUT", 404), ("POST", 409), ("PUT", 422)],
)
async def test_other_4xx_are_permanent(applier: HttpApplier, method: str, status: int) -> None:
    sent = intent(method=method, path=f"/status/{status}", status=200)
    with pytest.raises(PermanentApplyError) as info:
        await applier.apply(sent)
    assert not isinstance(info.value, TransientApplyError)
    assert info.value.intent is sent
    assert sent.intent_id in str(info.value)


async def test_redirect_is_not_followed_and_is_permanent(applier: HttpApplier, mirrors: Mirrors) -> None:
    with pytest.raises(PermanentApplyError):
        await applier.apply(intent(path="/status/307"))
    assert len(mirrors.new_rec.seen) == 1


async def test_connection_refused_is_unreachable(prefix: str, mirrors: Mirrors) -> None:
    settings = make_settings(prefix, mirrors.old.url, f"http://127.0.0.1:{free_port()}")
    applier = HttpApplier(settings)
    await applier.start()
    try:
        sent = intent()
        with pytest.raises(UnreachableError) as info:
            await applier.apply(sent)
        assert isinstance(info.value, TransientApplyError)
        assert isinstance(info.value, ApplyError)
        assert info.value.intent is sent
    finally:
        await applier.close()


async def test_timeout_is_unreachable(prefix: str, mirrors: Mirrors) -> None:
    settings = make_settings(prefix, mirrors.old.url, mirrors.new.url, worker={"apply_timeout_s": 0.2})
    applier = HttpApplier(settings)
    await applier.start()
    try:
        with pytest.raises(UnreachableError):
            await applier.apply(intent(path="/sleep"))
    finally:
        await applier.close()


async def test_location_under_a_base_path_is_not_doubled(start_backend: BackendFactory, prefix: str) -> None:
    recorder = RecordingApp(status_app)
    backend = await start_backend(recorder)
    settings = make_settings(prefix, f"{backend.url}/api", f"{backend.url}/api")
    applier = HttpApplier(settings)
    await applier.start()
    try:
        # the proxy forwarded POST /items to http://old/api/items; the old backend answered with its own
        # absolute-path Location, which includes the /api base path
        await applier.apply(
            intent(
                method="POST",
                path="/items",
                body=b'{"name": "w"}',
                status=201,
                response_body=b'{"id": "9"}',
                response_headers=(("Location", "/api/items/9"),),
            )
        )
    finally:
        await applier.close()
    [seen] = recorder.seen
    assert (seen.method, seen.path) == ("PUT", "/api/items/9")


async def test_credentials_in_the_url_become_basic_auth_unless_headers_set_names_one(
    mirrors: Mirrors, prefix: str
) -> None:
    """The backend client's credential rule, as the data plane applies it: `user:password@` in the URL is
    that backend's `Authorization: Basic`, and an explicit `headers.set.Authorization` wins. Both together
    once made aiohttp refuse every mirrored request (a ValueError that ended the worker)."""
    with_credentials = mirrors.old.url.replace("http://", "http://svc:s%40cret@")
    settings = make_settings(
        prefix,
        with_credentials,
        mirrors.new.url.replace("http://", "http://svc:pw@"),
        backends={
            "old": {"url": with_credentials},
            "new": {
                "url": mirrors.new.url.replace("http://", "http://svc:pw@"),
                "headers": {"set": {"Authorization": "Bearer explicit"}},
            },
        },
    )
    applier = HttpApplier(settings)
    await applier.start()
    try:
        await applier.apply(intent(target=Side.OLD))
        await applier.apply(intent(target=Side.NEW))
    finally:
        await applier.close()
    (to_old,) = mirrors.old_rec.seen
    (to_new,) = mirrors.new_rec.seen
    assert to_old.header("authorization") == "Basic " + base64.b64encode(b"svc:s@cret").decode()
    assert to_new.header("authorization") == "Bearer explicit"
    assert [name for name, _ in to_new.headers].count("authorization") == 1


async def test_a_request_the_client_cannot_build_is_a_permanent_failure(applier: HttpApplier) -> None:
    """A header value with a line break is refused before anything is sent; the same intent would be
    refused again, so it is dead-lettered at once instead of retried."""
    broken = intent(headers=(("content-type", "application/json\r\nX-Injected: 1"),))
    with pytest.raises(PermanentApplyError, match="could not be built"):
        await applier.apply(broken)
