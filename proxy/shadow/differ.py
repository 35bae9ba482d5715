"""The pure comparison of two lifted answers: field-level differences with JSON paths.

Compared, in order: transport errors (an error on either side is the only difference reported), status,
the headers the rules select, then the body: JSON documents member by member and element by element,
anything else by digest. Rules (`Rules`) relax the comparison per path: ignored paths, arrays compared as
sets (by a key member, or as multisets of values), numeric tolerance, case-insensitive strings, null equal
to an absent member.

Equal values are skipped without a call: scalars of one type when `==`, containers when `==` and their
serialisations match (`==` alone would take `true` for `1`). That is what keeps a 20 KB document under a
millisecond.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from proxy.shadow.lift import BodyKind, Lifted
from proxy.shadow.paths import (
    ANY_ELEMENT,
    EMPTY,
    PathMatcher,
    Segment,
    SetElement,
    State,
    field_of,
    render,
)

MAX_DIFFERENCES = 50

# Tags the rules put on path patterns (see `proxy.shadow.rules`).
IGNORE, SET, CASE_INSENSITIVE = "ignore", "set", "ci"


class _Absent:
    __slots__ = ()

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Final = _Absent()  # "no value on this side" (a missing member), distinct from JSON null

# Where a difference is.
STATUS, HEADER, BODY, ERROR, JSON = "status", "header", "body", "error", "json"


@dataclass(frozen=True, slots=True)
class Difference:
    where: str  # STATUS, HEADER (path = (name,)), BODY (non-JSON), ERROR, or JSON (path in the document)
    path: tuple[Segment, ...]
    kind: str  # changed, type, missing_in_shadow, extra_in_shadow, length, bytes_differ, error
    serving: Any = ABSENT
    shadow: Any = ABSENT

    @property
    def path_text(self) -> str:
        if self.where == JSON:
            text = render(self.path)
            return f"{text}.length" if self.kind == "length" else text
        if self.where == HEADER:
            return f"headers.{self.path[0]}"
        return self.where

    @property
    def field(self) -> str:
        """The name this difference is counted under: element positions folded into `[*]`."""
        if self.where == JSON:
            text = field_of(self.path)
            return f"{text}.length" if self.kind == "length" else text
        return self.path_text

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path_text, "kind": self.kind}
        if self.serving is not ABSENT:
            out["serving"] = self.serving
        if self.shadow is not ABSENT:
            out["shadow"] = self.shadow
        if self.kind == "type":
            out["types"] = [type(self.serving).__name__, type(self.shadow).__name__]
        return out


@dataclass(frozen=True, slots=True)
class Comparison:
    differences: list[Difference] = field(default_factory=list)
    comparable: bool = True  # False when a body was not captured or too large to compare
    truncated: bool = False  # more than MAX_DIFFERENCES: the rest were not listed

    @property
    def equal(self) -> bool:
        return not self.differences

    def as_json(self) -> list[dict[str, Any]]:
        return [d.as_json() for d in self.differences]


@dataclass(frozen=True, eq=False)
class Rules:
    """Compiled comparison rules of one resource (built by `proxy.shadow.rules`)."""

    matcher: PathMatcher = field(default_factory=lambda: PathMatcher(()))
    null_equals_missing: bool = False
    numeric_tolerance: float = 0.0
    relative_tolerance: float = 0.0
    headers: tuple[str, ...] = ()
    mask: PathMatcher = field(default_factory=lambda: PathMatcher(()))


NO_RULES: Final = Rules()


def diff(
    serving: Lifted, shadow: Lifted, rules: Rules = NO_RULES, *, limit: int = MAX_DIFFERENCES
) -> Comparison:
    if serving.error is not None or shadow.error is not None:
        return Comparison([Difference(ERROR, (), "error", serving.error, shadow.error)])
    out: list[Difference] = []
    if serving.status != shadow.status:
        out.append(Difference(STATUS, (), "changed", serving.status, shadow.status))
    for name in rules.headers:
        a, b = serving.headers.get(name), shadow.headers.get(name)
        if a == b:
            continue
        if b is None:
            out.append(Difference(HEADER, (name,), "missing_in_shadow", a))
        elif a is None:
            out.append(Difference(HEADER, (name,), "extra_in_shadow", ABSENT, b))
        else:
            out.append(Difference(HEADER, (name,), "changed", a, b))
    if serving.kind is BodyKind.ABSENT or shadow.kind is BodyKind.ABSENT:
        return Comparison(out, comparable=False)
    if serving.digest == shadow.digest:
        return Comparison(out)  # byte-equal bodies: no rule can make them differ
    if serving.kind is BodyKind.JSON and shadow.kind is BodyKind.JSON:
        walker = _Walker(rules, out, limit)
        walker.walk(serving.document, shadow.document, (), rules.matcher.start())
        return Comparison(out, truncated=walker.truncated)
    sizes = (len(serving.body or b""), len(shadow.body or b""))
    out.append(Difference(BODY, (), "bytes_differ", *sizes))
    return Comparison(out)


_NOT_A_SET: Final = object()
_NONE: Final[list[Any]] = []


class _Walker:
    __slots__ = (
        "matcher",
        "steps",
        "tag_cache",
        "out",
        "limit",
        "truncated",
        "nem",
        "tolerant",
        "abs_tol",
        "rel_tol",
    )

    def __init__(self, rules: Rules, out: list[Difference], limit: int) -> None:
        self.matcher = rules.matcher
        self.steps = rules.matcher.step_cache
        self.tag_cache = rules.matcher.tag_cache
        self.out = out
        self.limit = limit
        self.truncated = False
        self.nem = rules.null_equals_missing
        self.abs_tol = rules.numeric_tolerance
        self.rel_tol = rules.relative_tolerance
        self.tolerant = bool(self.abs_tol or self.rel_tol)

    def _full(self) -> bool:
        if len(self.out) >= self.limit:
            self.truncated = True
            return True
        return False

    def _step(self, state: State, segment: Segment) -> State:
        if not state:
            return EMPTY
        found = self.steps.get((state, segment))
        return self.matcher.step(state, segment) if found is None else found

    def _tags(self, state: State) -> dict[str, Any]:
        found = self.tag_cache.get(state)
        return self.matcher.tags(state) if found is None else found

    def walk(self, a: Any, b: Any, path: tuple[Segment, ...], state: State) -> None:
        if len(self.out) >= self.limit:
            self.truncated = True
            return
        case_insensitive = False
        set_key: Any = _NOT_A_SET
        if state:
            tags = self._tags(state)
            if tags:
                if tags.get(IGNORE):
                    return
                case_insensitive = tags.get(CASE_INSENSITIVE, False)
                set_key = tags.get(SET, _NOT_A_SET)
        ta, tb = type(a), type(b)
        if ta is dict and tb is dict:
            self._object(a, b, path, state)
        elif ta is list and tb is list:
            if set_key is _NOT_A_SET:
                self._array(a, b, path, state)
            elif set_key:
                self._keyed_set(a, b, path, state, set_key)
            else:
                self._multiset(a, b, path, state)
        elif ta is tb:
            if a == b or (case_insensitive and ta is str and a.casefold() == b.casefold()):
                return
            if (ta is int or ta is float) and self.tolerant and self._close(a, b):
                return
            self.out.append(Difference(JSON, path, "changed", a, b))
        elif (ta is int or ta is float) and (tb is int or tb is float):
            if a == b or (self.tolerant and self._close(a, b)):  # 1 and 1.0 are the same JSON number
                return
            self.out.append(Difference(JSON, path, "changed", a, b))
        else:
            self.out.append(Difference(JSON, path, "type", a, b))

    def _close(self, a: float, b: float) -> bool:
        return abs(a - b) <= max(self.abs_tol, self.rel_tol * max(abs(a), abs(b)))

    def _ignored(self, state: State) -> bool:
        return bool(state) and bool(self._tags(state).get(IGNORE))

    def _object(self, a: dict[str, Any], b: dict[str, Any], path: tuple[Segment, ...], state: State) -> None:
        out = self.out
        walk = self.walk
        steps = self.steps
        found = 0
        for key, va in a.items():
            if key in b:
                found += 1
                vb = b[key]
                tv = type(va)
                if tv is type(vb) and va == vb and ((tv is not dict and tv is not list) or _same(va, vb)):
                    continue  # equal values: equal under every rule
                if state:
                    child = steps.get((state, key))
                    walk(va, vb, (*path, key), self.matcher.step(state, key) if child is None else child)
                else:
                    walk(va, vb, (*path, key), EMPTY)
            elif not (self.nem and va is None) and not self._ignored(self._step(state, key)):
                if self._full():
                    return
                out.append(Difference(JSON, (*path, key), "missing_in_shadow", va))
        if found == len(b):
            return  # every member of `b` was one of `a`'s
        for key, vb in b.items():
            if key in a or (self.nem and vb is None) or self._ignored(self._step(state, key)):
                continue
            if self._full():
                return
            out.append(Difference(JSON, (*path, key), "extra_in_shadow", ABSENT, vb))

    def _array(self, a: list[Any], b: list[Any], path: tuple[Segment, ...], state: State) -> None:
        if len(a) != len(b):
            self.out.append(Difference(JSON, path, "length", len(a), len(b)))
        for index, (va, vb) in enumerate(zip(a, b, strict=False)):
            tv = type(va)
            if tv is type(vb) and va == vb and ((tv is not dict and tv is not list) or _same(va, vb)):
                continue
            if self._full():
                return
            self.walk(va, vb, (*path, index), self._step(state, index))

    def _keyed_set(
        self, a: list[Any], b: list[Any], path: tuple[Segment, ...], state: State, key: str
    ) -> None:
        """Elements matched by `key`; an element without it is matched by its whole value."""
        element_state = self._step(state, ANY_ELEMENT)
        left, right = _index(a, key), _index(b, key)
        for ident, elements in left.items():
            others = right.get(ident, _NONE)
            for position, element in enumerate(elements):
                segment = (*path, _element(key, ident, element))  # cheap: the label is rendered lazily
                if position < len(others):
                    other = others[position]
                    if element == other and _same(element, other):
                        continue
                    self.walk(element, other, segment, element_state)
                elif not self._ignored(element_state) and not self._full():
                    self.out.append(Difference(JSON, segment, "missing_in_shadow", element))
        for ident, elements in right.items():
            surplus = elements[len(left.get(ident, _NONE)) :]
            for element in surplus:
                if self._ignored(element_state) or self._full():
                    return
                segment = (*path, _element(key, ident, element))
                self.out.append(Difference(JSON, segment, "extra_in_shadow", ABSENT, element))

    def _multiset(self, a: list[Any], b: list[Any], path: tuple[Segment, ...], state: State) -> None:
        """Order ignored; elements equal when their canonical JSON is (case-folded where the rules say)."""
        element_state = self._step(state, ANY_ELEMENT)
        if self._ignored(element_state):
            return
        fold = bool(element_state) and bool(self._tags(element_state).get(CASE_INSENSITIVE))
        if not fold and len(a) == len(b) and _all_str(a) and _all_str(b) and sorted(a) == sorted(b):
            return  # the common case, lists of strings, without building counts
        left, right = _canonical_counts(a, fold), _canonical_counts(b, fold)
        if left == right:
            return
        segment = (*path, ANY_ELEMENT)
        for canon, (count, value) in left.items():
            for _ in range(count - right.get(canon, (0, None))[0]):
                if self._full():
                    return
                self.out.append(Difference(JSON, segment, "missing_in_shadow", value))
        for canon, (count, value) in right.items():
            for _ in range(count - left.get(canon, (0, None))[0]):
                if self._full():
                    return
                self.out.append(Difference(JSON, segment, "extra_in_shadow", ABSENT, value))


def _identity(element: Any, key: str) -> Any:
    if type(element) is dict and key in element:
        value = element[key]
        if type(value) in (str, int):
            return (type(value) is int, value)  # 1 and "1" are different keys
        return ("json", orjson.dumps(value, option=orjson.OPT_SORT_KEYS))
    return ("whole", orjson.dumps(element, option=orjson.OPT_SORT_KEYS))


def _index(elements: list[Any], key: str) -> dict[Any, list[Any]]:
    index: dict[Any, list[Any]] = {}
    for element in elements:
        index.setdefault(_identity(element, key), []).append(element)
    return index


def _same(a: Any, b: Any) -> bool:
    """Whether two containers that compare `==` are the same JSON: `==` alone takes `true` for `1`.
    Serialising both (in C) costs far less than walking them in Python."""
    return orjson.dumps(a) == orjson.dumps(b)


def _element(key: str, ident: Any, element: Any) -> SetElement:
    return ANY_ELEMENT if ident[0] == "whole" else SetElement(key, element[key])


def _all_str(values: list[Any]) -> bool:
    return all(type(v) is str for v in values)


def _canonical(value: Any, fold: bool) -> Any:
    """A hashable stand-in equal exactly when the JSON values are (1 == 1.0, but True != 1)."""
    kind = type(value)
    if kind is str:
        return ("s", value.casefold() if fold else value)
    if kind is int or kind is float:
        return ("n", value)
    if kind is bool or value is None:
        return ("b", value)
    return ("j", orjson.dumps(value, option=orjson.OPT_SORT_KEYS))


def _canonical_counts(values: list[Any], fold: bool) -> dict[Any, tuple[int, Any]]:
    counts: Counter[Any] = Counter()
    first: dict[Any, Any] = {}
    for value in values:
        canon = _canonical(value, fold)
        counts[canon] += 1
        first.setdefault(canon, value)
    return {canon: (count, first[canon]) for canon, count in counts.items()}
