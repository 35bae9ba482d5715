"""Telemetry settings: traces (OTLP), metrics (`GET /metrics` on the admin port) and structured logs.

Referenced from `Settings.telemetry`; every key is documented in `config/cutover.example.yaml`.
"""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from routing.tenant import InvalidTenantError, validate_tenant

# Seconds. Finer than the OpenTelemetry default at the low end: one proxy hop costs ~0.2 ms here.
DEFAULT_LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class TelemetrySettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # OTLP/HTTP collector base URL (e.g. http://otel-collector:4318); spans go to <endpoint>/v1/traces.
    # Unset: nothing is exported.
    otlp_endpoint: str | None = None
    # Extra headers for the collector (often an API key): secrets, never logged.
    otlp_headers: dict[str, SecretStr] = Field(default_factory=dict)
    otlp_timeout_s: float = Field(default=10.0, gt=0)
    # Finished spans are sent in batches at least this often (milliseconds).
    otlp_export_delay_ms: int = Field(default=5000, ge=10, le=60_000)
    service_name: str = Field(default="cutover", min_length=1)
    # Spans on or off. Unset: on exactly when `otlp_endpoint` is set. On without an endpoint still makes
    # trace ids (in logs, in `traceparent` to the backends and in intents) but exports nothing.
    tracing: bool | None = None
    # Head sampling of new traces; a request that arrives with a `traceparent` follows its parent's choice.
    # Per request: an unsampled trace costs a random draw; a recorded one (server + client span) ~6-15 µs
    # of CPU without an exporter and ~75 µs with OTLP export (the exporter's encoding), against ~150 µs
    # for the proxied request. Tracing is normally on because an endpoint is set, so the default keeps
    # exported tracing small: at 0.01 it adds under 1 %; at 0.1 about 6 %, which with metrics passed the
    # 10 % budget of telemetry (BENCHMARKS.md). Callers' sampled traces are recorded at any rate.
    trace_sample_rate: float = Field(default=0.01, ge=0.0, le=1.0)
    # Per-request metrics (counts and latency histograms). Off: `GET /metrics` answers 404.
    metrics: bool = True
    # Who may scrape `GET /metrics`: `read` needs an admin token (any scope) as a Bearer token; `none` is
    # open to anyone who can reach the admin port.
    metrics_auth: Literal["read", "none"] = "read"
    # Tenants that get their own `tenant` label; every other tenant is counted as "other".
    tenant_labels: list[str] = Field(default_factory=list)
    # Besides `tenant_labels`, up to this many of the busiest tenants get their own label, chosen at
    # scrape time and kept for the process's lifetime (so their counters stay monotonic). 0: none.
    tenant_top_n: int = Field(default=0, ge=0, le=1000)
    latency_buckets_s: list[Annotated[float, Field(gt=0)]] = Field(
        default_factory=lambda: list(DEFAULT_LATENCY_BUCKETS_S), min_length=1, max_length=40
    )
    log_format: Literal["json", "text"] = "json"
    # Names of structured log fields whose values are always replaced by "***" (beside the built-in
    # authorization, cookie, password, secret and token names).
    redact_fields: list[str] = Field(default_factory=list)

    @field_validator("otlp_endpoint")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an absolute http:// or https:// URL")
        if parts.username is not None or parts.password is not None:
            raise ValueError("must not carry credentials; put them in telemetry.otlp_headers")
        return value.rstrip("/")

    @field_validator("tenant_labels")
    @classmethod
    def _tenants(cls, value: list[str]) -> list[str]:
        try:
            return [validate_tenant(tenant) for tenant in value]
        except InvalidTenantError as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _sorted_buckets(self) -> TelemetrySettings:
        buckets = self.latency_buckets_s
        if any(upper <= lower for lower, upper in zip(buckets, buckets[1:], strict=False)):
            raise ValueError("latency_buckets_s must be strictly increasing")
        return self

    @property
    def tracing_enabled(self) -> bool:
        return self.otlp_endpoint is not None if self.tracing is None else self.tracing
