"""Paths inside JSON documents, and a matcher of path patterns (syntax in `config.jsonpath`) that walks a
document alongside the differ.

A path inside a document is a tuple of segments: `str` for a member, `int` for an element, `SetElement`
for an element of an array compared as a set (it has no meaningful position).

Patterns compile into a small automaton. The differ carries the automaton's state (the set of pattern
nodes that match the path so far) down the document; an empty state means no rule applies anywhere
below, and the differ switches to its rule-free path. `..` is a node that loops on any segment.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from config.jsonpath import Step, parse_pattern


class SetElement:
    """The segment of an element of an array compared as a set: it has no meaningful position, only a
    label for reviewers (`id=42`) when elements are matched by a key member. The label is rendered only
    when a difference is shown, not for every element walked."""

    __slots__ = ("key", "value")

    def __init__(self, key: str | None = None, value: Any = None) -> None:
        self.key = key
        self.value = value

    @property
    def label(self) -> str:
        return "*" if self.key is None else f"{self.key}={orjson.dumps(self.value).decode()}"

    def __repr__(self) -> str:
        return f"SetElement({self.label!r})"


ANY_ELEMENT: Final = SetElement()
Segment = str | int | SetElement


# -- rendering -------------------------------------------------------------------------------------------
_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


def render(path: Sequence[Segment]) -> str:
    """`$.items[2].name`; members that are not plain names are quoted (`$["a.b"]`)."""
    parts = ["$"]
    for segment in path:
        if isinstance(segment, str):
            parts.append(f".{segment}" if _PLAIN.match(segment) else f"[{orjson.dumps(segment).decode()}]")
        elif isinstance(segment, int):
            parts.append(f"[{segment}]")
        else:
            parts.append(f"[{segment.label}]")
    return "".join(parts)


def field_of(path: Sequence[Segment]) -> str:
    """The path with every element position replaced by `[*]`: the name a field is counted under, so
    `$.items[0].etag` and `$.items[7].etag` are one field."""
    return render([ANY_ELEMENT if not isinstance(s, str) else s for s in path])


# -- matching --------------------------------------------------------------------------------------------
@dataclass(eq=False, repr=False)
class Node:
    keys: dict[str, Node] = field(default_factory=dict)
    indices: dict[int, Node] = field(default_factory=dict)
    any: Node | None = None  # `*`: any member or element
    descend: Node | None = None  # the loop node of a `..` that starts here
    tags: dict[str, Any] = field(default_factory=dict)  # what the patterns ending here say


State = tuple[Node, ...]
EMPTY: State = ()
_CACHE_LIMIT = 20_000


class PathMatcher:
    """Patterns, each with a tag and a value (`ignore: True`, `set_key: "id"`), compiled together.

    `start()` is the state at `$`; `step(state, segment)` the state one level down; `tags(state)` what the
    patterns matching exactly here say (merged; later patterns win on the same tag).
    """

    def __init__(self, patterns: Iterable[tuple[str, str, Any]]) -> None:
        self._root = Node()
        # Public so the differ can look up a cached step without a call (the hot loop of a comparison).
        self.step_cache: dict[tuple[State, Segment], State] = {}
        self.tag_cache: dict[State, dict[str, Any]] = {}
        for pattern, tag, value in patterns:
            self._add(parse_pattern(pattern), tag, value)
        self._start: State = (self._root,) if self._has_rules(self._root) else EMPTY

    @staticmethod
    def _has_rules(node: Node) -> bool:
        return bool(node.keys or node.indices or node.any or node.descend or node.tags)

    @property
    def empty(self) -> bool:
        return not self._start

    def _add(self, steps: tuple[Step, ...], tag: str, value: Any) -> None:
        node = self._root
        for step in steps:
            if step.kind == "key":
                assert isinstance(step.value, str)
                node = node.keys.setdefault(step.value, Node())
            elif step.kind == "index":
                assert isinstance(step.value, int)
                node = node.indices.setdefault(step.value, Node())
            elif step.kind == "any":
                node.any = node.any or Node()
                node = node.any
            else:  # descend: one loop node per origin, shared by the patterns that descend from it
                if node.descend is None:
                    loop = Node()
                    loop.descend = loop
                    node.descend = loop
                node = node.descend
        node.tags[tag] = value

    def start(self) -> State:
        return self._start

    def step(self, state: State, segment: Segment) -> State:
        if not state:
            return EMPTY
        key = (state, segment)
        cached = self.step_cache.get(key)
        if cached is not None:
            return cached
        found: list[Node] = []
        for node in state:
            _children(node, segment, found)
            loop = node.descend
            if loop is not None:
                found.append(loop)  # `..` consumes this segment and stays active
                _children(loop, segment, found)
        result: State = tuple(dict.fromkeys(found)) if found else EMPTY
        if len(self.step_cache) >= _CACHE_LIMIT:
            self.step_cache.clear()  # member names can come from data (maps keyed by id): stay bounded
        self.step_cache[key] = result
        return result

    def tags(self, state: State) -> dict[str, Any]:
        cached = self.tag_cache.get(state)
        if cached is None:
            cached = {}
            for node in state:
                cached.update(node.tags)
            if len(self.tag_cache) < _CACHE_LIMIT:
                self.tag_cache[state] = cached
        return cached

    def state_at(self, path: Sequence[Segment]) -> State:
        state = self._start
        for segment in path:
            state = self.step(state, segment)
        return state


def _children(node: Node, segment: Segment, out: list[Node]) -> None:
    if isinstance(segment, str):
        child = node.keys.get(segment)
    elif isinstance(segment, int):
        child = node.indices.get(segment)
    else:
        child = None  # an element of a set matches only `*`
    if child is not None:
        out.append(child)
    if node.any is not None:
        out.append(node.any)
