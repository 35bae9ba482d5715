"""Phase moves: one step forward, back to any earlier phase; leaving `complete` needs force."""

from __future__ import annotations

import itertools

import pytest

from routing.phases import Phase, PhaseMoveError, Side, allowed_moves, check_move

L, D, S, LI, R, C = (
    Phase.LEGACY,
    Phase.DUAL_WRITE,
    Phase.SHADOW,
    Phase.LIVE,
    Phase.RAMPDOWN,
    Phase.COMPLETE,
)

# Written out by hand: current phase -> the phases it may move to, in phase order.
ALLOWED = {
    L: (D,),
    D: (L, S),
    S: (L, D, LI),
    LI: (L, D, S, R),
    R: (L, D, S, LI, C),
    C: (),
}
ALLOWED_FORCED = {
    L: (D,),
    D: (L, S),
    S: (L, D, LI),
    LI: (L, D, S, R),
    R: (L, D, S, LI, C),
    C: (L, D, S, LI, R),
}

ALREADY = "already in that phase"
NEEDS_FORCE = "leaving complete needs force"
ONE_STEP = "one step forward"

# Every (current, requested) pair -> (outcome without force, outcome with force);
# None means the move is allowed, a string is the expected refusal reason.
MOVES: dict[tuple[Phase, Phase], tuple[str | None, str | None]] = {
    (L, L): (ALREADY, ALREADY),
    (L, D): (None, None),
    (L, S): (ONE_STEP, ONE_STEP),
    (L, LI): (ONE_STEP, ONE_STEP),
    (L, R): (ONE_STEP, ONE_STEP),
    (L, C): (ONE_STEP, ONE_STEP),
    (D, L): (None, None),
    (D, D): (ALREADY, ALREADY),
    (D, S): (None, None),
    (D, LI): (ONE_STEP, ONE_STEP),
    (D, R): (ONE_STEP, ONE_STEP),
    (D, C): (ONE_STEP, ONE_STEP),
    (S, L): (None, None),
    (S, D): (None, None),
    (S, S): (ALREADY, ALREADY),
    (S, LI): (None, None),
    (S, R): (ONE_STEP, ONE_STEP),
    (S, C): (ONE_STEP, ONE_STEP),
    (LI, L): (None, None),
    (LI, D): (None, None),
    (LI, S): (None, None),
    (LI, LI): (ALREADY, ALREADY),
    (LI, R): (None, None),
    (LI, C): (ONE_STEP, ONE_STEP),
    (R, L): (None, None),
    (R, D): (None, None),
    (R, S): (None, None),
    (R, LI): (None, None),
    (R, R): (ALREADY, ALREADY),
    (R, C): (None, None),
    (C, L): (NEEDS_FORCE, None),
    (C, D): (NEEDS_FORCE, None),
    (C, S): (NEEDS_FORCE, None),
    (C, LI): (NEEDS_FORCE, None),
    (C, R): (NEEDS_FORCE, None),
    (C, C): (ALREADY, ALREADY),
}

CASES = [
    pytest.param(current, requested, force, expected, id=f"{current}->{requested}{'-force' if force else ''}")
    for (current, requested), pair in MOVES.items()
    for force, expected in zip((False, True), pair, strict=True)
]


def test_tables_cover_every_phase_pair() -> None:
    assert list(Phase) == [L, D, S, LI, R, C]
    assert set(MOVES) == set(itertools.product(Phase, Phase))
    assert len(CASES) == 72
    assert set(ALLOWED) == set(ALLOWED_FORCED) == set(Phase)


def test_phase_values() -> None:
    assert [p.value for p in Phase] == ["legacy", "dual_write", "shadow", "live", "rampdown", "complete"]
    assert [p.rank for p in Phase] == [0, 1, 2, 3, 4, 5]
    assert Phase("dual_write") is D


@pytest.mark.parametrize("current", list(Phase), ids=str)
def test_allowed_moves_without_force(current: Phase) -> None:
    assert allowed_moves(current) == ALLOWED[current]
    assert allowed_moves(current, force=False) == ALLOWED[current]


@pytest.mark.parametrize("current", list(Phase), ids=str)
def test_allowed_moves_with_force(current: Phase) -> None:
    assert allowed_moves(current, force=True) == ALLOWED_FORCED[current]


@pytest.mark.parametrize(("current", "requested", "force", "expected"), CASES)
def test_check_move(current: Phase, requested: Phase, force: bool, expected: str | None) -> None:
    if expected is None:
        check_move("acme", current, requested, force=force)  # does not raise
        return
    with pytest.raises(PhaseMoveError) as info:
        check_move("acme", current, requested, force=force)
    err = info.value
    assert expected in err.reason
    assert err.tenant == "acme"
    assert err.current is current
    assert err.requested is requested
    # `allowed` lists what the rules permit (with force, so an operator sees the escape hatch).
    assert err.allowed == ALLOWED_FORCED[current]
    assert requested not in err.allowed or (current is C and not force)
    message = str(err)
    assert "'acme'" in message
    assert f"from {current.value} to {requested.value}" in message
    assert expected in message
    assert "allowed: " + ", ".join(p.value for p in ALLOWED_FORCED[current]) in message


@pytest.mark.parametrize("current", list(Phase), ids=str)
def test_same_phase_is_refused_even_with_force(current: Phase) -> None:
    for force in (False, True):
        with pytest.raises(PhaseMoveError, match=ALREADY):
            check_move("t", current, current, force=force)


def test_skipping_forward_is_refused_even_with_force() -> None:
    skips = [(a, b) for a, b in itertools.product(Phase, Phase) if b.rank > a.rank + 1]
    assert len(skips) == 10
    for a, b in skips:
        with pytest.raises(PhaseMoveError, match=ONE_STEP):
            check_move("t", a, b, force=True)


def test_rollback_from_complete_needs_force() -> None:
    with pytest.raises(PhaseMoveError, match=NEEDS_FORCE) as info:
        check_move("tenant-1", C, R)
    # The error still tells the operator where complete may go with force.
    assert info.value.allowed == (L, D, S, LI, R)
    check_move("tenant-1", C, R, force=True)
    check_move("tenant-1", C, L, force=True)


def test_phase_move_error_is_an_exception_with_attributes() -> None:
    err = PhaseMoveError("t", L, C, (D,), "some reason")
    assert isinstance(err, Exception)
    assert str(err) == "tenant 't' cannot move from legacy to complete: some reason (allowed: dual_write)"
    assert "(allowed: none)" in str(PhaseMoveError("t", C, L, (), "r"))


@pytest.mark.parametrize(
    ("phase", "authoritative", "mirrors"),
    [
        (L, Side.OLD, False),
        (D, Side.OLD, True),
        (S, Side.OLD, True),
        (LI, Side.NEW, True),
        (R, Side.NEW, True),
        (C, Side.NEW, False),
    ],
    ids=str,
)
def test_phase_properties(phase: Phase, authoritative: Side, mirrors: bool) -> None:
    assert phase.authoritative is authoritative
    assert phase.mirrors is mirrors


def test_side_other() -> None:
    assert Side.OLD.other is Side.NEW
    assert Side.NEW.other is Side.OLD
    assert [s.value for s in Side] == ["old", "new"]
