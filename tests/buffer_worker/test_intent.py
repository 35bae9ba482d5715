"""The intent wire format: three stream fields, raw bytes bodies, strict decoding."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from buffer_worker.intent import WIRE_VERSION, Intent, IntentDecodeError
from routing.phases import Side

BINARY = bytes(range(256)) * 3 + b"\x00\xff\r\n\x00"


def sample(**overrides: Any) -> Intent:
    values: dict[str, Any] = {
        "tenant": "tenant-ä/1",
        "target": Side.NEW,
        "method": "POST",
        "path": "/items/a%2Fb",
        "query": "x=1&y=a%20b&z=c+d",
        "headers": (("content-type", "application/octet-stream"), ("if-match", '"v1"')),
        "body": BINARY,
        "status": 201,
        "response_body": b"\xff\xfe not utf-8 \x00",
        "response_headers": (("location", "/items/7"), ("etag", '"e"')),
    }
    values.update(overrides)
    return Intent(**values)


def meta_of(intent: Intent) -> dict[str, Any]:
    return orjson.loads(intent.to_fields()[b"m"])  # type: ignore[no-any-return]


def with_meta(intent: Intent, **changes: Any) -> dict[bytes, bytes]:
    fields = intent.to_fields()
    meta = meta_of(intent)
    for key, value in changes.items():
        if value is _DROP:
            meta.pop(key)
        else:
            meta[key] = value
    fields[b"m"] = orjson.dumps(meta)
    return fields


_DROP = object()


def test_fields_are_meta_body_and_response_body() -> None:
    intent = sample()
    fields = intent.to_fields()
    assert set(fields) == {b"m", b"b", b"r"}
    assert fields[b"b"] == BINARY  # raw bytes, not base64
    assert fields[b"r"] == intent.response_body
    meta = meta_of(intent)
    assert meta["v"] == WIRE_VERSION
    assert meta["to"] == "new"
    assert meta["id"] == intent.intent_id


@pytest.mark.parametrize("target", list(Side))
def test_round_trip_in_memory(target: Side) -> None:
    intent = sample(target=target)
    decoded = Intent.from_fields(intent.to_fields())
    assert decoded == intent
    assert decoded.target is target
    assert isinstance(decoded.headers, tuple)
    assert all(isinstance(h, tuple) for h in decoded.headers)


def test_round_trip_empty_bodies_and_defaults() -> None:
    intent = sample(body=b"", response_body=b"", response_headers=(), headers=(), query="")
    assert Intent.from_fields(intent.to_fields()) == intent
    # absent body fields decode as empty bodies
    fields = intent.to_fields()
    del fields[b"b"], fields[b"r"]
    assert Intent.from_fields(fields) == intent


def test_intent_ids_are_unique_by_default() -> None:
    assert len({sample().intent_id for _ in range(100)}) == 100


async def test_round_trip_through_a_real_redis_stream(rclient: aioredis.Redis, prefix: str) -> None:
    key = f"{prefix}:{{p0}}:intents"
    intents = [sample(), sample(body=b"", method="DELETE", target=Side.OLD), sample(body=BINARY[::-1])]
    for intent in intents:
        await rclient.xadd(key, intent.to_fields())  # type: ignore[arg-type]
    entries: Any = await rclient.xrange(key)
    assert [Intent.from_fields(fields) for _id, fields in entries] == intents


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({}, id="no-fields"),
        pytest.param({b"b": b"x", b"r": b""}, id="no-meta"),
        pytest.param({b"m": b"{not json", b"b": b""}, id="bad-json"),
        pytest.param({b"m": b"", b"b": b""}, id="empty-meta"),
        pytest.param(with_meta(sample(), v=WIRE_VERSION + 1), id="future-version"),
        pytest.param(with_meta(sample(), v=_DROP), id="no-version"),
        pytest.param(with_meta(sample(), t=_DROP), id="no-tenant"),
        pytest.param(with_meta(sample(), id=_DROP), id="no-id"),
        pytest.param(with_meta(sample(), to="sideways"), id="unknown-side"),
        pytest.param(with_meta(sample(), s="two hundred"), id="status-not-int"),
        pytest.param(with_meta(sample(), c=None), id="created-null"),
        pytest.param(with_meta(sample(), h=5), id="headers-not-list"),
        pytest.param(with_meta(sample(), h=[["only-name"]]), id="header-not-pair"),
        pytest.param(with_meta(sample(), rh=[["a", "b", "c"]]), id="response-header-triple"),
    ],
)
def test_decode_errors(fields: dict[bytes, bytes]) -> None:
    with pytest.raises(IntentDecodeError):
        Intent.from_fields(fields)


def test_decode_error_is_a_value_error_and_keeps_the_cause() -> None:
    with pytest.raises(ValueError) as info:  # noqa: PT011 - the subject: callers catch ValueError
        Intent.from_fields({b"m": b"{not json"})
    assert isinstance(info.value, IntentDecodeError)
    assert info.value.__cause__ is not None


def test_string_keyed_fields_are_a_decode_error() -> None:
    """A client with decode_responses=True hands str keys: that must be reported, not misread."""
    fields = {k.decode(): v for k, v in sample().to_fields().items()}
    with pytest.raises(IntentDecodeError):
        Intent.from_fields(fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("meta", [b"[1, 2]", b"null", b"42", b'"text"'])
def test_meta_that_is_not_a_json_object_is_a_decode_error(meta: bytes) -> None:
    with pytest.raises(IntentDecodeError):
        Intent.from_fields({b"m": meta, b"b": b"", b"r": b""})
