"""Syntax of the JSON path patterns used in settings (pure parsing; matching is in
`proxy.shadow.paths`).

    $                      the document
    .name  or ["name"]     an object member (the quoted form for names with dots, brackets or spaces)
    .*  or [*]             any member or element (as in JSONPath, both forms mean any child)
    [3]                    the element at index 3
    ..                     any depth below (`$..etag`: every member named etag, at any depth)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import orjson


class PathSyntaxError(ValueError):
    def __init__(self, pattern: str, position: int, problem: str) -> None:
        self.pattern = pattern
        self.position = position
        super().__init__(f"{problem} at position {position} of {pattern!r}")


# -- parsing ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Step:
    """One step of a parsed pattern."""

    kind: str  # "key", "index", "any", "descend"
    value: str | int | None = None


_NAME = re.compile(r"[A-Za-z0-9_\-$@:]+")


def parse_pattern(pattern: str) -> tuple[Step, ...]:
    """Parse a pattern into steps; raise `PathSyntaxError` naming the position of the problem."""
    if not pattern.startswith("$"):
        raise PathSyntaxError(pattern, 0, "a path starts with '$'")
    steps: list[Step] = []
    i, n = 1, len(pattern)
    while i < n:
        char = pattern[i]
        if pattern.startswith("..", i):
            if steps and steps[-1].kind == "descend":
                raise PathSyntaxError(pattern, i, "'..' twice in a row")
            steps.append(Step("descend"))
            i += 2
            if i < n and pattern[i] != "[":  # `$..name` and `$..*`: the member follows without its dot
                i = _member(pattern, i, steps)
            elif i >= n:
                raise PathSyntaxError(pattern, i, "'..' must be followed by a member or element")
        elif char == ".":
            i = _member(pattern, i + 1, steps)
        elif char == "[":
            i = _bracket(pattern, i, steps)
        else:
            raise PathSyntaxError(pattern, i, f"unexpected {char!r}")
    return tuple(steps)


def _member(pattern: str, i: int, steps: list[Step]) -> int:
    if pattern.startswith("*", i):
        steps.append(Step("any"))
        return i + 1
    match = _NAME.match(pattern, i)
    if match is None:
        raise PathSyntaxError(pattern, i, "expected a member name or '*'")
    steps.append(Step("key", match.group()))
    return match.end()


def _bracket(pattern: str, i: int, steps: list[Step]) -> int:
    end = pattern.find("]", i)
    if pattern.startswith('["', i):
        end = pattern.find('"]', i + 2)
        if end < 0:
            raise PathSyntaxError(pattern, i, 'unterminated ["name"]')
        try:
            name = orjson.loads(pattern[i + 1 : end + 1])
        except orjson.JSONDecodeError:
            raise PathSyntaxError(pattern, i, "invalid quoted name") from None
        steps.append(Step("key", name))
        return end + 2
    if end < 0:
        raise PathSyntaxError(pattern, i, "unterminated '['")
    inner = pattern[i + 1 : end]
    if inner == "*":
        steps.append(Step("any"))
    elif inner.isdigit():
        steps.append(Step("index", int(inner)))
    else:
        raise PathSyntaxError(pattern, i, 'expected [*], [N] or ["name"]')
    return end + 1


def check_pattern(pattern: str) -> str:
    """Validator for settings: the pattern itself when it parses."""
    parse_pattern(pattern)
    return pattern
