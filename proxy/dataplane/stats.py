"""Process-local counters of what the data plane did. Plain ints: incremented on the hot path, read by
the admin API (`/readyz`, `/metrics`). One event loop per process, so no locking is needed."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from proxy.shadow.rates import divergence_rate


@dataclass
class DataPlaneStats:
    requests: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (phase, kind, served_by)
    fallbacks: Counter[str] = field(default_factory=Counter)  # tenant-less: by phase
    fallback_refused: int = 0
    shadow_compared: int = 0
    shadow_equal: int = 0
    shadow_divergent: int = 0
    shadow_noise: int = 0  # differed only in fields learned or configured as noise
    shadow_skipped: int = 0  # not shadowed for lack of budget: over the in-flight cap, shadow process down
    shadow_unsampled: int = 0  # not shadowed by the tenant's sample rate
    shadow_failed: int = 0  # a side errored or timed out: nothing compared (never divergent)
    shadow_errors: int = 0  # the comparison machinery failed (see the shadow process log)
    divergences_dropped: int = 0  # recorder queue full
    divergences_stored: int = 0
    intents_appended: int = 0
    intents_failed: int = 0
    auto_rollbacks: Counter[str] = field(default_factory=Counter)  # by tenant

    def as_json(self) -> dict[str, object]:
        return {
            "requests": [
                {"phase": p, "kind": k, "served_by": s, "count": n}
                for (p, k, s), n in sorted(self.requests.items())
            ],
            "fallbacks": dict(self.fallbacks),
            "fallback_refused": self.fallback_refused,
            "shadow": {
                "compared": self.shadow_compared,
                "divergence_rate": divergence_rate(
                    self.shadow_divergent, self.shadow_compared - self.shadow_failed
                ),
                "equal": self.shadow_equal,
                "divergent": self.shadow_divergent,
                "noise": self.shadow_noise,
                "skipped": self.shadow_skipped,
                "unsampled": self.shadow_unsampled,
                "failed": self.shadow_failed,
                "errors": self.shadow_errors,
            },
            "divergences": {"stored": self.divergences_stored, "dropped": self.divergences_dropped},
            "intents": {"appended": self.intents_appended, "failed": self.intents_failed},
            "auto_rollbacks": dict(self.auto_rollbacks),
        }
