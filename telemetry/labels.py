"""Bounded `tenant` label values: a tenant gets its own label only when configured or among the busiest.

Metric cardinality must not grow with traffic: any client can send any tenant id. A tenant named in
`telemetry.tenant_labels` is labelled by its id; with `tenant_top_n > 0`, up to that many more tenants
are promoted, at scrape time, from the busiest of the traffic seen since the previous scrape, and keep
their label for the life of the process (a label that came and went would make its counters jump).
Everything else is counted as `other`; requests without a tenant as `none`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

OTHER = "other"
NO_TENANT = "none"


class TenantLabels:
    def __init__(self, allowed: Iterable[str], *, top_n: int = 0) -> None:
        self._labels: dict[str, str] = {tenant: tenant for tenant in allowed}
        self._top_n = top_n
        self._promoted = 0
        self._window: Counter[str] = Counter()
        # The candidate window is bounded too: past this many distinct tenants, new ones are not
        # counted until the next scrape (the busiest are almost always among the first seen anyway).
        self._window_capacity = max(256, 16 * top_n)

    # -- hot path -------------------------------------------------------------------------------------
    def label(self, tenant: str | None) -> str:
        if tenant is None:
            return NO_TENANT
        label = self._labels.get(tenant)
        if label is not None:
            return label
        if self._promoted < self._top_n:
            window = self._window
            if tenant in window or len(window) < self._window_capacity:
                window[tenant] += 1
        return OTHER

    # -- scrape ---------------------------------------------------------------------------------------
    def promote(self) -> list[str]:
        """Give the busiest unlabelled tenants of the window their own label, up to `top_n` in all."""
        promoted: list[str] = []
        room = self._top_n - self._promoted
        if room > 0:
            for tenant, _count in self._window.most_common(room):
                self._labels[tenant] = tenant
                promoted.append(tenant)
            self._promoted += len(promoted)
        self._window.clear()
        return promoted

    @property
    def labelled(self) -> frozenset[str]:
        return frozenset(self._labels)
