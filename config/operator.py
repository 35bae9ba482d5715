"""Settings of the operator's tools: the record of tenants seen in traffic, the status page and the
per-tenant health history.

Referenced from `Settings.operator`; frozen like every settings model.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SeenTenantSettings(_Frozen):
    """Tenants seen in traffic are remembered in memory and written to PostgreSQL in batches, so that
    fleet moves (`cutover phase set --match/--percent`) also find tenants that have no phase row yet.
    Only a tenant whose request reached a backend and got a 2xx counts: any client can make up ids."""

    enabled: bool = True
    flush_interval_s: float = Field(default=5.0, gt=0)
    # New tenants remembered between two flushes; beyond this they are counted as dropped (and caught on
    # a later flush, as they keep sending requests).
    max_pending: int = Field(default=10_000, ge=1)
    # Tenants this process already wrote are not written again until this many seconds have passed, which
    # keeps `last_seen` roughly fresh without a write per request.
    refresh_s: float = Field(default=300.0, gt=0)
    # At most this many tenants in cutover_seen_tenant (new ones are not added beyond it) and in each
    # process's memory.
    max_tenants: int = Field(default=100_000, ge=1)
    # Tenants not seen for this long are deleted from the table (checked every `refresh_s`).
    retention_s: float = Field(default=30 * 86400.0, gt=0)


class StatusPageSettings(_Frozen):
    enabled: bool = True
    refresh_s: float = Field(default=2.0, ge=0.5, le=60)  # how often the page polls its data
    session_ttl_s: int = Field(default=8 * 3600, ge=60)  # lifetime of the cookie set by `?token=`
    # Signs the session cookie (proxy.admin.status_auth). The same on every proxy serving the page, or a
    # cookie one issued is refused by the next (and a restart signs everyone out); unset: a key per process.
    session_key: SecretStr | None = Field(default=None, min_length=32)
    divergence_window_s: int = Field(default=900, ge=60)  # divergences counted over this window
    tenants_per_phase: int = Field(default=200, ge=1, le=10_000)  # listed per phase; the rest are counted
    # Tenants drawn as time series (the busiest of the last hour), and the seconds per point.
    series_tenants: int = Field(default=12, ge=1, le=100)
    series_step_s: int = Field(default=60, ge=1, le=600)


class HealthSettings(_Frozen):
    """Per-tenant history for `GET /tenants/{t}/health`, `cutover tenant show` and the status page: every
    data-plane process adds its per-tenant, per-side request counts and latency histograms to PostgreSQL
    in buckets of `bucket_s`, the shadow process its comparisons, one process per proxy the buffer's
    backlog; pruned after `retention_s`."""

    enabled: bool = True
    bucket_s: int = Field(default=10, ge=1, le=300)
    # Seconds between two writes of a process's counts (the request path never waits for them).
    flush_interval_s: float = Field(default=2.0, gt=0, le=60)
    # Rows older than this are deleted: the page's hour and a margin.
    retention_s: int = Field(default=3900, ge=60)
    # What the page and the health view show, and the default window of the "now" figures.
    history_s: int = Field(default=3600, ge=60)
    window_s: int = Field(default=300, ge=10)
    # Tenants kept apart per process and flush: `telemetry.tenant_labels`, then the busiest this many;
    # the others are summed as `other`. Bounds the rows per bucket whatever the traffic.
    top_tenants: int = Field(default=50, ge=0, le=1000)

    @model_validator(mode="after")
    def _windows_fit(self) -> HealthSettings:
        if self.history_s > self.retention_s:
            raise ValueError("history_s must not exceed retention_s (rows older than retention_s are gone)")
        if self.window_s > self.history_s:
            raise ValueError("window_s must not exceed history_s")
        return self


class OperatorSettings(_Frozen):
    seen_tenants: SeenTenantSettings = SeenTenantSettings()
    status_page: StatusPageSettings = StatusPageSettings()
    health: HealthSettings = HealthSettings()
