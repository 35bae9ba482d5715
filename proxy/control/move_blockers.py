"""What stands between a tenant and each of its next moves: the checks `PUT /tenants/{t}/phase` makes,
made ahead of time and all at once (the route stops at the first). Pure: the facts come in, the moves go
out; `proxy.admin.tenant_health` gathers the facts.

Moves are those `routing.phases.allowed_moves` lists (one step forward, or back to any earlier phase;
from `complete`, every earlier phase with `force`). A move's `blockers` name each refusal the API would
answer with, by its error code:

    force_required           leaving complete (the old side has stopped receiving writes)
    verify_required          into complete, without a passing, current verify of every covered table
                             (`reports`: each missing, failed or stale one)
    dead_letters             forward past dual_write while the tenant has dead letters
    applier_not_configured   into a phase mirroring toward a side the worker has no applier for
    copy_unfinished          into live (where new starts serving) while a REST resource's copy is
                             unfinished (`resources`: each one left)

A check whose facts could not be read (the store or the buffer did not answer) is listed in `unknown`
rather than guessed. The move into live carries `copy`, the copy verdict the gate itself refuses on
(`backfill.copy_status.copy_verdict`): `ok`, `blocked`, `unfinished` (the gate is off: a note, not a
blocker) or `unknown` (table copies, whose progress the admin API cannot read, or no answer from the
store). `notes` say what may still delay a move that nothing blocks (an authority switch waits for
intents toward the new authority to drain).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from backfill.copy_status import BLOCKED, UNFINISHED, UNKNOWN, CopyVerdict
from routing.phases import Phase, Side, allowed_moves


@dataclass(frozen=True)
class MoveFacts:
    """What the checks read. None: could not be read (say why in `unknown_why`)."""

    dead_letters: int | None
    gate_problems: Sequence[dict[str, Any]] | None  # [] when the gate passes
    gate_detail: str = ""
    missing_applier: Callable[[Side], str | None] = lambda _side: None
    pending_toward: dict[Side, int] = field(default_factory=dict)
    hold_timeout_s: float = 2.0
    copy: CopyVerdict | None = None  # None: not read (say why in `unknown_why["copy"]`)
    unknown_why: dict[str, str] = field(default_factory=dict)  # check → why it is unknown


def plan_moves(current: Phase, facts: MoveFacts) -> list[dict[str, Any]]:
    leaving_complete = current is Phase.COMPLETE
    moves = []
    for target in reversed(allowed_moves(current, force=leaving_complete)):
        blockers: list[dict[str, Any]] = []
        unknown: list[dict[str, str]] = []
        if leaving_complete:
            blockers.append(
                {
                    "blocker": "force_required",
                    "detail": "leaving complete needs force: the old side has stopped receiving writes",
                }
            )
        if target is Phase.COMPLETE:
            if facts.gate_problems is None:
                unknown.append({"check": "verify_required", "detail": facts.unknown_why.get("verify", "")})
            elif facts.gate_problems:
                blockers.append(
                    {
                        "blocker": "verify_required",
                        "detail": facts.gate_detail,
                        "reports": list(facts.gate_problems),
                    }
                )
        if target.rank > max(current.rank, Phase.DUAL_WRITE.rank):
            if facts.dead_letters is None:
                unknown.append({"check": "dead_letters", "detail": facts.unknown_why.get("dead_letters", "")})
            elif facts.dead_letters:
                blockers.append(
                    {
                        "blocker": "dead_letters",
                        "count": facts.dead_letters,
                        "detail": f"{facts.dead_letters} dead-lettered intents: resolve or re-drive them",
                    }
                )
        if target.mirrors:
            side = target.authoritative.other
            setting = facts.missing_applier(side)
            if setting is not None:
                blockers.append(
                    {
                        "blocker": "applier_not_configured",
                        "side": side.value,
                        "setting": setting,
                        "detail": f"writes would be mirrored to {side.value}, which the worker has no"
                        f" applier for ({setting} is not configured)",
                    }
                )
        notes = []
        into_live = target.rank >= Phase.LIVE.rank > current.rank  # the `live` gate's condition
        copy = facts.copy
        if into_live:
            if copy is None:
                unknown.append({"check": "copy", "detail": facts.unknown_why.get("copy", "not read")})
            elif copy.state == UNKNOWN:
                unknown.append({"check": "copy", "detail": copy.detail})
            elif copy.state == BLOCKED:
                blocker = {"blocker": "copy_unfinished", "detail": copy.detail, "resources": copy.resources}
                blockers.append(blocker)
            elif copy.state == UNFINISHED:
                notes.append(copy.detail)
        authority = target.authoritative
        if authority is not current.authoritative and facts.pending_toward.get(authority):
            notes.append(
                f"{facts.pending_toward[authority]} intents toward {authority.value} must drain within"
                f" barrier.hold_timeout_s ({facts.hold_timeout_s:g} s), or the move aborts with 409"
            )
        moves.append(
            {
                "to": target.value,
                "direction": "forward" if target.rank > current.rank else "back",
                "blocked": bool(blockers),
                "blockers": blockers,
                "unknown": unknown,
                **({"copy": UNKNOWN if copy is None else copy.state} if into_live else {}),
                "notes": notes,
            }
        )
    return moves
