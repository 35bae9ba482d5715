"""What blocks each next move, cell by cell: every blocker appears exactly when its condition holds.
Expectations are written by hand from the admin API's rules (README, "Moves"), not derived from them."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.control.move_blockers import MoveFacts, plan_moves
from routing.phases import Phase, Side

CLEAN = MoveFacts(dead_letters=0, gate_problems=[])
DEAD = MoveFacts(dead_letters=3, gate_problems=[])
GATE = MoveFacts(
    dead_letters=0,
    gate_problems=[{"table": "orders", "problem": "missing"}],
    gate_detail="orders: no verification report",
)
NO_OLD_APPLIER = MoveFacts(
    dead_letters=0,
    gate_problems=[],
    missing_applier=lambda side: "worker.postgres.old" if side is Side.OLD else None,
)
NO_NEW_APPLIER = MoveFacts(
    dead_letters=0,
    gate_problems=[],
    missing_applier=lambda side: "worker.postgres.new" if side is Side.NEW else None,
)
UNKNOWN = MoveFacts(dead_letters=None, gate_problems=None, unknown_why={"dead_letters": "Redis down"})


def blockers(current: Phase, facts: MoveFacts) -> dict[str, list[str]]:
    return {m["to"]: [b["blocker"] for b in m["blockers"]] for m in plan_moves(current, facts)}


CASES: list[tuple[str, Phase, MoveFacts, dict[str, list[str]]]] = [
    ("legacy, clean", Phase.LEGACY, CLEAN, {"dual_write": []}),
    # Into dual_write is not past dual_write: dead letters do not block it.
    ("legacy, dead letters", Phase.LEGACY, DEAD, {"dual_write": []}),
    ("legacy, no new applier", Phase.LEGACY, NO_NEW_APPLIER, {"dual_write": ["applier_not_configured"]}),
    ("dual_write, dead letters", Phase.DUAL_WRITE, DEAD, {"shadow": ["dead_letters"], "legacy": []}),
    ("shadow, clean", Phase.SHADOW, CLEAN, {"live": [], "dual_write": [], "legacy": []}),
    ("shadow, dead letters", Phase.SHADOW, DEAD, {"live": ["dead_letters"], "dual_write": [], "legacy": []}),
    (
        "shadow, no old applier",
        Phase.SHADOW,
        NO_OLD_APPLIER,
        {"live": ["applier_not_configured"], "dual_write": [], "legacy": []},
    ),
    (
        "shadow, no new applier",
        Phase.SHADOW,
        NO_NEW_APPLIER,
        {"live": [], "dual_write": ["applier_not_configured"], "legacy": []},
    ),
    # Back moves are never blocked by dead letters.
    (
        "live, dead letters",
        Phase.LIVE,
        DEAD,
        {"rampdown": ["dead_letters"], "shadow": [], "dual_write": [], "legacy": []},
    ),
    (
        "rampdown, gate failing",
        Phase.RAMPDOWN,
        GATE,
        {"complete": ["verify_required"], "live": [], "shadow": [], "dual_write": [], "legacy": []},
    ),
    (
        "rampdown, gate failing and dead letters",
        Phase.RAMPDOWN,
        MoveFacts(dead_letters=1, gate_problems=GATE.gate_problems, gate_detail="x"),
        {
            "complete": ["verify_required", "dead_letters"],
            "live": [],
            "shadow": [],
            "dual_write": [],
            "legacy": [],
        },
    ),
    # complete mirrors nothing: no applier is needed to move there.
    (
        "rampdown, no old applier",
        Phase.RAMPDOWN,
        NO_OLD_APPLIER,
        {"complete": [], "live": ["applier_not_configured"], "shadow": [], "dual_write": [], "legacy": []},
    ),
    (
        "complete, clean",
        Phase.COMPLETE,
        CLEAN,
        {
            "rampdown": ["force_required"],
            "live": ["force_required"],
            "shadow": ["force_required"],
            "dual_write": ["force_required"],
            "legacy": ["force_required"],
        },
    ),
    (
        "complete, dead letters, no old applier",
        Phase.COMPLETE,
        MoveFacts(dead_letters=2, gate_problems=[], missing_applier=NO_OLD_APPLIER.missing_applier),
        {
            "rampdown": ["force_required", "applier_not_configured"],
            "live": ["force_required", "applier_not_configured"],
            "shadow": ["force_required"],
            "dual_write": ["force_required"],
            "legacy": ["force_required"],
        },
    ),
]


@pytest.mark.parametrize(("current", "facts", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_blocker_appears_exactly_when_its_condition_holds(
    current: Phase, facts: MoveFacts, expected: dict[str, list[str]]
) -> None:
    found = blockers(current, facts)
    assert found == expected
    assert list(found) == list(expected), "forward first, then back to the nearest earlier phase"


def test_moves_carry_their_details_and_direction() -> None:
    moves = plan_moves(Phase.RAMPDOWN, MoveFacts(dead_letters=3, gate_problems=GATE.gate_problems))
    complete = moves[0]
    assert (complete["to"], complete["direction"], complete["blocked"]) == ("complete", "forward", True)
    verify, dead = complete["blockers"]
    assert verify["reports"] == [{"table": "orders", "problem": "missing"}]
    assert dead["count"] == 3
    assert "3 dead-lettered" in dead["detail"]
    assert [m["direction"] for m in moves[1:]] == ["back"] * 4
    applier = plan_moves(Phase.SHADOW, NO_OLD_APPLIER)[0]["blockers"][0]
    assert (applier["side"], applier["setting"]) == ("old", "worker.postgres.old")


def test_what_could_not_be_read_is_unknown_not_clear_and_the_copy_is_always_unknown() -> None:
    moves: dict[str, dict[str, Any]] = {m["to"]: m for m in plan_moves(Phase.SHADOW, UNKNOWN)}
    live = moves["live"]
    assert live["blockers"] == []
    assert not live["blocked"]
    assert [u["check"] for u in live["unknown"]] == ["dead_letters", "copy"]
    assert live["copy"] == "unknown"
    assert moves["dual_write"]["unknown"] == []
    assert "copy" not in moves["dual_write"]
    complete = plan_moves(Phase.RAMPDOWN, UNKNOWN)[0]
    assert [u["check"] for u in complete["unknown"]] == ["verify_required", "dead_letters"]
    # With everything readable, only the copy stays unknown.
    assert [u["check"] for u in plan_moves(Phase.SHADOW, CLEAN)[0]["unknown"]] == ["copy"]


def test_an_authority_switch_notes_the_intents_it_will_wait_for() -> None:
    pending = MoveFacts(dead_letters=0, gate_problems=[], pending_toward={Side.NEW: 4, Side.OLD: 0})
    moves = {m["to"]: m for m in plan_moves(Phase.SHADOW, pending)}
    assert moves["live"]["notes"] == [
        "4 intents toward new must drain within barrier.hold_timeout_s (2 s), or the move aborts with 409"
    ]
    assert moves["dual_write"]["notes"] == []  # old stays authoritative: nothing to drain
    assert plan_moves(Phase.SHADOW, CLEAN)[0]["notes"] == []
