"""The routing decision: a tenant's phase and a request's kind → a `Plan`; a backend outcome → an `Action`.

The whole table lives here as data so that one glance (and one table test) covers every cell:

| phase      | read serving | read shadow | read fallback | write authoritative | write mirror |
|------------|--------------|-------------|---------------|---------------------|--------------|
| legacy     | old          | –           | –             | old                 | –            |
| dual_write | old          | –           | –             | old                 | new          |
| shadow     | old          | new         | –             | old                 | new          |
| live       | new          | old         | old           | new                 | old          |
| rampdown   | new          | –           | old           | new                 | old          |
| complete   | new          | –           | –             | new                 | –            |
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from routing.classify import RequestKind
from routing.phases import Phase, Side


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do with one request. `serving` answers the client; the rest happen beside it."""

    phase: Phase
    kind: RequestKind
    serving: Side
    shadow: Side | None = None  # reads: the side compared against, off the critical path
    fallback: Side | None = None  # reads: served from here when `serving` fails and it is safe
    mirror: Side | None = None  # writes: an acknowledged write becomes an intent toward this side
    # (phase, kind, side) as plain strings, for per-request counters: str tuples hash in C, while an
    # Enum's __hash__ is a Python call (this is on the hot path of every request).
    serving_key: tuple[str, str, str] = field(init=False, compare=False, repr=False)
    fallback_key: tuple[str, str, str] | None = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "serving_key", (self.phase.value, self.kind.value, self.serving.value))
        fallback = None if self.fallback is None else (self.phase.value, self.kind.value, self.fallback.value)
        object.__setattr__(self, "fallback_key", fallback)


def _plans() -> dict[tuple[Phase, RequestKind], Plan]:
    read, write = RequestKind.READ, RequestKind.WRITE
    old, new = Side.OLD, Side.NEW
    rows = {
        Phase.LEGACY: (Plan(Phase.LEGACY, read, old), Plan(Phase.LEGACY, write, old)),
        Phase.DUAL_WRITE: (
            Plan(Phase.DUAL_WRITE, read, old),
            Plan(Phase.DUAL_WRITE, write, old, mirror=new),
        ),
        Phase.SHADOW: (
            Plan(Phase.SHADOW, read, old, shadow=new),
            Plan(Phase.SHADOW, write, old, mirror=new),
        ),
        Phase.LIVE: (
            Plan(Phase.LIVE, read, new, shadow=old, fallback=old),
            Plan(Phase.LIVE, write, new, mirror=old),
        ),
        Phase.RAMPDOWN: (
            Plan(Phase.RAMPDOWN, read, new, fallback=old),
            Plan(Phase.RAMPDOWN, write, new, mirror=old),
        ),
        Phase.COMPLETE: (Plan(Phase.COMPLETE, read, new), Plan(Phase.COMPLETE, write, new)),
    }
    return {(phase, plan.kind): plan for phase, pair in rows.items() for plan in pair}


_PLANS = _plans()


def decide(phase: Phase, kind: RequestKind) -> Plan:
    """The plan for a request of `kind` from a tenant in `phase` (a table lookup: no allocation)."""
    return _PLANS[(phase, kind)]


class Outcome(StrEnum):
    """How the serving backend answered."""

    OK = "ok"  # any status below 500
    SERVER_ERROR = "server_error"  # a 5xx status
    CONNECT_ERROR = "connect_error"  # refused, reset or closed before a response
    TIMEOUT = "timeout"


class Action(StrEnum):
    """What the client gets."""

    RESPOND = "respond"  # the serving backend's response, as it is
    FALLBACK = "fallback"  # the same read served from `plan.fallback`
    UNAVAILABLE = "unavailable"  # 503 + Retry-After: falling back would serve stale data
    BAD_GATEWAY = "bad_gateway"  # 502 naming the backend
    GATEWAY_TIMEOUT = "gateway_timeout"  # 504 naming the backend


def resolve(plan: Plan, outcome: Outcome, *, fallback_safe: bool) -> Action:
    """Map the serving backend's outcome to the client's answer.

    A read may fall back only when the plan names a fallback and no intent toward that side is still
    pending for the tenant (`fallback_safe`): otherwise the fallback could serve data older than what
    the tenant already wrote. Writes never fall back: the authoritative side's answer is the answer.
    """
    if outcome is Outcome.OK:
        return Action.RESPOND
    if plan.fallback is not None:
        return Action.FALLBACK if fallback_safe else Action.UNAVAILABLE
    if outcome is Outcome.SERVER_ERROR:
        return Action.RESPOND
    if outcome is Outcome.TIMEOUT:
        return Action.GATEWAY_TIMEOUT
    return Action.BAD_GATEWAY
