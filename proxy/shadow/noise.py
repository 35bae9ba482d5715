"""Noise learning: which fields differ between two answers of the *same* side, per resource.

Some reads are sent a second time to the serving side (a "copy"). Per resource the learner counts how
often each field differs between old and new (`primary`) and between the served answer and its copy
(`copy`). A field is noise when it differs between old and new at most `margin` more often than between
copies: a timestamp differs in every pair of either kind, a real change only between old and new.

Until a resource has `min_copies` copies the figures are not trusted: every read of it gets a copy, and a
field counts as noise for one comparison only when it also differed in that comparison's own copy. Counts
are halved past `_HALVE_AT` comparisons so that what is learned follows the backends as they change.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from config.divergence import NoisePolicy

_HALVE_AT = 20_000


@dataclass
class _Figures:
    primaries: int = 0
    copies: int = 0
    primary: Counter[str] = field(default_factory=Counter)
    copy: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True, slots=True)
class FieldNoise:
    """What the learner knows of one field of one resource (for reports and tests)."""

    primary_rate: float
    copy_rate: float
    copies: int
    noise: bool


class NoiseLearner:
    def __init__(self, policy: NoisePolicy, *, rng: Callable[[], float] = random.random) -> None:
        self._policy = policy
        self._rng = rng
        self._resources: dict[str, _Figures] = {}

    def set_policy(self, policy: NoisePolicy) -> None:
        self._policy = policy

    def wants_copy(self, resource: str) -> bool:
        policy = self._policy
        if policy.sample_rate <= 0:
            return False
        figures = self._resources.get(resource)
        if figures is None:
            return len(self._resources) < policy.max_resources
        return figures.copies < policy.min_copies or self._rng() < policy.sample_rate

    def observe_copy(self, resource: str, fields: Iterable[str]) -> None:
        figures = self._figures(resource)
        if figures is None:
            return
        figures.copies += 1
        self._count(figures.copy, fields)
        self._maybe_halve(figures)

    def observe_primary(self, resource: str, fields: Iterable[str]) -> None:
        figures = self._figures(resource)
        if figures is None:
            return
        figures.primaries += 1
        self._count(figures.primary, fields)
        self._maybe_halve(figures)

    def is_noise(self, resource: str, name: str, copy_fields: frozenset[str] | None = None) -> bool:
        """Whether a difference in `name` is noise; `copy_fields`: what differed in this read's own copy."""
        figures = self._resources.get(resource)
        if figures is not None and figures.copies >= self._policy.min_copies:
            return self.describe(resource, name).noise
        return copy_fields is not None and name in copy_fields

    def describe(self, resource: str, name: str) -> FieldNoise:
        figures = self._resources.get(resource) or _Figures()
        copy_rate = figures.copy[name] / figures.copies if figures.copies else 0.0
        primary_rate = figures.primary[name] / figures.primaries if figures.primaries else 0.0
        trusted = figures.copies >= self._policy.min_copies
        noise = trusted and copy_rate > 0 and primary_rate <= copy_rate + self._policy.margin
        return FieldNoise(primary_rate, copy_rate, figures.copies, noise)

    def _figures(self, resource: str) -> _Figures | None:
        figures = self._resources.get(resource)
        if figures is None and len(self._resources) < self._policy.max_resources:
            figures = self._resources[resource] = _Figures()
        return figures

    def _count(self, counter: Counter[str], fields: Iterable[str]) -> None:
        limit = self._policy.max_fields_per_resource
        for name in set(fields):
            if name in counter or len(counter) < limit:
                counter[name] += 1

    @staticmethod
    def _maybe_halve(figures: _Figures) -> None:
        if figures.primaries + figures.copies < _HALVE_AT:
            return
        figures.primaries //= 2
        figures.copies //= 2
        for counter in (figures.primary, figures.copy):
            for name in list(counter):
                counter[name] //= 2
                if not counter[name]:
                    del counter[name]
