"""Compile a `DivergencePolicy` into what the differ uses: per-resource `Rules`, found by request path.

A resource is named by the first configured pattern its path matches (`resources[].name`, or the pattern
itself). A path no pattern matches is named by its first segment and its depth (`/items/k1` →
`/items/*`): counters per resource stay few whatever ids appear in paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from config.divergence import CompareRules, DivergencePolicy, ResourceRules
from proxy.shadow.differ import CASE_INSENSITIVE, IGNORE, SET, Rules
from proxy.shadow.paths import PathMatcher

_MAX_AUTO_DEPTH = 6
# Always kept when lifting: they say how to read the body.
BODY_HEADERS = frozenset({"content-encoding", "content-type"})


@dataclass(frozen=True)
class _Pattern:
    segments: tuple[str | None, ...]  # None: one segment of any value
    rest: bool  # a final `**`: any further segments (or none)

    @classmethod
    def parse(cls, text: str) -> _Pattern:
        parts = [p for p in text.split("/") if p]
        rest = bool(parts) and parts[-1] == "**"
        if rest:
            parts = parts[:-1]
        segments = tuple(None if p == "*" or (p.startswith("{") and p.endswith("}")) else p for p in parts)
        return cls(segments, rest)

    def matches(self, parts: list[str]) -> bool:
        if len(parts) < len(self.segments) or (not self.rest and len(parts) != len(self.segments)):
            return False
        return all(want is None or want == got for want, got in zip(self.segments, parts, strict=False))


def compile_rules(rules: CompareRules) -> Rules:
    tagged: list[tuple[str, str, Any]] = [(path, IGNORE, True) for path in rules.ignore]
    tagged += [(s.path, SET, s.key or "") for s in rules.sets]
    tagged += [(path, CASE_INSENSITIVE, True) for path in rules.case_insensitive]
    return Rules(
        matcher=PathMatcher(tagged),
        null_equals_missing=rules.null_equals_missing,
        numeric_tolerance=rules.numeric_tolerance,
        relative_tolerance=rules.relative_tolerance,
        headers=tuple(dict.fromkeys(rules.headers)),
        mask=PathMatcher((path, "mask", True) for path in rules.mask),
    )


def merge(defaults: CompareRules, resource: ResourceRules) -> CompareRules:
    """`defaults` plus `resource`: lists joined, scalars from `resource` where it sets them."""
    merged: dict[str, Any] = {}
    for name in CompareRules.model_fields:
        base, own = getattr(defaults, name), getattr(resource, name)
        if isinstance(base, list):
            merged[name] = [*base, *own]
        else:
            merged[name] = own if name in resource.model_fields_set else base
    return CompareRules.model_validate(merged)


class Ruleset:
    def __init__(self, policy: DivergencePolicy) -> None:
        self.policy = policy
        self.default = compile_rules(policy.defaults)
        self._resources = [
            (_Pattern.parse(r.resource), r.name or r.resource, compile_rules(merge(policy.defaults, r)))
            for r in policy.resources
        ]
        self._routes = [(_Pattern.parse(r.resource), r.resource) for r in policy.resources]
        names = {*policy.defaults.headers, *(h for r in policy.resources for h in r.headers)}
        self.keep_headers = frozenset(names) | BODY_HEADERS
        self._mask_query = frozenset(policy.mask_query)

    def match(self, raw_path: str) -> tuple[str, Rules]:
        """The resource name and rules of a request path."""
        parts = [p for p in raw_path.split("/") if p]
        for pattern, name, rules in self._resources:
            if pattern.matches(parts):
                return name, rules
        return auto_resource(parts), self.default

    def route(self, raw_path: str) -> tuple[str | None, str]:
        """(the pattern of the first resource a request path matches, or None; the route its spans are
        named by: that pattern, else the automatic name). The pattern, not the resource's display name:
        a route is a path template (`http.route`)."""
        parts = [p for p in raw_path.split("/") if p]
        for pattern, text in self._routes:
            if pattern.matches(parts):
                return text, text
        return None, auto_resource(parts)

    @property
    def mask_query(self) -> frozenset[str]:
        return self._mask_query


def auto_resource(parts: list[str]) -> str:
    if not parts:
        return "/"
    depth = min(len(parts), _MAX_AUTO_DEPTH)
    tail = "/*" * (depth - 1) + ("/**" if len(parts) > _MAX_AUTO_DEPTH else "")
    return f"/{parts[0][:64]}{tail}"
