"""The verdict on one shadowed read, from its lifted answers: pure, apart from what the learner learns.

    served ──┐
    shadow ──┴─ diff (rules) ─── differing fields ──┐
    served ──┐                                      ├─ each field: noise or divergent ─ verdict
    copy   ──┴─ diff (rules) ─── fields that differ ┘   (learned figures, or this copy)
              between two answers of the serving side

A read where either side failed is FAILED (nothing to compare, nothing learned). The new side's failure
(transport error, timeout, 5xx) is flagged whichever side served: it feeds the rollback's error rate.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from proxy.shadow.differ import Comparison, Rules, diff
from proxy.shadow.job import Verdict
from proxy.shadow.lift import Lifted
from proxy.shadow.noise import NoiseLearner
from routing.phases import Side


@dataclass(frozen=True, slots=True)
class Analysis:
    verdict: Verdict
    comparison: Comparison
    noise: tuple[bool, ...]  # per difference of `comparison`: learned or seen as noise
    new_error: bool

    @property
    def divergent_fields(self) -> tuple[str, ...]:
        return _unique(d.field for d, n in zip(self.comparison.differences, self.noise, strict=True) if not n)

    @property
    def noise_fields(self) -> tuple[str, ...]:
        return _unique(d.field for d, n in zip(self.comparison.differences, self.noise, strict=True) if n)


def analyse(
    *,
    resource: str,
    serving_side: Side,
    served: Lifted,
    shadow: Lifted,
    copy: Lifted | None,
    rules: Rules,
    learner: NoiseLearner,
) -> Analysis:
    new = served if serving_side is Side.NEW else shadow
    new_error = new.error is not None or (new.status or 0) >= 500
    comparison = diff(served, shadow, rules)
    if served.error is not None or shadow.error is not None:
        return Analysis(Verdict.FAILED, comparison, (False,) * len(comparison.differences), new_error)
    copy_fields: frozenset[str] | None = None
    if copy is not None and copy.error is None:
        copy_fields = frozenset(d.field for d in diff(served, copy, rules).differences)
        learner.observe_copy(resource, copy_fields)
    learner.observe_primary(resource, (d.field for d in comparison.differences))
    if comparison.equal:
        return Analysis(Verdict.EQUAL, comparison, (), new_error)
    noise = tuple(learner.is_noise(resource, d.field, copy_fields) for d in comparison.differences)
    verdict = Verdict.NOISE if all(noise) else Verdict.DIVERGENT
    return Analysis(verdict, comparison, noise, new_error)


def _unique(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(names))
