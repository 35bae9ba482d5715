"""Every component that talks to a backend sends what the data plane sends: the same credentials, the same
header rewrites, the same precedence. The worker, REST verification and the proxy once built three
clients from one `backends.<side>` block and disagreed (the worker crashed on a credentialed URL)."""

from __future__ import annotations

from typing import Any

from backends.client import BackendClient
from backfill.rest_verify import RestSide
from buffer_worker.http_applier import HttpApplier
from buffer_worker.intent import Intent
from config.data import RestResource
from routing.phases import Side
from tests.buffer_worker.conftest import BackendFactory, RecordingApp, make_settings
from tests.support.asgi import Receive, Scope, Send, respond


async def _empty_list(scope: Scope, receive: Receive, send: Send) -> None:
    await respond(send, 200, b'{"items": []}')


def _rewritten(headers: tuple[tuple[str, str], ...]) -> dict[str, list[str]]:
    """The fields the backend settings decide, as the backend received them."""
    names = ("authorization", "x-service", "x-client-only")
    return {name: [v for k, v in headers if k == name] for name in names}


async def test_data_plane_worker_and_verify_send_the_same_credentials_and_rewrites(
    start_backend: BackendFactory, prefix: str
) -> None:
    recorder = RecordingApp(_empty_list)
    backend = await start_backend(recorder)
    url = backend.url.replace("http://", "http://svc:p%3Ass@")
    block: dict[str, Any] = {
        "url": url,
        "headers": {"set": {"X-Service": "cutover"}, "remove": ["X-Client-Only"]},
    }
    settings = make_settings(prefix, url, url, backends={"old": block, "new": block})

    # The data plane (and the shadow process, which uses the same call): a client's request.
    client = BackendClient(Side.NEW, settings.backends.new)
    await client.start()
    try:
        response = await client.request(
            "GET",
            client.url_for("/items", ""),
            client.rewriter.build(
                [(b"x-client-only", b"1"), (b"authorization", b"Bearer client")],
                client_host="10.0.0.1",
                scheme="http",
            ),
            b"",
        )
        response.release()
    finally:
        await client.close()

    # The worker's HTTP applier: a mirrored write.
    applier = HttpApplier(settings)
    await applier.start()
    try:
        await applier.apply(
            Intent(
                tenant="acme",
                target=Side.NEW,
                method="PUT",
                path="/items/1",
                query="",
                headers=(("content-type", "application/json"),),
                body=b"{}",
                status=200,
                response_body=b"{}",
            )
        )
    finally:
        await applier.close()

    # REST verification: a list page.
    client = BackendClient(Side.NEW, settings.backends.new)
    await client.start()
    try:
        await RestSide("new", client, settings, "acme").records(
            RestResource(name="items", list_path="/items?fields=all")
        )
    finally:
        await client.close()

    proxied, mirrored, listed = recorder.seen
    expected = {
        "authorization": ["Basic c3ZjOnA6c3M="],  # svc:p:ss, the URL's (decoded) credentials
        "x-service": ["cutover"],
        "x-client-only": [],
    }
    assert _rewritten(proxied.headers) == expected
    assert _rewritten(mirrored.headers) == expected
    assert _rewritten(listed.headers) == expected
    # verify keeps the list path's own query and adds its paging to it
    assert listed.path == "/items"
    assert listed.query == "fields=all&limit=500&page=1"
