"""Compare the serving and shadow answers to one read: a pure function over two `Observation`s.

Bodies are compared as JSON when both parse (key order and whitespace do not matter), byte for byte
otherwise. Differences carry JSON paths (`$.items[2].name`) so a reviewer sees where, not only whether.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

MAX_DIFFERENCES = 50


@dataclass(frozen=True, slots=True)
class Observation:
    """One side's answer: a status and body, or the error that prevented one."""

    status: int | None
    body: bytes | None  # None: not captured (too large) or no answer
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Comparison:
    differences: list[dict[str, Any]] = field(default_factory=list)
    comparable: bool = True  # False when a body was too large to capture

    @property
    def equal(self) -> bool:
        return not self.differences


_MISSING = object()


def compare(serving: Observation, shadow: Observation) -> Comparison:
    diffs: list[dict[str, Any]] = []
    if serving.error or shadow.error:
        diffs.append({"path": "error", "kind": "error", "serving": serving.error, "shadow": shadow.error})
        return Comparison(diffs)
    if serving.status != shadow.status:
        diffs.append(
            {"path": "status", "kind": "changed", "serving": serving.status, "shadow": shadow.status}
        )
    if serving.body is None or shadow.body is None:
        return Comparison(diffs, comparable=False)
    if serving.body == shadow.body:
        return Comparison(diffs)
    left, right = _json_or_missing(serving.body), _json_or_missing(shadow.body)
    if left is _MISSING or right is _MISSING:
        diffs.append(
            {"path": "body", "kind": "bytes_differ", "serving": len(serving.body), "shadow": len(shadow.body)}
        )
    else:
        _diff(left, right, "$", diffs)
    return Comparison(diffs)


def _json_or_missing(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return _MISSING


def _diff(left: Any, right: Any, path: str, out: list[dict[str, Any]]) -> None:
    if len(out) >= MAX_DIFFERENCES:
        return
    if isinstance(left, dict) and isinstance(right, dict):
        # No `left == right` shortcut for containers: Python's `True == 1` would hide a bool/number change.
        for key in left.keys() | right.keys():
            if len(out) >= MAX_DIFFERENCES:
                return
            child = f"{path}.{key}"
            if key not in right:
                out.append({"path": child, "kind": "missing_in_shadow", "serving": left[key]})
            elif key not in left:
                out.append({"path": child, "kind": "extra_in_shadow", "shadow": right[key]})
            else:
                _diff(left[key], right[key], child, out)
    elif isinstance(left, list) and isinstance(right, list):
        if len(left) != len(right):
            out.append(
                {"path": f"{path}.length", "kind": "length", "serving": len(left), "shadow": len(right)}
            )
        for index, (a, b) in enumerate(zip(left, right, strict=False)):
            _diff(a, b, f"{path}[{index}]", out)
    elif _is_number(left) and _is_number(right):
        if left != right:  # 1 and 1.0 are the same JSON number
            out.append({"path": path, "kind": "changed", "serving": left, "shadow": right})
    elif type(left) is not type(right):
        types = [type(left).__name__, type(right).__name__]
        out.append({"path": path, "kind": "type", "serving": left, "shadow": right, "types": types})
    elif left != right:
        out.append({"path": path, "kind": "changed", "serving": left, "shadow": right})


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
