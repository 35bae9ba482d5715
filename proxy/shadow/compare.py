"""Compare the serving and shadow answers to one read: `Observation`s in, a `Comparison` out.

An observation is what one side answered, as captured (body still content-encoded). `compare` lifts both
(`proxy.shadow.lift`) and diffs them (`proxy.shadow.differ`) under the given rules; with no rules
every difference counts. Differences carry JSON paths (`$.items[2].name`) so a reviewer sees where, not
only whether.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from proxy.shadow.differ import MAX_DIFFERENCES, NO_RULES, Comparison, Difference, Rules, diff
from proxy.shadow.lift import Lifted, lift
from proxy.shadow.rules import BODY_HEADERS

__all__ = ["MAX_DIFFERENCES", "Comparison", "Difference", "Observation", "compare", "lift_observation"]


@dataclass(frozen=True, slots=True)
class Observation:
    """One side's answer: a status, headers and body, or the error that prevented one."""

    status: int | None
    body: bytes | None  # None: not captured (too large) or no answer
    error: str | None = None
    headers: Sequence[tuple[bytes, bytes]] = ()  # as received (lower-case names not guaranteed)


def lift_observation(
    observation: Observation, *, keep_headers: frozenset[str] = BODY_HEADERS, max_bytes: int = 1_048_576
) -> Lifted:
    return lift(
        observation.status,
        observation.body,
        observation.headers,
        error=observation.error,
        keep_headers=keep_headers,
        max_bytes=max_bytes,
    )


def compare(serving: Observation, shadow: Observation, rules: Rules = NO_RULES) -> Comparison:
    keep = BODY_HEADERS | frozenset(rules.headers)
    lifted = [lift_observation(side, keep_headers=keep) for side in (serving, shadow)]
    return diff(lifted[0], lifted[1], rules)
