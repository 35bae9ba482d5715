"""Fleet moves: which tenants a selector picks, in which order, and what moving them would do. Pure.

Selectors filter one after the other: `--tenants` (an explicit list, or every known tenant when absent),
then `--match` (a shell-style pattern), then `--percent`. A tenant falls in the percentage when its
bucket, a stable hash of its id mapped onto [0, 100), is below it: the same tenants are picked whatever
else is known, and 25 % picks every tenant 10 % picked, plus more. Order is the `--tenants` order when
given, else by tenant id.
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from routing.phases import Phase, allowed_moves
from routing.tenant import validate_tenant

_BUCKETS = 2**64


def bucket_of(tenant: str) -> float:
    """Where `tenant` falls on [0, 100): the first 8 bytes of SHA-256 of its id, scaled. Stable across
    processes, machines and Python versions (unlike `hash`)."""
    digest = hashlib.sha256(tenant.encode()).digest()
    return int.from_bytes(digest[:8], "big") * 100 / _BUCKETS


@dataclass(frozen=True, slots=True)
class Selector:
    tenants: tuple[str, ...] | None = None
    match: str | None = None
    percent: float | None = None

    def __post_init__(self) -> None:
        if self.percent is not None and not 0 < self.percent <= 100:
            raise ValueError(f"percent must be in (0, 100], got {self.percent}")
        if self.tenants is not None:
            for tenant in self.tenants:
                validate_tenant(tenant)

    @property
    def empty(self) -> bool:
        return self.tenants is None and self.match is None and self.percent is None

    def describe(self) -> str:
        parts = []
        if self.tenants is not None:
            parts.append(f"--tenants {','.join(self.tenants)}")
        if self.match is not None:
            parts.append(f"--match {self.match!r}")
        if self.percent is not None:
            parts.append(f"--percent {self.percent:g}")
        return " ".join(parts) or "(no selector)"


def parse_tenant_list(text: str) -> tuple[str, ...]:
    """`a,b, c,,a` → ("a", "b", "c"): trimmed, empty names dropped, first occurrence kept."""
    names = (name.strip() for name in text.split(","))
    return tuple(dict.fromkeys(name for name in names if name))


def unknown_named(selector: Selector, known: Iterable[str]) -> list[str]:
    """Tenants the selector names explicitly that are neither in the phase table nor seen in traffic: most
    often a typo, which a move would turn into a phase row of its own. In `--tenants` order."""
    if selector.tenants is None:
        return []
    found = set(known)
    return [t for t in selector.tenants if t not in found]


def select(selector: Selector, known: Iterable[str]) -> list[str]:
    """The tenants `selector` picks, in move order."""
    if selector.tenants is not None:
        candidates = list(selector.tenants)
    else:
        candidates = sorted(set(known))
    if selector.match is not None:
        pattern = selector.match
        candidates = [t for t in candidates if fnmatch.fnmatchcase(t, pattern)]
    if selector.percent is not None:
        percent = selector.percent
        candidates = [t for t in candidates if bucket_of(t) < percent]
    return candidates


@dataclass(frozen=True, slots=True)
class TenantState:
    phase: Phase
    version: int


class StepKind(StrEnum):
    MOVE = "move"
    ALREADY_THERE = "already_there"  # skipped: not a refusal, so re-running a fleet move only adds
    NOT_ALLOWED = "not_allowed"  # the phase rules refuse it; a real run stops here


@dataclass(frozen=True, slots=True)
class Step:
    tenant: str
    current: Phase
    version: int
    target: Phase
    kind: StepKind

    def as_json(self) -> dict[str, object]:
        return {
            "tenant": self.tenant,
            "from": self.current.value,
            "to": self.target.value,
            "version": self.version,
            "plan": self.kind.value,
        }


def plan(
    tenants: Sequence[str],
    states: Mapping[str, TenantState],
    target: Phase,
    *,
    default_phase: Phase,
    force: bool = False,
) -> list[Step]:
    """One step per selected tenant, by the phase rules alone. The admin API checks each step against all
    of its guards (`dry_run`) before a fleet move changes anything (`proxy.cli.fleet`)."""
    steps = []
    for tenant in tenants:
        state = states.get(tenant, TenantState(default_phase, 0))
        if state.phase is target:
            kind = StepKind.ALREADY_THERE
        elif target in allowed_moves(state.phase, force=force):
            kind = StepKind.MOVE
        else:
            kind = StepKind.NOT_ALLOWED
        steps.append(Step(tenant, state.phase, state.version, target, kind))
    return steps
