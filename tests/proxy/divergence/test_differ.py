"""Table tests of the differ's rules: ignore, sets, tolerance, case-insensitive strings, null == missing,
headers, status, digests and errors."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from config.divergence import CompareRules
from proxy.shadow.differ import diff
from proxy.shadow.lift import lift
from proxy.shadow.rules import compile_rules


def run(serving: Any, shadow: Any, **rules: Any) -> list[tuple[str, str]]:
    compiled = compile_rules(CompareRules.model_validate(rules))
    a = lift(200, orjson.dumps(serving), ())
    b = lift(200, orjson.dumps(shadow), ())
    return [(d.path_text, d.kind) for d in diff(a, b, compiled).differences]


ITEMS_A = {"items": [{"id": 1, "name": "a", "etag": "x1"}, {"id": 2, "name": "b", "etag": "x2"}]}
ITEMS_B = {"items": [{"id": 1, "name": "a", "etag": "y1"}, {"id": 2, "name": "B", "etag": "y2"}]}

IGNORE = [
    ("top member", {"a": 1, "updated_at": "x"}, {"a": 1, "updated_at": "y"}, ["$.updated_at"], []),
    ("ignored member missing", {"a": 1, "updated_at": "x"}, {"a": 1}, ["$.updated_at"], []),
    ("ignored member extra", {"a": 1}, {"a": 1, "updated_at": "y"}, ["$.updated_at"], []),
    ("other member still compared", {"a": 1, "u": 1}, {"a": 2, "u": 2}, ["$.u"], [("$.a", "changed")]),
    ("element wildcard", ITEMS_A, ITEMS_B, ["$.items[*].etag"], [("$.items[1].name", "changed")]),
    (
        "wildcard does not reach the top",
        {"etag": 1},
        {"etag": 2},
        ["$.items[*].etag"],
        [("$.etag", "changed")],
    ),
    (
        "any depth",
        {"etag": 1, "a": {"b": {"etag": 1}}, "l": [{"etag": 1}]},
        {"etag": 2, "a": {"b": {"etag": 2}}, "l": [{"etag": 2}]},
        ["$..etag"],
        [],
    ),
    ("any member", {"meta": {"x": 1, "y": 2}, "k": 1}, {"meta": {"x": 3, "z": 4}, "k": 1}, ["$.meta.*"], []),
    ("one index only", [1, 2], [3, 4], ["$[0]"], [("$[1]", "changed")]),
    ("whole subtree", {"a": {"deep": [1, 2, {"x": 1}]}}, {"a": {"deep": [9]}}, ["$.a"], []),
    ("the whole document", {"a": 1}, [1, 2], ["$"], []),
    ("quoted member", {"a.b": 1, "c": 1}, {"a.b": 2, "c": 1}, ['$["a.b"]'], []),
    ("no rule", {"updated_at": "x"}, {"updated_at": "y"}, [], [("$.updated_at", "changed")]),
]


@pytest.mark.parametrize(
    ("serving", "shadow", "ignore", "expected"), [c[1:] for c in IGNORE], ids=[c[0] for c in IGNORE]
)
def test_ignore(serving: Any, shadow: Any, ignore: list[str], expected: list[tuple[str, str]]) -> None:
    assert run(serving, shadow, ignore=ignore) == expected


BY_ID = [{"path": "$.items", "key": "id"}]
SETS = [
    ("reordered", {"items": [{"id": 1}, {"id": 2}]}, {"items": [{"id": 2}, {"id": 1}]}, BY_ID, []),
    (
        "element changed, reported by key",
        {"items": [{"id": 1, "n": "a"}, {"id": 2, "n": "b"}]},
        {"items": [{"id": 2, "n": "c"}, {"id": 1, "n": "a"}]},
        BY_ID,
        [("$.items[id=2].n", "changed")],
    ),
    (
        "missing and extra elements",
        {"items": [{"id": 1}, {"id": 3}]},
        {"items": [{"id": 1}, {"id": 4}]},
        BY_ID,
        [("$.items[id=3]", "missing_in_shadow"), ("$.items[id=4]", "extra_in_shadow")],
    ),
    (
        "string keys",
        {"items": [{"id": "a"}, {"id": "b"}]},
        {"items": [{"id": "b"}]},
        BY_ID,
        [('$.items[id="a"]', "missing_in_shadow")],
    ),
    (
        "duplicate keys",
        {"items": [{"id": 1}, {"id": 1}]},
        {"items": [{"id": 1}]},
        BY_ID,
        [("$.items[id=1]", "missing_in_shadow")],
    ),
    (
        "1 and '1' are different keys",
        {"items": [{"id": 1}]},
        {"items": [{"id": "1"}]},
        BY_ID,
        [("$.items[id=1]", "missing_in_shadow"), ('$.items[id="1"]', "extra_in_shadow")],
    ),
    (
        "elements without the key matched whole",
        {"items": [5, {"id": 1}]},
        {"items": [{"id": 1}, 5]},
        BY_ID,
        [],
    ),
    ("multiset of values", {"tags": ["a", "b", "a"]}, {"tags": ["a", "a", "b"]}, [{"path": "$.tags"}], []),
    (
        "multiset difference",
        {"tags": ["a", "b"]},
        {"tags": ["a", "c"]},
        [{"path": "$.tags"}],
        [("$.tags[*]", "missing_in_shadow"), ("$.tags[*]", "extra_in_shadow")],
    ),
    (
        "multiset counts",
        {"tags": ["a", "a"]},
        {"tags": ["a"]},
        [{"path": "$.tags"}],
        [("$.tags[*]", "missing_in_shadow")],
    ),
    (
        "multiset of objects",
        {"t": [{"a": 1, "b": 2}, 3]},
        {"t": [3, {"b": 2, "a": 1}]},
        [{"path": "$.t"}],
        [],
    ),
    (
        "without the rule order matters",
        {"items": [{"id": 1}, {"id": 2}]},
        {"items": [{"id": 2}, {"id": 1}]},
        [],
        [("$.items[0].id", "changed"), ("$.items[1].id", "changed")],
    ),
    (
        "nested sets through a wildcard",
        {"o": [{"lines": [{"sku": "a"}, {"sku": "b"}]}]},
        {"o": [{"lines": [{"sku": "b"}, {"sku": "a"}]}]},
        [{"path": "$.o[*].lines", "key": "sku"}],
        [],
    ),
]


@pytest.mark.parametrize(
    ("serving", "shadow", "sets", "expected"), [c[1:] for c in SETS], ids=[c[0] for c in SETS]
)
def test_arrays_as_sets(
    serving: Any, shadow: Any, sets: list[dict[str, str]], expected: list[tuple[str, str]]
) -> None:
    assert run(serving, shadow, sets=sets) == expected


def test_set_elements_follow_ignore_rules() -> None:
    assert run(ITEMS_A, ITEMS_B, sets=BY_ID, ignore=["$.items[*].etag"]) == [
        ("$.items[id=2].name", "changed")
    ]


def test_set_element_field_is_counted_without_the_key() -> None:
    rules = compile_rules(CompareRules.model_validate({"sets": BY_ID}))
    a = lift(200, orjson.dumps(ITEMS_A), ())
    b = lift(200, orjson.dumps(ITEMS_B), ())
    fields = sorted(d.field for d in diff(a, b, rules).differences)
    assert fields == ["$.items[*].etag", "$.items[*].etag", "$.items[*].name"]


TOLERANCE = [
    ("within absolute", {"p": 1.0}, {"p": 1.005}, {"numeric_tolerance": 0.01}, []),
    ("beyond absolute", {"p": 1.0}, {"p": 1.02}, {"numeric_tolerance": 0.01}, [("$.p", "changed")]),
    ("within relative", {"p": 1000}, {"p": 1000.5}, {"relative_tolerance": 0.001}, []),
    ("beyond relative", {"p": 1000}, {"p": 1002}, {"relative_tolerance": 0.001}, [("$.p", "changed")]),
    ("int against float", {"p": 1}, {"p": 1.001}, {"numeric_tolerance": 0.01}, []),
    ("deep in arrays", {"p": [[1.0]]}, {"p": [[1.001]]}, {"numeric_tolerance": 0.01}, []),
    ("no tolerance", {"p": 1.0}, {"p": 1.000001}, {}, [("$.p", "changed")]),
    ("bool is not a number", {"p": True}, {"p": 1}, {"numeric_tolerance": 5}, [("$.p", "type")]),
    ("strings are not numbers", {"p": "1.0"}, {"p": "1.001"}, {"numeric_tolerance": 1}, [("$.p", "changed")]),
]


@pytest.mark.parametrize(
    ("serving", "shadow", "rules", "expected"), [c[1:] for c in TOLERANCE], ids=[c[0] for c in TOLERANCE]
)
def test_numeric_tolerance(
    serving: Any, shadow: Any, rules: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    assert run(serving, shadow, **rules) == expected


CASE = [
    (
        "named path",
        {"email": "A@X.io", "name": "A"},
        {"email": "a@x.IO", "name": "a"},
        ["$.email"],
        [("$.name", "changed")],
    ),
    ("every string", {"a": "X", "b": {"c": ["Y"]}}, {"a": "x", "b": {"c": ["y"]}}, ["$..*"], []),
    ("case folding", {"s": "straße"}, {"s": "STRASSE"}, ["$.s"], []),
    ("other text still differs", {"email": "a@x"}, {"email": "b@x"}, ["$.email"], [("$.email", "changed")]),
    ("multiset elements", {"tags": ["A", "b"]}, {"tags": ["B", "a"]}, ["$.tags[*]"], []),
    ("no rule", {"email": "A"}, {"email": "a"}, [], [("$.email", "changed")]),
]


@pytest.mark.parametrize(
    ("serving", "shadow", "paths", "expected"), [c[1:] for c in CASE], ids=[c[0] for c in CASE]
)
def test_case_insensitive(
    serving: Any, shadow: Any, paths: list[str], expected: list[tuple[str, str]]
) -> None:
    rules: dict[str, Any] = {"case_insensitive": paths}
    if "tags" in serving:
        rules["sets"] = [{"path": "$.tags"}]
    assert run(serving, shadow, **rules) == expected


NULLS = [
    ("null against missing", {"a": None, "b": 1}, {"b": 1}, True, []),
    ("missing against null", {"b": 1}, {"a": None, "b": 1}, True, []),
    ("nested", {"o": {"a": None}}, {"o": {}}, True, []),
    ("null is not zero", {"a": None}, {"a": 0}, True, [("$.a", "type")]),
    ("a value is not missing", {"a": 1}, {}, True, [("$.a", "missing_in_shadow")]),
    ("without the rule", {"a": None}, {}, False, [("$.a", "missing_in_shadow")]),
    ("without the rule, extra", {}, {"a": None}, False, [("$.a", "extra_in_shadow")]),
]


@pytest.mark.parametrize(
    ("serving", "shadow", "rule", "expected"), [c[1:] for c in NULLS], ids=[c[0] for c in NULLS]
)
def test_null_equals_missing(serving: Any, shadow: Any, rule: bool, expected: list[tuple[str, str]]) -> None:
    assert run(serving, shadow, null_equals_missing=rule) == expected


def headers(**values: str) -> list[tuple[bytes, bytes]]:
    return [(k.replace("_", "-").encode(), v.encode()) for k, v in values.items()]


HEADERS = [
    ("changed", headers(ETag="a"), headers(etag="b"), [("headers.etag", "changed")]),
    ("missing", headers(etag="a"), headers(), [("headers.etag", "missing_in_shadow")]),
    ("extra", headers(), headers(etag="b"), [("headers.etag", "extra_in_shadow")]),
    ("equal", headers(etag="a"), headers(ETAG="a"), []),
    ("not selected", headers(etag="a", x_other="1"), headers(etag="a", x_other="2"), []),
]


@pytest.mark.parametrize(
    ("serving", "shadow", "expected"), [c[1:] for c in HEADERS], ids=[c[0] for c in HEADERS]
)
def test_selected_headers(
    serving: list[tuple[bytes, bytes]], shadow: list[tuple[bytes, bytes]], expected: list[tuple[str, str]]
) -> None:
    rules = compile_rules(CompareRules(headers=["ETag"]))
    keep = frozenset({"etag"})
    a = lift(200, b"{}", serving, keep_headers=keep)
    b = lift(200, b"{}", shadow, keep_headers=keep)
    assert [(d.path_text, d.kind) for d in diff(a, b, rules).differences] == expected


def test_status_is_always_compared_even_when_the_body_is_ignored() -> None:
    rules = compile_rules(CompareRules(ignore=["$"]))
    result = diff(lift(200, b'{"a":1}', ()), lift(404, b'{"b":2}', ()), rules)
    assert result.as_json() == [{"path": "status", "kind": "changed", "serving": 200, "shadow": 404}]


def test_non_json_bodies_are_compared_by_digest() -> None:
    same = diff(lift(200, b"<html>x</html>", ()), lift(200, b"<html>x</html>", ()))
    other = diff(lift(200, b"<html>x</html>", ()), lift(200, b"<html>y</html>", ()))
    assert same.equal
    assert other.as_json() == [{"path": "body", "kind": "bytes_differ", "serving": 14, "shadow": 14}]
    assert lift(200, b"<html>x</html>", ()).digest != lift(200, b"<html>y</html>", ()).digest


def test_error_on_either_side_is_the_only_difference() -> None:
    result = diff(lift(200, b"{}", ()), lift(None, None, (), error="timeout"))
    assert result.as_json() == [{"path": "error", "kind": "error", "serving": None, "shadow": "timeout"}]


def test_difference_limit_marks_the_comparison_truncated() -> None:
    a = lift(200, orjson.dumps({f"k{i}": i for i in range(100)}), ())
    b = lift(200, orjson.dumps({f"k{i}": -i - 1 for i in range(100)}), ())
    result = diff(a, b, limit=10)
    assert len(result.differences) == 10
    assert result.truncated
    assert not diff(a, a).truncated
