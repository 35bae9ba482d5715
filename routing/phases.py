"""Migration phases and the moves allowed between them.

A tenant walks legacy → dual_write → shadow → live → rampdown → complete, one step at a time, and may go
back to any earlier phase at any moment (that is the rollback). Leaving `complete` needs `force`: by then
the old side no longer receives writes, so going back means it is stale.
"""

from __future__ import annotations

from enum import StrEnum


class Side(StrEnum):
    OLD = "old"
    NEW = "new"

    # Enum's own __hash__ is a Python-level call and hashes the *name*, although a StrEnum member equals
    # its *value*; str's hash is consistent with that equality and runs in C (routing is per request).
    __hash__ = str.__hash__

    @property
    def other(self) -> Side:
        return Side.NEW if self is Side.OLD else Side.OLD


class Phase(StrEnum):
    LEGACY = "legacy"
    DUAL_WRITE = "dual_write"
    SHADOW = "shadow"
    LIVE = "live"
    RAMPDOWN = "rampdown"
    COMPLETE = "complete"

    __hash__ = str.__hash__  # see Side

    @property
    def rank(self) -> int:
        return _ORDER.index(self)

    @property
    def authoritative(self) -> Side:
        """The side that takes writes first (and whose acknowledgement the client sees)."""
        return Side.NEW if self.rank >= Phase.LIVE.rank else Side.OLD

    @property
    def mirrors(self) -> bool:
        """Whether acknowledged writes are mirrored to the other side through the buffer."""
        return Phase.DUAL_WRITE.rank <= self.rank <= Phase.RAMPDOWN.rank


_ORDER: tuple[Phase, ...] = tuple(Phase)


class PhaseMoveError(Exception):
    """A move the phase rules do not allow; `allowed` lists the moves that are."""

    def __init__(
        self, tenant: str, current: Phase, requested: Phase, allowed: tuple[Phase, ...], reason: str
    ) -> None:
        self.tenant = tenant
        self.current = current
        self.requested = requested
        self.allowed = allowed
        self.reason = reason
        names = ", ".join(p.value for p in allowed) or "none"
        super().__init__(
            f"tenant {tenant!r} cannot move from {current.value} to {requested.value}: "
            f"{reason} (allowed: {names})"
        )


def allowed_moves(current: Phase, *, force: bool = False) -> tuple[Phase, ...]:
    """Every phase `current` may move to: one step forward, or back to any earlier phase."""
    if current is Phase.COMPLETE and not force:
        return ()
    earlier = _ORDER[: current.rank]
    forward = _ORDER[current.rank + 1 : current.rank + 2]
    return earlier + forward


def check_move(tenant: str, current: Phase, requested: Phase, *, force: bool = False) -> None:
    """Raise `PhaseMoveError` unless `current → requested` is an allowed move."""
    allowed = allowed_moves(current, force=force)
    if requested in allowed:
        return
    if requested is current:
        reason = "the tenant is already in that phase"
    elif current is Phase.COMPLETE:
        reason = "leaving complete needs force (the old side has stopped receiving writes)"
    else:
        reason = "phases move one step forward at a time"
    raise PhaseMoveError(tenant, current, requested, allowed_moves(current, force=True), reason)
