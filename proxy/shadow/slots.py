"""The cap on shadow reads in flight per backend (`shadow.max_in_flight`), counted in one place.

A slot is taken when a read is admitted and comes back exactly once: when the shadow process reports the
comparison done, or when the read is not handed to it after all. A restart of the shadow process gives
every slot back at once (their completions will never come); each slot carries the generation it was
taken in, so one taken before a restart is neither given back twice nor handed to the new process.
"""

from __future__ import annotations

from typing import NamedTuple

from routing.phases import Side


class ShadowSlot(NamedTuple):
    side: Side  # the backend the shadow read goes to
    generation: int


class ShadowSlots:
    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._held = {side: 0 for side in Side}
        self._generation = 0

    def take(self, side: Side) -> ShadowSlot | None:
        """A slot toward `side`, or None when its cap is reached."""
        if self._held[side] >= self._limit:
            return None
        self._held[side] += 1
        return ShadowSlot(side, self._generation)

    def is_current(self, slot: ShadowSlot) -> bool:
        """Whether `slot` was taken since the last restart (a job for it may go to the process)."""
        return slot.generation == self._generation

    def give_back(self, slot: ShadowSlot) -> None:
        """A slot whose read will not be compared; one taken before the last restart is already back."""
        if slot.generation == self._generation:
            self._held[slot.side] -= 1

    def completed(self, side: Side) -> None:
        """The shadow process finished a read toward `side` (only jobs of current slots reach it)."""
        self._held[side] -= 1

    def reset(self) -> None:
        """The shadow process went away: the outcomes of its reads will never come back."""
        self._generation += 1
        for side in Side:
            self._held[side] = 0

    def held(self, side: Side) -> int:
        return self._held[side]

    @property
    def total(self) -> int:
        return sum(self._held.values())
