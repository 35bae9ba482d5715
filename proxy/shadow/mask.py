"""Masking: values at configured paths are replaced by a keyed hash before a sample is stored.

The hash is HMAC-SHA256 under `divergence.mask_key` over the value's canonical JSON, shown as
`hmac:<first 20 hex digits>`: equal values give equal hashes, so a reviewer still sees *that* the two sides
differ (or agree) at a masked path without seeing either value, and without the key nobody can test
guesses against the stored hash. A masked path hides its whole subtree (`$.card` hides `$.card.number`).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson

from proxy.shadow.differ import ABSENT, JSON, Difference
from proxy.shadow.paths import PathMatcher, State

MASK = "mask"
PREFIX = "hmac:"


class Masker:
    def __init__(self, key: bytes | None) -> None:
        self._key = key

    def hash(self, value: Any) -> str:
        if self._key is None:  # settings validation requires a key whenever anything is masked
            raise RuntimeError("masking needs divergence.mask_key")
        data = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)  # "1" and 1 hash differently
        return PREFIX + hmac.new(self._key, data, hashlib.sha256).hexdigest()[:20]

    def document(self, value: Any, matcher: PathMatcher, state: State | None = None) -> Any:
        """`value` with every masked path replaced; `state`: where `value` sits (default: the root)."""
        if matcher.empty:
            return value
        return self._walk(value, matcher, matcher.start() if state is None else state)

    def _walk(self, value: Any, matcher: PathMatcher, state: State) -> Any:
        if not state:
            return value  # no pattern reaches below here
        if matcher.tags(state).get(MASK):
            return self.hash(value)
        if type(value) is dict:
            return {k: self._walk(v, matcher, matcher.step(state, k)) for k, v in value.items()}
        if type(value) is list:
            return [self._walk(v, matcher, matcher.step(state, i)) for i, v in enumerate(value)]
        return value

    def difference(self, difference: Difference, matcher: PathMatcher) -> dict[str, Any]:
        """The difference as stored: values at or below a masked path hashed."""
        out = difference.as_json()
        if difference.where != JSON or matcher.empty:
            return out
        state = matcher.start()
        masked = bool(state) and bool(matcher.tags(state).get(MASK))
        for segment in difference.path:
            if masked or not state:
                break
            state = matcher.step(state, segment)
            masked = bool(state) and bool(matcher.tags(state).get(MASK))
        for side in ("serving", "shadow"):
            value = getattr(difference, side)
            if value is ABSENT:
                continue
            out[side] = self.hash(value) if masked else self._walk(value, matcher, state)
        return out

    def query(self, query: str, names: frozenset[str]) -> str:
        if not names or not query:
            return query
        pairs = parse_qsl(query, keep_blank_values=True)
        if not any(name in names for name, _ in pairs):
            return query
        return urlencode([(name, self.hash(value) if name in names else value) for name, value in pairs])
