"""Comparing the serving and shadow answers to one read."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from proxy.shadow.compare import MAX_DIFFERENCES, Comparison, Difference, Observation, compare


def ok(body: bytes | None, status: int = 200) -> Observation:
    return Observation(status=status, body=body)


def by_path(result: Comparison) -> dict[str, dict[str, Any]]:
    paths = [d["path"] for d in result.as_json()]
    assert len(paths) == len(set(paths)), "duplicate paths"
    return {d["path"]: d for d in result.as_json()}


# --- equal ----------------------------------------------------------------------------------------------

EQUAL = [
    (b'{"a":1}', b'{"a":1}'),
    (b'{"a": 1, "b": [1, 2, {"c": null}]}', b'{"b":[1,2,{"c":null}],"a":1}'),
    (b'{\n  "b": "x",\n  "a": {"y": 2, "x": 1}\n}', b'{"a":{"x":1,"y":2},"b":"x"}'),
    (b"[1, 2, 3]", b"[1,2,3]"),
    (b"1", b"1.0"),
    (b'{"n": 1}', b'{"n": 1.0}'),
    (b'{"n": [1, 2.0]}', b'{"n": [1.0, 2]}'),
    (b'{"n": 0}', b'{"n": -0.0}'),
    (b'"caf\\u00e9"', '"café"'.encode()),
    (b"", b""),
    (b"not json", b"not json"),
    (b"\x00\xffbinary", b"\x00\xffbinary"),
]


@pytest.mark.parametrize(("serving", "shadow"), EQUAL)
def test_equal_bodies(serving: bytes, shadow: bytes) -> None:
    result = compare(ok(serving), ok(shadow))
    assert result.as_json() == []
    assert result.equal is True
    assert result.comparable is True


def test_status_difference() -> None:
    result = compare(ok(b'{"a":1}', 200), ok(b'{"a":1}', 404))
    assert result.as_json() == [{"path": "status", "kind": "changed", "serving": 200, "shadow": 404}]
    assert result.equal is False
    assert result.comparable is True


def test_status_and_body_differences_together() -> None:
    result = compare(ok(b'{"a":1}', 200), ok(b'{"a":2}', 500))
    assert result.as_json() == [
        {"path": "status", "kind": "changed", "serving": 200, "shadow": 500},
        {"path": "$.a", "kind": "changed", "serving": 1, "shadow": 2},
    ]


def test_changed_value_has_json_path() -> None:
    serving = orjson.dumps({"items": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}], "total": 2})
    shadow = orjson.dumps({"total": 2, "items": [{"id": 1, "name": "a"}, {"name": "B", "id": 2}]})
    result = compare(ok(serving), ok(shadow))
    assert result.as_json() == [{"path": "$.items[1].name", "kind": "changed", "serving": "b", "shadow": "B"}]
    assert not result.equal


def test_deep_path() -> None:
    result = compare(ok(b'{"a":{"b":[{"c":[0,{"d":true}]}]}}'), ok(b'{"a":{"b":[{"c":[0,{"d":false}]}]}}'))
    assert result.as_json() == [
        {"path": "$.a.b[0].c[1].d", "kind": "changed", "serving": True, "shadow": False}
    ]


def test_top_level_scalar_change() -> None:
    assert compare(ok(b"1"), ok(b"2")).as_json() == [
        {"path": "$", "kind": "changed", "serving": 1, "shadow": 2}
    ]
    assert compare(ok(b"1.5"), ok(b"2.5")).as_json() == [
        {"path": "$", "kind": "changed", "serving": 1.5, "shadow": 2.5}
    ]
    # int vs a different float is a difference (reported as a type change, without the values).
    result = compare(ok(b'{"n":1}'), ok(b'{"n":1.5}'))
    assert [d["path"] for d in result.as_json()] == ["$.n"]
    assert result.as_json()[0]["kind"] in ("changed", "type")


def test_missing_and_extra_keys() -> None:
    result = compare(ok(b'{"keep":1,"gone":"x","obj":{"old":[1]}}'), ok(b'{"keep":1,"new":true,"obj":{}}'))
    assert by_path(result) == {
        "$.gone": {"path": "$.gone", "kind": "missing_in_shadow", "serving": "x"},
        "$.new": {"path": "$.new", "kind": "extra_in_shadow", "shadow": True},
        "$.obj.old": {"path": "$.obj.old", "kind": "missing_in_shadow", "serving": [1]},
    }


def test_key_present_with_null_is_not_missing() -> None:
    result = compare(ok(b'{"a":null}'), ok(b"{}"))
    assert result.as_json() == [{"path": "$.a", "kind": "missing_in_shadow", "serving": None}]
    result = compare(ok(b'{"a":null}'), ok(b'{"a":0}'))
    assert result.as_json() == [
        {"path": "$.a", "kind": "type", "serving": None, "shadow": 0, "types": ["NoneType", "int"]}
    ]


def test_array_length() -> None:
    result = compare(ok(b'{"items":[1,2,3]}'), ok(b'{"items":[1,2]}'))
    assert result.as_json() == [{"path": "$.items.length", "kind": "length", "serving": 3, "shadow": 2}]


def test_array_length_and_element_change() -> None:
    result = compare(ok(b"[1,2]"), ok(b"[1,5,3,4]"))
    assert result.as_json() == [
        {"path": "$.length", "kind": "length", "serving": 2, "shadow": 4},
        {"path": "$[1]", "kind": "changed", "serving": 2, "shadow": 5},
    ]


def test_array_order_matters() -> None:
    result = compare(ok(b"[1,2]"), ok(b"[2,1]"))
    assert by_path(result) == {
        "$[0]": {"path": "$[0]", "kind": "changed", "serving": 1, "shadow": 2},
        "$[1]": {"path": "$[1]", "kind": "changed", "serving": 2, "shadow": 1},
    }


TYPE_CHANGES = [
    (b'{"a":"1"}', b'{"a":1}', "1", 1, "str", "int"),
    (b'{"a":1}', b'{"a":"1"}', 1, "1", "int", "str"),
    (b'{"a":{}}', b'{"a":[]}', {}, [], "dict", "list"),
    (b'{"a":[1]}', b'{"a":{"0":1}}', [1], {"0": 1}, "list", "dict"),
    (b'{"a":null}', b'{"a":false}', None, False, "NoneType", "bool"),
    (b'{"a":1.5}', b'{"a":"1.5"}', 1.5, "1.5", "float", "str"),
    (b'{"a":true}', b'{"a":"true"}', True, "true", "bool", "str"),
]


@pytest.mark.parametrize(("serving", "shadow", "left", "right", "left_type", "right_type"), TYPE_CHANGES)
def test_type_change(
    serving: bytes, shadow: bytes, left: object, right: object, left_type: str, right_type: str
) -> None:
    result = compare(ok(serving), ok(shadow))
    assert result.as_json() == [
        {"path": "$.a", "kind": "type", "serving": left, "shadow": right, "types": [left_type, right_type]}
    ]


def test_top_level_bool_vs_int_is_a_type_change() -> None:
    result = compare(ok(b"true"), ok(b"1"))
    assert result.as_json() == [
        {"path": "$", "kind": "type", "serving": True, "shadow": 1, "types": ["bool", "int"]}
    ]


@pytest.mark.parametrize(
    ("serving", "shadow", "path"),
    [
        (b'{"a":true}', b'{"a":1}', "$.a"),
        (b"[0]", b"[false]", "$[0]"),
        (b'{"a":[1.0]}', b'{"a":[true]}', "$.a[0]"),
    ],
)
def test_nested_bool_vs_number_is_a_difference(serving: bytes, shadow: bytes, path: str) -> None:
    result = compare(ok(serving), ok(shadow))
    assert [d["path"] for d in result.as_json()] == [path]
    assert result.as_json()[0]["kind"] == "type"


def test_int_and_float_equal_at_every_depth() -> None:
    assert compare(ok(b'{"a":[{"b":1}]}'), ok(b'{"a":[{"b":1.0}]}')).equal
    assert compare(ok(b"[1, 2, 3]"), ok(b"[1.0, 2.0, 3.0]")).equal


# --- non-JSON and uncaptured bodies ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("serving", "shadow"),
    [
        (b"hello", b"hellp"),
        (b"<html></html>", b"<html> </html>"),
        (b'{"a":1}', b"not json"),
        (b"not json", b'{"a":1}'),
        (b"", b"{}"),
        (b'{"a":1', b'{"a":1}'),
    ],
)
def test_non_json_bodies_compared_by_bytes(serving: bytes, shadow: bytes) -> None:
    result = compare(ok(serving), ok(shadow))
    assert result.as_json() == [
        {"path": "body", "kind": "bytes_differ", "serving": len(serving), "shadow": len(shadow)}
    ]
    assert result.comparable is True


@pytest.mark.parametrize(
    ("serving", "shadow"), [(None, b"{}"), (b"{}", None), (None, None)], ids=["serving", "shadow", "both"]
)
def test_uncaptured_body_is_not_comparable(serving: bytes | None, shadow: bytes | None) -> None:
    result = compare(ok(serving), ok(shadow))
    assert result.comparable is False
    assert result.as_json() == []


def test_uncaptured_body_still_reports_status() -> None:
    result = compare(ok(None, 200), ok(b"{}", 503))
    assert result.comparable is False
    assert result.as_json() == [{"path": "status", "kind": "changed", "serving": 200, "shadow": 503}]
    assert not result.equal


# --- errors ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("serving", "shadow"),
    [
        (Observation(None, None, error="timeout"), ok(b"{}")),
        (ok(b"{}"), Observation(None, None, error="connect refused")),
        (Observation(None, None, error="timeout"), Observation(None, None, error="reset")),
        # an error wins even when statuses and bodies would also differ
        (Observation(200, b'{"a":1}', error="truncated"), ok(b'{"a":2}', 500)),
    ],
    ids=["serving-error", "shadow-error", "both-errors", "error-with-body"],
)
def test_error_is_a_difference(serving: Observation, shadow: Observation) -> None:
    result = compare(serving, shadow)
    assert result.as_json() == [
        {"path": "error", "kind": "error", "serving": serving.error, "shadow": shadow.error}
    ]
    assert result.equal is False


def test_identical_errors_are_still_a_difference() -> None:
    err = Observation(None, None, error="timeout")
    assert not compare(err, err).equal


# --- limits and the result type -------------------------------------------------------------------------


def test_differences_capped_for_arrays() -> None:
    serving = orjson.dumps(list(range(200)))
    shadow = orjson.dumps([i + 1 for i in range(200)])
    result = compare(ok(serving), ok(shadow))
    assert len(result.as_json()) == MAX_DIFFERENCES
    assert result.as_json()[0] == {"path": "$[0]", "kind": "changed", "serving": 0, "shadow": 1}


def test_differences_capped_for_missing_keys() -> None:
    serving = orjson.dumps({f"k{i}": i for i in range(200)})
    result = compare(ok(serving), ok(b"{}"))
    assert len(result.as_json()) <= MAX_DIFFERENCES


def test_comparison_defaults() -> None:
    assert Comparison().equal is True
    assert Comparison().comparable is True
    assert Comparison([Difference("status", (), "changed", 200, 404)]).equal is False


def test_observation_defaults() -> None:
    assert Observation(200, b"").error is None
