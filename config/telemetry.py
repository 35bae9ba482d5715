"""Telemetry settings: traces (OTLP), metrics (`GET /metrics` on the admin port) and structured logs.

Referenced from `Settings.telemetry`; every key is documented in `config/cutover.example.yaml`. The
standard `OTEL_*` variables are read into these keys by `config.otel_env` when settings are loaded (the
model stays the one source: nothing reads them later).
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args
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
# The OpenTelemetry sampler names (`OTEL_TRACES_SAMPLER`) cutover implements; the ratio ones take
# `trace_sample_rate` as their argument.
TraceSampler = Literal[
    "parentbased_traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "traceidratio",
    "always_on",
    "always_off",
]
TRACE_SAMPLERS: tuple[str, ...] = get_args(TraceSampler)
TraceExporter = Literal["otlp", "console", "none"]
# Where spans go when the exporter is `otlp` and no endpoint is set (the OpenTelemetry default).
DEFAULT_OTLP_ENDPOINT = "http://localhost:4318"


class TelemetrySettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # OTLP/HTTP collector base URL (e.g. http://otel-collector:4318); spans go to <endpoint>/v1/traces.
    # Unset: nothing is exported (unless `exporter` or `otlp_traces_endpoint` says otherwise).
    otlp_endpoint: str | None = None
    # The full URL spans are sent to, used as given (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT); wins over
    # `otlp_endpoint`.
    otlp_traces_endpoint: str | None = None
    # Where finished spans go: `otlp` (OTLP/HTTP), `console` (one JSON object per span on stdout, for
    # trying tracing without a collector) or `none`. Unset: `otlp` when an endpoint is set, else `none`.
    exporter: TraceExporter | None = None
    # Extra headers for the collector (often an API key): secrets, never logged.
    otlp_headers: dict[str, SecretStr] = Field(default_factory=dict)
    otlp_timeout_s: float = Field(default=10.0, gt=0)
    # Finished spans are sent in batches at least this often (milliseconds).
    otlp_export_delay_ms: int = Field(default=5000, ge=10, le=60_000)
    service_name: str = Field(default="cutover", min_length=1)
    # Extra resource attributes of every span (OTEL_RESOURCE_ATTRIBUTES), e.g. deployment.environment.
    # `service.name` is always `service_name`.
    resource_attributes: dict[str, str] = Field(default_factory=dict)
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
    # How new and continued traces are sampled, by the OpenTelemetry sampler names: `parentbased_*`
    # follows a caller's sampled flag and applies the rest to new traces only; `traceidratio` samples
    # every trace (continued ones too) at `trace_sample_rate`; `always_on` / `always_off` at 1 / 0.
    trace_sampler: TraceSampler = "parentbased_traceidratio"
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

    @field_validator("otlp_endpoint", "otlp_traces_endpoint")
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

    @field_validator("resource_attributes")
    @classmethod
    def _attribute_names(cls, value: dict[str, str]) -> dict[str, str]:
        if any(not name for name in value):
            raise ValueError("attribute names must not be empty")
        return value

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
    def span_exporter(self) -> TraceExporter:
        """The exporter in force: `exporter`, else `otlp` exactly when an endpoint is set."""
        if self.exporter is not None:
            return self.exporter
        return "none" if self.otlp_endpoint is None and self.otlp_traces_endpoint is None else "otlp"

    @property
    def otlp_traces_url(self) -> str:
        """Where the OTLP exporter sends spans (OpenTelemetry's rules: a signal URL is used as given)."""
        if self.otlp_traces_endpoint is not None:
            return self.otlp_traces_endpoint
        return f"{self.otlp_endpoint or DEFAULT_OTLP_ENDPOINT}/v1/traces"

    @property
    def tracing_enabled(self) -> bool:
        """`tracing` when set; otherwise on exactly when spans go somewhere."""
        return self.span_exporter != "none" if self.tracing is None else self.tracing

    @property
    def follows_parent(self) -> bool:
        """A caller's sampled flag decides for the traces it continues (the `parentbased_*` samplers)."""
        return self.trace_sampler.startswith("parentbased_")

    @property
    def root_sample_rate(self) -> float:
        """The fraction of traces the sampler keeps where the parent does not decide."""
        if self.trace_sampler.endswith("always_on"):
            return 1.0
        if self.trace_sampler.endswith("always_off"):
            return 0.0
        return self.trace_sample_rate
