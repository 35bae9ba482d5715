"""Path patterns: parsing, rendering, and the matcher the differ walks with."""

from __future__ import annotations

import pytest

from config.jsonpath import PathSyntaxError, Step, parse_pattern
from proxy.shadow.paths import ANY_ELEMENT, PathMatcher, Segment, SetElement, field_of, render

PARSED = [
    ("$", ()),
    ("$.a", (Step("key", "a"),)),
    ("$.a.b_c-d", (Step("key", "a"), Step("key", "b_c-d"))),
    ("$.items[*].etag", (Step("key", "items"), Step("any"), Step("key", "etag"))),
    ("$.a.*", (Step("key", "a"), Step("any"))),
    ("$[3]", (Step("index", 3),)),
    ('$["a.b"]', (Step("key", "a.b"),)),
    ("$..etag", (Step("descend"), Step("key", "etag"))),
    ("$..*", (Step("descend"), Step("any"))),
    ("$.a..[0]", (Step("key", "a"), Step("descend"), Step("index", 0))),
]


@pytest.mark.parametrize(("pattern", "steps"), PARSED)
def test_parse(pattern: str, steps: tuple[Step, ...]) -> None:
    assert parse_pattern(pattern) == steps


@pytest.mark.parametrize(
    "pattern", ["", "a.b", "$.", "$[", "$[x]", "$[-1]", '$["a', "$...a", "$..", "$a", "$.a b"]
)
def test_bad_patterns_are_refused(pattern: str) -> None:
    with pytest.raises(PathSyntaxError):
        parse_pattern(pattern)


RENDERED: list[tuple[tuple[Segment, ...], str, str]] = [
    ((), "$", "$"),
    (("a", 2, "b"), "$.a[2].b", "$.a[*].b"),
    (("a.b", "x y"), '$["a.b"]["x y"]', '$["a.b"]["x y"]'),
    (("items", SetElement("id", "7"), "name"), '$.items[id="7"].name', "$.items[*].name"),
    (("items", SetElement("id", 7)), "$.items[id=7]", "$.items[*]"),
    (("tags", ANY_ELEMENT), "$.tags[*]", "$.tags[*]"),
]


@pytest.mark.parametrize(("path", "text", "field"), RENDERED)
def test_render_and_field(path: tuple[Segment, ...], text: str, field: str) -> None:
    assert render(path) == text
    assert field_of(path) == field


MATCHES: list[tuple[str, tuple[Segment, ...], bool]] = [
    ("$.a", ("a",), True),
    ("$.a", ("b",), False),
    ("$.a", ("a", "b"), False),
    ("$.a[*].b", ("a", 0, "b"), True),
    ("$.a[*].b", ("a", ANY_ELEMENT, "b"), True),
    ("$.a[*].b", ("a", "k", "b"), True),  # `*` is any child, member or element
    ("$.a[1]", ("a", 1), True),
    ("$.a[1]", ("a", 2), False),
    ("$.a[1]", ("a", ANY_ELEMENT), False),  # a set element has no position
    ("$..id", ("id",), True),
    ("$..id", ("x", 3, "y", "id"), True),
    ("$..id", ("x", "idx"), False),
    ("$.a..id", ("id",), False),
    ("$.a..id", ("a", "b", "id"), True),
    ("$..*", ("a",), True),
    ("$..*", ("a", 1, "b"), True),
    ("$", (), True),
]


@pytest.mark.parametrize(("pattern", "path", "expected"), MATCHES)
def test_matcher(pattern: str, path: tuple[Segment, ...], expected: bool) -> None:
    matcher = PathMatcher([(pattern, "hit", True)])
    assert bool(matcher.tags(matcher.state_at(path)).get("hit")) is expected


def test_no_patterns_means_an_empty_state_everywhere() -> None:
    matcher = PathMatcher([])
    assert matcher.empty
    assert matcher.start() == ()
    assert matcher.step(matcher.start(), "a") == ()


def test_state_empties_below_the_last_rule() -> None:
    matcher = PathMatcher([("$.a.b", "hit", True)])
    assert matcher.state_at(("x",)) == ()
    assert matcher.state_at(("a", "b", "c")) == ()
    assert matcher.state_at(("a",)) != ()


def test_tags_of_several_patterns_merge() -> None:
    matcher = PathMatcher([("$.items", "set", "id"), ("$..items", "ci", True)])
    assert matcher.tags(matcher.state_at(("items",))) == {"set": "id", "ci": True}
