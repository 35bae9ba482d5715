"""The decision table: phase × kind → Plan, and Plan × outcome × fallback_safe → Action.

The expected values are written out by hand from the table in `routing/decide.py`'s docstring; they are
not derived from the code's own rules.
"""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from routing.classify import RequestKind
from routing.decide import Action, Outcome, Plan, decide, resolve
from routing.phases import Phase, Side

READ, WRITE = RequestKind.READ, RequestKind.WRITE
OLD, NEW = Side.OLD, Side.NEW
L, D, S, LI, R, C = (
    Phase.LEGACY,
    Phase.DUAL_WRITE,
    Phase.SHADOW,
    Phase.LIVE,
    Phase.RAMPDOWN,
    Phase.COMPLETE,
)

# (phase, kind) -> (serving, shadow, fallback, mirror)
PLANS: dict[tuple[Phase, RequestKind], tuple[Side, Side | None, Side | None, Side | None]] = {
    (L, READ): (OLD, None, None, None),
    (L, WRITE): (OLD, None, None, None),
    (D, READ): (OLD, None, None, None),
    (D, WRITE): (OLD, None, None, NEW),
    (S, READ): (OLD, NEW, None, None),
    (S, WRITE): (OLD, None, None, NEW),
    (LI, READ): (NEW, OLD, OLD, None),
    (LI, WRITE): (NEW, None, None, OLD),
    (R, READ): (NEW, None, OLD, None),
    (R, WRITE): (NEW, None, None, OLD),
    (C, READ): (NEW, None, None, None),
    (C, WRITE): (NEW, None, None, None),
}

RESPOND, FALLBACK, UNAVAILABLE = Action.RESPOND, Action.FALLBACK, Action.UNAVAILABLE
BAD_GATEWAY, GATEWAY_TIMEOUT = Action.BAD_GATEWAY, Action.GATEWAY_TIMEOUT
OK, ERR5XX, CONN, TIMEOUT = Outcome.OK, Outcome.SERVER_ERROR, Outcome.CONNECT_ERROR, Outcome.TIMEOUT

# (phase, kind, outcome) -> (action when fallback_safe=True, action when fallback_safe=False)
ACTIONS: dict[tuple[Phase, RequestKind, Outcome], tuple[Action, Action]] = {
    # legacy: no fallback anywhere
    (L, READ, OK): (RESPOND, RESPOND),
    (L, READ, ERR5XX): (RESPOND, RESPOND),
    (L, READ, CONN): (BAD_GATEWAY, BAD_GATEWAY),
    (L, READ, TIMEOUT): (GATEWAY_TIMEOUT, GATEWAY_TIMEOUT),
    (L, WRITE, OK): (RESPOND, RESPOND),
    (L, WRITE, ERR5XX): (RESPOND, RESPOND),
    (L, WRITE, CONN): (BAD_GATEWAY, BAD_GATEWAY),
    (L, WRITE, TIMEOUT): (GATEWAY_TIMEOUT, GATEWAY_TIMEOUT),
    # dual_write
    (D, READ, OK): (RESPOND, RESPOND),
    (D, READ, ERR5XX): (RESPOND, RESPOND),
    (D, READ, CONN): (BAD_GATEWAY, BAD_GATEWAY),
    (D, READ, TIMEOUT): (GATEWAY_TIMEOUT, GATEWAY_TIMEOUT),
    (D, WRITE, OK): (RESPOND, RESPOND),
    (D, WRITE, ERR5XX): (RESPOND, RESPOND),
    (D, WRITE, CONN): (BAD_GATEWAY, BAD_GATEWAY),
    (D, WRITE, TIMEOUT): (GATEWAY_TIMEOUT, GATEWAY_TIMEOUT),
    # shadow: the shadow side is never a fallback
    (S, READ, OK): (RESPOND, RESPOND),
    (S, READ, ERR5XX): (RESPOND, RESPOND),
    (S, READ, CONN): (BAD_GATEWAY, BAD_GATEWAY),
    (S, READ, TIMEOUT): (GATEWAY_TIMEOUT, GATEWAY_TIMEOUT),
    (S, WRITE, OK): (RESPOND, RESPOND),
    (S, WRITE, ERR5XX): (RESPOND, RESPOND),
    (S, WRITE, CONN): (BAD_GATEWAY, BAD_GATEWAY),
    (S, WRITE, TIMEOUT): (GATEWAY_TIMEOUT, GATEWAY_TIMEOUT),
    # live: reads fall back to old when safe, else 503; writes never fall back
    (LI, READ, OK): (RESPOND, RESPOND),
    (LI, READ, ERR5XX): (FALLBACK, UNAVAILABLE),
    (LI, READ, CONN): (FALLBACK, UNAVAILABLE),
    (LI, READ, TIMEOUT): (FALLBACK, UNAVAILABLE),
    (LI, WRITE, OK): (RESPOND, RESPOND),
    (LI, WRITE, ERR5XX): (RESPOND, RESPOND),
    (LI, WRITE, CONN): (BAD_GATEWAY, BAD_GATEWAY),
    (LI, WRITE, TIMEOUT): (GATEWAY_TIMEOUT, GATEWAY_TIMEOUT),
    # rampdown: same as live
    (R, READ, OK): (RESPOND, RESPOND),
    (R, READ, ERR5XX): (FALLBACK, UNAVAILABLE),
    (R, READ, CONN): (FALLBACK, UNAVAILABLE),
    (R, READ, TIMEOUT): (FALLBACK, UNAVAILABLE),
    (R, WRITE, OK): (RESPOND, RESPOND),
    (R, WRITE, ERR5XX): (RESPOND, RESPOND),
    (R, WRITE, CONN): (BAD_GATEWAY, BAD_GATEWAY),
    (R, WRITE, TIMEOUT): (GATEWAY_TIMEOUT, GATEWAY_TIMEOUT),
    # complete: old is gone, nothing to fall back to
    (C, READ, OK): (RESPOND, RESPOND),
    (C, READ, ERR5XX): (RESPOND, RESPOND),
    (C, READ, CONN): (BAD_GATEWAY, BAD_GATEWAY),
    (C, READ, TIMEOUT): (GATEWAY_TIMEOUT, GATEWAY_TIMEOUT),
    (C, WRITE, OK): (RESPOND, RESPOND),
    (C, WRITE, ERR5XX): (RESPOND, RESPOND),
    (C, WRITE, CONN): (BAD_GATEWAY, BAD_GATEWAY),
    (C, WRITE, TIMEOUT): (GATEWAY_TIMEOUT, GATEWAY_TIMEOUT),
}

RESOLVE_CASES = [
    pytest.param(phase, kind, outcome, safe, expected, id=f"{phase}-{kind}-{outcome}-safe={safe}")
    for (phase, kind, outcome), pair in ACTIONS.items()
    for safe, expected in zip((True, False), pair, strict=True)
]


def test_tables_are_complete() -> None:
    assert set(PLANS) == set(itertools.product(Phase, RequestKind))
    assert set(ACTIONS) == set(itertools.product(Phase, RequestKind, Outcome))
    assert len(RESOLVE_CASES) == 6 * 2 * 4 * 2
    assert len(list(Outcome)) == 4
    assert len(list(Action)) == 5


@pytest.mark.parametrize(("phase", "kind"), [pytest.param(p, k, id=f"{p}-{k}") for p, k in PLANS])
def test_decide(phase: Phase, kind: RequestKind) -> None:
    serving, shadow, fallback, mirror = PLANS[(phase, kind)]
    plan = decide(phase, kind)
    assert plan == Plan(phase, kind, serving, shadow=shadow, fallback=fallback, mirror=mirror)
    assert plan.phase is phase
    assert plan.kind is kind
    assert plan.serving is serving
    assert plan.shadow is shadow
    assert plan.fallback is fallback
    assert plan.mirror is mirror


@pytest.mark.parametrize(("phase", "kind"), list(itertools.product(Phase, RequestKind)))
def test_plan_invariants(phase: Phase, kind: RequestKind) -> None:
    plan = decide(phase, kind)
    # Every other side the plan touches is the side that is not serving.
    for side in (plan.shadow, plan.fallback, plan.mirror):
        assert side is None or side is plan.serving.other
    if kind is WRITE:
        assert plan.shadow is None
        assert plan.fallback is None
        assert plan.serving is phase.authoritative
        assert (plan.mirror is not None) is phase.mirrors
    else:
        assert plan.mirror is None


def test_decide_is_a_lookup_of_immutable_plans() -> None:
    assert decide(LI, READ) is decide(LI, READ)
    with pytest.raises(dataclasses.FrozenInstanceError):
        decide(LI, READ).serving = OLD  # type: ignore[misc]
    assert decide(Phase("live"), RequestKind("read")).fallback is OLD


def test_plan_defaults() -> None:
    plan = Plan(L, READ, OLD)
    assert (plan.shadow, plan.fallback, plan.mirror) == (None, None, None)


@pytest.mark.parametrize(("phase", "kind", "outcome", "safe", "expected"), RESOLVE_CASES)
def test_resolve(phase: Phase, kind: RequestKind, outcome: Outcome, safe: bool, expected: Action) -> None:
    assert resolve(decide(phase, kind), outcome, fallback_safe=safe) is expected


@pytest.mark.parametrize("outcome", [ERR5XX, CONN, TIMEOUT])
@pytest.mark.parametrize("phase", list(Phase), ids=str)
def test_writes_never_fall_back(phase: Phase, outcome: Outcome) -> None:
    for safe in (True, False):
        action = resolve(decide(phase, WRITE), outcome, fallback_safe=safe)
        assert action not in (FALLBACK, UNAVAILABLE)


def test_resolve_uses_the_plan_not_the_phase() -> None:
    # A hand-built plan with a fallback falls back whatever its phase says.
    plan = Plan(L, READ, OLD, fallback=NEW)
    assert resolve(plan, TIMEOUT, fallback_safe=True) is FALLBACK
    assert resolve(plan, TIMEOUT, fallback_safe=False) is UNAVAILABLE
    assert resolve(plan, OK, fallback_safe=False) is RESPOND


def test_enum_values() -> None:
    assert [o.value for o in Outcome] == ["ok", "server_error", "connect_error", "timeout"]
    assert [a.value for a in Action] == [
        "respond",
        "fallback",
        "unavailable",
        "bad_gateway",
        "gateway_timeout",
    ]
