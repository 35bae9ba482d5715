"""HttpApplier settling: an intent in doubt, or one whose replay shows the mirror diverged, sets its record
on the mirror to the authoritative state with what the mirror supports (json-server-like backends on
both sides: PUT never creates, a create with an existing id answers 500)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web

from buffer_worker.apply_errors import PermanentApplyError, TransientApplyError
from buffer_worker.http_applier import HttpApplier
from buffer_worker.intent import Intent
from proxy.demo.backend import create_backend_app
from routing.phases import Side
from tests.buffer_worker.conftest import BackendFactory, make_settings
from tests.support.http import loopback_client
from tests.support.jsonlike_server import create_app

TENANT = "acme"
HEADERS = {"X-Tenant-ID": TENANT}


@dataclass
class JsonLike:
    """A json-server-like backend in this process, with every request recorded."""

    url: str
    seen: list[tuple[str, str]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)  # of each request in `seen`

    async def call(self, method: str, path: str, body: Any = None) -> httpx.Response:
        async with loopback_client(base_url=self.url) as client:
            return await client.request(method, path, json=body, headers=HEADERS)

    async def record(self, key: str) -> Any:
        response = await self.call("GET", f"/items/{key}")
        return response.json() if response.status_code == 200 else None

    def writes(self) -> list[tuple[str, str]]:
        return [(method, path) for method, path in self.seen if method != "GET"]


@pytest.fixture
async def sides() -> AsyncIterator[dict[Side, JsonLike]]:
    runners: list[web.AppRunner] = []
    found: dict[Side, JsonLike] = {}
    for side in Side:
        backend = JsonLike("")
        runner = web.AppRunner(create_app(backend.seen, backend.headers), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        backend.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        runners.append(runner)
        found[side] = backend
    yield found
    for runner in runners:
        await runner.cleanup()


def applier_for(prefix: str, old_url: str, new_url: str, create: str = "post") -> HttpApplier:
    resources = [{"name": "items", "list_path": "/items", "create": create}]
    return HttpApplier(make_settings(prefix, old_url, new_url, data={"rest": {"resources": resources}}))


@pytest.fixture
async def applier(sides: dict[Side, JsonLike], prefix: str) -> AsyncIterator[HttpApplier]:
    applier = applier_for(prefix, sides[Side.OLD].url, sides[Side.NEW].url)
    await applier.start()
    yield applier
    await applier.close()


def intent(method: str, path: str, body: Any = None, *, response: Any = None, status: int = 200) -> Intent:
    return Intent(
        tenant=TENANT,
        target=Side.NEW,
        method=method,
        path=path,
        query="",
        headers=(("content-type", "application/json"),),
        body=b"" if body is None else orjson.dumps(body),
        status=status,
        response_body=b"" if response is None else orjson.dumps(response),
    )


async def seed(backend: JsonLike, record: dict[str, Any]) -> None:
    assert (await backend.call("POST", "/items", record)).status_code == 201
    backend.seen.clear()
    backend.headers.clear()


# -- in doubt: read both sides, write what the mirror supports --------------------------------------------
async def test_in_doubt_and_the_mirror_lacks_the_record_creates_it_in_the_resource_style(
    applier: HttpApplier, sides: dict[Side, JsonLike]
) -> None:
    old, new = sides[Side.OLD], sides[Side.NEW]
    await seed(old, {"id": "a", "v": 2})
    await applier.resolve(intent("PATCH", "/items/a", {"v": 2}))
    assert new.writes() == [("POST", "/items")]  # json-server: PUT never creates
    assert await new.record("a") == {"id": "a", "v": 2}


async def test_in_doubt_with_create_style_put_puts_the_record(
    start_backend: BackendFactory, prefix: str
) -> None:
    """A backend whose PUT upserts (the demo data service) is given a missing record by PUT."""
    old = await start_backend(create_backend_app("old"))
    new = await start_backend(create_backend_app("new"))
    await old.post_json("/_load", {TENANT: {"a": {"id": "a", "v": 1}}})
    applier = applier_for(prefix, old.url, new.url, create="put")
    await applier.start()
    try:
        assert await applier.resolve_dead_letter(intent("PUT", "/items/a", {"v": 1})) == "PUT"
    finally:
        await applier.close()
    assert (await new.get_json("/_dump"))["items"][TENANT] == {"a": {"id": "a", "v": 1}}


async def test_in_doubt_and_the_mirror_holds_another_state_puts_the_authoritative_one(
    applier: HttpApplier, sides: dict[Side, JsonLike]
) -> None:
    old, new = sides[Side.OLD], sides[Side.NEW]
    await seed(old, {"id": "a", "v": 3})
    await seed(new, {"id": "a", "v": 1})
    # A stale copy of an earlier write: the mirror gets the state that includes every later write.
    await applier.resolve(intent("PUT", "/items/a", {"v": 1}))
    assert new.writes() == [("PUT", "/items/a")]
    assert await new.record("a") == {"id": "a", "v": 3}


async def test_settling_requests_are_neither_conditional_nor_encoded_like_the_intent(
    applier: HttpApplier, sides: dict[Side, JsonLike]
) -> None:
    """The intent's If-Match and Content-Encoding belonged to its own body and precondition: a state read
    or a settling write carrying them would be refused (412) or misread (a plain body said to be gzip)."""
    old, new = sides[Side.OLD], sides[Side.NEW]
    await seed(old, {"id": "a", "v": 2})
    await seed(new, {"id": "a", "v": 1})
    conditional = Intent(
        tenant=TENANT,
        target=Side.NEW,
        method="PATCH",
        path="/items/a",
        query="",
        headers=(("content-type", "application/json"), ("if-match", '"v1"'), ("content-encoding", "gzip")),
        body=b"\x1f\x8b compressed",
        status=200,
        response_body=b"{}",
    )
    await applier.resolve(conditional)
    assert new.writes() == [("PUT", "/items/a")]
    for sent in old.headers + new.headers:
        assert "if-match" not in sent, sent
        assert "content-encoding" not in sent, sent
    assert new.headers[-1]["content-type"].startswith("application/json")
    assert new.headers[-1]["idempotency-key"].startswith(conditional.intent_id + ".")
    assert await new.record("a") == {"id": "a", "v": 2}


async def test_in_doubt_and_equal_sends_nothing(applier: HttpApplier, sides: dict[Side, JsonLike]) -> None:
    old, new = sides[Side.OLD], sides[Side.NEW]
    await seed(old, {"id": "a", "v": 1})
    await seed(new, {"id": "a", "v": 1})
    await applier.resolve(intent("POST", "/items", {"v": 1}, response={"id": "a", "v": 1}, status=201))
    assert new.writes() == []
    assert [m for m, _ in new.seen] == ["GET"]
    assert [m for m, _ in old.seen] == ["GET"]


async def test_in_doubt_and_deleted_on_the_authoritative_side_deletes_it(
    applier: HttpApplier, sides: dict[Side, JsonLike]
) -> None:
    new = sides[Side.NEW]
    await seed(new, {"id": "a", "v": 1})
    await applier.resolve(intent("PATCH", "/items/a", {"v": 2}))
    assert new.writes() == [("DELETE", "/items/a")]
    assert await new.record("a") is None


async def test_in_doubt_and_absent_on_both_sides_sends_nothing(
    applier: HttpApplier, sides: dict[Side, JsonLike]
) -> None:
    await applier.resolve(intent("DELETE", "/items/a"))
    assert sides[Side.NEW].writes() == []


async def test_a_write_no_resource_describes_is_replayed_even_in_doubt(
    applier: HttpApplier, sides: dict[Side, JsonLike]
) -> None:
    """Nothing to read it by: it is replayed as before (and README says what is then not guaranteed);
    what the mirror answers (here 404: it has no such collection) is classified as for any replay."""
    with pytest.raises(PermanentApplyError, match="404 to POST /other"):
        await applier.resolve(intent("POST", "/other", {"v": 1}, response={"v": 1}, status=201))
    assert sides[Side.NEW].seen == [("POST", "/other")]
    assert sides[Side.OLD].seen == []


# -- a replay whose answer shows the mirror diverged is settled, not retried or dead-lettered --------------
async def test_patch_of_a_record_deleted_since_is_settled_not_dead_lettered(
    applier: HttpApplier, sides: dict[Side, JsonLike]
) -> None:
    """The record was deleted on both sides after this PATCH (its DELETE comes later in the stream):
    the mirror answers 404, the authoritative side has no record either, so nothing is left to do."""
    new = sides[Side.NEW]
    await applier.apply(intent("PATCH", "/items/gone", {"v": 2}))
    assert new.seen == [("PATCH", "/items/gone"), ("GET", "/items/gone")]


async def test_put_of_a_record_the_mirror_lacks_creates_it(
    applier: HttpApplier, sides: dict[Side, JsonLike]
) -> None:
    old, new = sides[Side.OLD], sides[Side.NEW]
    await seed(old, {"id": "a", "v": 5})
    await applier.apply(intent("PUT", "/items/a", {"v": 5}))
    assert new.writes() == [("PUT", "/items/a"), ("POST", "/items")]
    assert await new.record("a") == {"id": "a", "v": 5}


async def test_create_answered_duplicate_id_is_settled(
    applier: HttpApplier, sides: dict[Side, JsonLike]
) -> None:
    """A create applied before (its acknowledgement lost in a crash) comes again: json-server answers
    500 "duplicate id"; the mirror already holds the authoritative state, so the intent is done."""
    old, new = sides[Side.OLD], sides[Side.NEW]
    await seed(old, {"id": "a", "v": 1})
    await seed(new, {"id": "a", "v": 1})
    await applier.apply(intent("POST", "/items", {"v": 1}, response={"id": "a", "v": 1}, status=201))
    assert new.writes() == [("POST", "/items")]
    assert await new.record("a") == {"id": "a", "v": 1}


async def test_a_mirror_that_fails_the_settling_write_too_is_retried(
    sides: dict[Side, JsonLike], prefix: str
) -> None:
    """A 500 to a create may mean "duplicate" or a failing mirror; settling tells them apart. This mirror
    lacks the record and fails the settling create too: a transient failure, retried, never settled."""
    await seed(sides[Side.OLD], {"id": "a", "v": 1})
    seen: list[str] = []

    async def failing(request: web.Request) -> web.Response:
        seen.append(request.method)
        if request.method == "GET":
            return web.json_response({}, status=404)
        return web.Response(status=500, text="overloaded")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", failing)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    applier = applier_for(prefix, sides[Side.OLD].url, f"http://127.0.0.1:{runner.addresses[0][1]}")
    await applier.start()
    try:
        with pytest.raises(TransientApplyError, match="500 to POST /items"):
            await applier.apply(intent("POST", "/items", {"v": 1}, response={"id": "a", "v": 1}, status=201))
    finally:
        await applier.close()
        await runner.cleanup()
    assert seen == ["POST", "GET", "POST"]  # the replay, the mirror's state, the settling create
