"""RecordMap: which record an intent writes, from `data.rest.resources` and `worker.state_transfer`."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from buffer_worker.intent import Intent
from buffer_worker.records import RecordMap
from config.data import RestResource
from routing.phases import Side
from tests.buffer_worker.conftest import make_settings

RESOURCES = [
    {"name": "items", "list_path": "/items?expand=1", "create": "post"},
    {"name": "orders", "list_path": "/orders", "item_path": "/orders/{key}/doc", "id_field": "number"},
]


def records(**worker: Any) -> RecordMap:
    return RecordMap(
        make_settings(
            "p",
            "http://old.test/api",
            "http://new.test",
            data={"rest": {"resources": RESOURCES}},
            worker=worker,
        )
    )


def intent(method: str, path: str, *, body: Any = None, response: Any = None, headers: Any = ()) -> Intent:
    return Intent(
        tenant="acme",
        target=Side.NEW,
        method=method,
        path=path,
        query="",
        headers=(),
        body=b"" if body is None else orjson.dumps(body),
        status=201 if method == "POST" else 200,
        response_body=b"" if response is None else orjson.dumps(response),
        response_headers=headers,
    )


def test_a_write_to_a_record_path_names_the_record_and_its_resource_facts() -> None:
    record = records().of(intent("PATCH", "/items/a%20b"))
    assert record is not None
    assert (record.resource, record.key, record.path) == ("items", "a%20b", "/items/a%20b")
    assert (record.id_field, record.create) == ("id", ("POST", "/items"))
    assert not record.state_transfer
    orders = records().of(intent("DELETE", "/orders/7/doc"))
    assert orders is not None
    assert (orders.key, orders.create, orders.id_field) == (
        "7",
        ("PUT", "/orders/7/doc"),
        "number",
    )


@pytest.mark.parametrize(
    ("created", "key"),
    [
        pytest.param({"headers": (("Location", "/api/items/k1"),)}, "k1", id="location-under-base-path"),
        pytest.param({"response": {"id": 42}}, "42", id="answer-id"),
        pytest.param({"body": {"id": "a/b"}}, "a%2Fb", id="request-id-encoded"),
    ],
)
def test_a_create_names_its_record_from_the_answer_or_the_request(created: dict[str, Any], key: str) -> None:
    record = records().of(intent("POST", "/items", **created))
    assert record is not None
    assert record.key == key
    assert record.path == f"/items/{key}"


def test_writes_no_resource_describes_have_no_record() -> None:
    assert records().of(intent("POST", "/items", body={"v": 1})) is None  # a create that names no id
    assert records().of(intent("PUT", "/things/1")) is None
    assert records().of(intent("POST", "/items/1/actions")) is None
    # An operator's resolution still names a keyed path, but never an anonymous create.
    assert records().for_resolution(intent("PUT", "/things/1")) is not None
    assert records().for_resolution(intent("POST", "/things", body={"v": 1})) is None


def test_state_transfer_paths_keep_their_meaning() -> None:
    mapped = records(state_transfer=["/items/{id}", "/legacy/{a}/{b}"])
    item = mapped.of(intent("PUT", "/items/1"))
    assert item is not None
    assert item.state_transfer
    assert item.create == ("POST", "/items")
    bare = mapped.of(intent("PUT", "/legacy/x/y"))
    assert bare is not None
    assert bare.state_transfer
    assert (bare.path, bare.create) == ("/legacy/x/y", ("PUT", "/legacy/x/y"))
    assert mapped.of(intent("PUT", "/orders/1/doc")) is not None
    assert not mapped.of(intent("PUT", "/orders/1/doc")).state_transfer  # type: ignore[union-attr]


def test_create_style_is_put_post_or_a_request_of_its_own() -> None:
    assert RestResource(name="a", list_path="/a").create == "put"
    assert RestResource(name="a", list_path="/a").create_call("k") == ("PUT", "/a/k")
    assert RestResource(name="a", list_path="/a?x=1", create="post").create_call("k") == ("POST", "/a")
    own = RestResource.model_validate(
        {"name": "a", "list_path": "/a", "create": {"method": "PUT", "path": "/v2/a/{key}"}}
    )
    assert own.create_call("k%2F1") == ("PUT", "/v2/a/k%2F1")
    assert not own.create_only
    with pytest.raises(ValidationError, match="create"):
        RestResource(name="a", list_path="/a", create="patch")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="create"):
        RestResource.model_validate(
            {"name": "a", "list_path": "/a", "create": {"method": "PATCH", "path": "/a"}}
        )
    assert RestResource(name="a", list_path="/a?x=1").record_path == "/a/{key}"
