"""The shadow-read cap's count: taken at admission, back exactly once, whatever restarts in between."""

from __future__ import annotations

from proxy.shadow.slots import ShadowSlots
from routing.phases import Side


def test_the_cap_is_per_side_and_a_slot_comes_back_once() -> None:
    slots = ShadowSlots(limit=1)
    first = slots.take(Side.NEW)
    assert first is not None
    assert slots.take(Side.NEW) is None
    assert slots.take(Side.OLD) is not None
    assert slots.total == 2
    slots.give_back(first)
    assert slots.held(Side.NEW) == 0
    assert slots.take(Side.NEW) is not None


def test_a_slot_taken_before_a_restart_is_stale_after_it() -> None:
    slots = ShadowSlots(limit=2)
    before = slots.take(Side.NEW)
    assert before is not None
    assert slots.is_current(before)
    slots.reset()
    assert slots.held(Side.NEW) == 0
    assert not slots.is_current(before)
    after = slots.take(Side.NEW)
    slots.give_back(before)  # already back with the restart: not counted twice
    assert after is not None
    assert slots.held(Side.NEW) == 1
    slots.completed(Side.NEW)
    assert slots.held(Side.NEW) == 0
