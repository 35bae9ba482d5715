"""The settings model: every key cutover reads, validated once at start.

Settings are immutable after load and passed down explicitly (`create_app(settings)`); nothing reads
`os.environ` after start. Secrets are `SecretStr` so they never print in logs, errors or the admin API.
"""

from __future__ import annotations

import ipaddress
from enum import StrEnum
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, IPvAnyNetwork, SecretStr, field_validator, model_validator

from config.data import DataSettings
from config.divergence import DivergenceSettings
from config.operator import OperatorSettings
from config.pg_applier import ApplierKind, ApplierPerSide, same_database
from config.pg_applier import PostgresApplierSettings as PostgresApplierSettings  # re-exported
from config.pg_applier import PostgresResource as PostgresResource  # re-exported
from config.pg_applier import PostgresSide as PostgresSide  # re-exported
from config.sql import SqlDialect, SqlSettings
from config.telemetry import TelemetrySettings
from routing.phases import Phase, Side
from routing.tenant import TENANT_HEADER_DEFAULT


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ListenAddress(_Frozen):
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> ListenAddress:
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit() or not host:
            raise ValueError(f"expected HOST:PORT, got {text!r}")
        host = host.strip("[]")
        if not 0 <= int(port) <= 65535:
            raise ValueError(f"port {port} is out of range 0-65535")
        return cls(host=host, port=int(port))

    def __str__(self) -> str:
        host = f"[{self.host}]" if _is_ipv6(self.host) else self.host
        return f"{host}:{self.port}"


def _is_ipv6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return False


def _listen(value: object) -> object:
    return ListenAddress.parse(value) if isinstance(value, str) else value


class TokenScope(StrEnum):
    READ = "read"
    WRITE = "write"


class AdminToken(_Frozen):
    token: SecretStr = Field(min_length=16)
    scope: TokenScope = TokenScope.READ


class AdminSettings(_Frozen):
    listen: ListenAddress = ListenAddress(host="127.0.0.1", port=8081)
    tokens: dict[str, AdminToken] = Field(default_factory=dict)

    _parse_listen = field_validator("listen", mode="before")(_listen)


class HeaderRewrite(_Frozen):
    """Header changes applied to every request sent to one backend (serving, shadow and mirror alike)."""

    set: dict[str, SecretStr] = Field(default_factory=dict)  # values are often credentials
    remove: list[str] = Field(default_factory=list)


class BackendSettings(_Frozen):
    url: SecretStr  # may carry credentials (user:password@host)
    timeout_s: float = Field(default=30.0, gt=0)
    connect_timeout_s: float = Field(default=2.0, gt=0)
    max_connections: int = Field(default=512, ge=1)
    # Idle pooled connections are closed after this long. Keep it below the backend's own keep-alive
    # timeout (uvicorn: 5 s, nginx: 75 s): reusing a connection the server is just closing loses the request.
    idle_keepalive_s: float = Field(default=4.0, gt=0)
    headers: HeaderRewrite = HeaderRewrite()
    sql_dialect: SqlDialect | None = None  # the SQL dialect this side speaks on `sql.endpoints`

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: SecretStr) -> SecretStr:
        parts = urlsplit(value.get_secret_value())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an absolute http:// or https:// URL")
        if parts.query or parts.fragment:
            raise ValueError("must not carry a query or fragment")
        return value


class Backends(_Frozen):
    old: BackendSettings
    new: BackendSettings


class TenantSettings(_Frozen):
    header: str = Field(default=TENANT_HEADER_DEFAULT, min_length=1)


class PhaseCacheSettings(_Frozen):
    reload_interval_s: float = Field(default=5.0, gt=0)
    reconnect_interval_s: float = Field(default=1.0, gt=0)


class ShadowSettings(_Frozen):
    sample_rate: float = Field(default=1.0, ge=0.0, le=1.0)
    timeout_s: float = Field(default=5.0, gt=0)
    max_in_flight: int = Field(default=256, ge=1)
    compare_max_bytes: int = Field(default=1_048_576, ge=0)
    divergence_queue: int = Field(default=1000, ge=1)
    process_nice: int = Field(default=10, ge=0, le=19)  # CPU priority of the shadow process, below serving


class BufferSettings(_Frozen):
    partitions: int = Field(default=16, ge=1, le=1024)
    key_prefix: str = Field(default="cutover", min_length=1)
    spool_path: str = "cutover-intents.spool"
    spool_max_bytes: int = Field(default=256 * 1024 * 1024, ge=1024)
    # How often a healthy proxy re-checks that its spool takes writes (and that Redis answers).
    spool_check_interval_s: float = Field(default=5.0, gt=0)


class WorkerSettings(_Frozen):
    # Per-batch costs (round trips, the transaction) weigh heavily below a few hundred: draining into
    # PostgreSQL in-process, 500 ran at 28.0k intents/s against 19.8k/s for 200, and 1000 no faster.
    batch_size: int = Field(default=500, ge=1, le=10_000)
    block_ms: int = Field(default=200, ge=1, le=4000)  # below redis-py's 5 s socket timeout
    lease_ttl_s: float = Field(default=3.0, gt=0.5)  # a dead worker's partitions move within about this
    retry_initial_s: float = Field(default=0.1, gt=0)
    retry_max_s: float = Field(default=5.0, gt=0)
    max_attempts: int = Field(default=20, ge=1)  # error answers before an intent is dead-lettered
    apply_timeout_s: float = Field(default=10.0, gt=0)
    id_field: str = "id"  # response field carrying the id a create was assigned
    # How intents reach the mirrored side: one kind for both sides, or one per side.
    applier: ApplierKind | ApplierPerSide = "http"
    # HTTP applier: resources applied by state transfer instead of replay (path patterns, `{x}` = one
    # segment). The mirror gets the key's current representation read from the authoritative side, so
    # concurrent writers of one key, through any number of proxies, cannot leave the sides different.
    state_transfer: list[Annotated[str, Field(pattern=r"^/")]] = Field(default_factory=list)
    # HTTP applier: ids of applied intents are kept in Redis this long (0: forever), so a copy delivered
    # again or appended twice by a proxy's spool is recognised (buffer_worker.redis_ledger). An intent
    # older than this is beyond the ledger's memory: it is settled from the authoritative side instead.
    ledger_retention_h: float = Field(default=24.0, ge=0)
    linger_ms: int = Field(default=0, ge=0, le=1000)  # wait this long to fill a short batch
    tenant_rate_per_s: float = Field(default=0.0, ge=0)  # intents applied per tenant per second; 0: no limit
    postgres: PostgresApplierSettings | None = None

    @field_validator("applier", mode="before")
    @classmethod
    def _applier_kind(cls, value: object) -> object:
        if isinstance(value, dict) or value in ("http", "postgres"):
            return value  # a mapping is checked by ApplierPerSide
        raise ValueError("must be http or postgres, or one per side: {new: http|postgres, old: ...}")

    @model_validator(mode="after")
    def _applier_configured(self) -> WorkerSettings:
        if self.postgres is None and "postgres" in (self.applier_toward(side) for side in Side):
            raise ValueError("applier 'postgres' needs worker.postgres (new and/or old: url, resources)")
        return self

    def applier_toward(self, side: Side) -> ApplierKind:
        if isinstance(self.applier, str):
            return self.applier
        return self.applier.new if side is Side.NEW else self.applier.old

    def missing_for(self, side: Side) -> str | None:
        """The setting that intents toward `side` cannot be applied without, or None when they can.
        (HTTP needs nothing beyond `backends.<side>`, which is always there.)"""
        if self.applier_toward(side) == "postgres":
            assert self.postgres is not None  # enforced above
            if self.postgres.side(side) is None:
                return f"worker.postgres.{side.value}"
        return None


class ClientLimits(_Frozen):
    """What one client connection may take of the proxy's time and memory. Named after, and defaulting
    like, the nginx directives they mirror (`proxy.dataplane.edge` enforces them)."""

    # The whole request head must arrive within this (nginx `client_header_timeout`); 408 and close.
    client_header_timeout_s: float = Field(default=60.0, gt=0)
    # Each read of the request body must follow the previous one within this (`client_body_timeout`).
    client_body_timeout_s: float = Field(default=60.0, gt=0)
    # The request line and header fields together (nginx `large_client_header_buffers 4 8k`), and in a
    # chunked body each stretch that is not data (chunk framing, the trailer section); 431 and close.
    max_header_bytes: int = Field(default=32 * 1024, ge=1024)
    max_header_fields: int = Field(default=100, ge=1)


class BarrierSettings(_Frozen):
    hold_timeout_s: float = Field(default=2.0, gt=0, le=60)


class Settings(_Frozen):
    listen: ListenAddress = ListenAddress(host="127.0.0.1", port=8080)
    workers: int = Field(default=1, ge=1, le=64)
    admin: AdminSettings = AdminSettings()
    backends: Backends
    tenant: TenantSettings = TenantSettings()
    default_phase: Phase = Phase.LEGACY
    postgres_url: SecretStr = SecretStr("postgresql://postgres@127.0.0.1:5432/cutover")
    redis_url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=0)
    limits: ClientLimits = ClientLimits()
    phases: PhaseCacheSettings = PhaseCacheSettings()
    shadow: ShadowSettings = ShadowSettings()
    buffer: BufferSettings = BufferSettings()
    worker: WorkerSettings = WorkerSettings()
    barrier: BarrierSettings = BarrierSettings()
    telemetry: TelemetrySettings = TelemetrySettings()
    sql: SqlSettings = SqlSettings()
    data: DataSettings = DataSettings()  # backfill, verification and the `complete` gate
    divergence: DivergenceSettings = DivergenceSettings()
    # Peers whose forwarding headers (X-Forwarded-*, Forwarded, X-Real-IP) are kept and appended to, as
    # nginx's `set_real_ip_from`; from any other peer they are dropped and cutover sets its own.
    trusted_proxies: list[IPvAnyNetwork] = Field(default_factory=list)
    log_level: Annotated[str, Field(pattern="^(debug|info|warning|error)$")] = "info"
    access_log: bool = False
    proxy_id: str | None = None
    operator: OperatorSettings = OperatorSettings()

    _parse_listen = field_validator("listen", mode="before")(_listen)

    @model_validator(mode="after")
    def _sql_dialects(self) -> Settings:
        self.sql.check_dialects(self.backends.old.sql_dialect, self.backends.new.sql_dialect)
        return self

    @model_validator(mode="after")
    def _one_lock_database(self) -> Settings:
        """The backfill (old -> new) and the repair (toward the side that is not authoritative) take the
        tenant's mirror lock in `data.<side>.postgres_url`; the applier takes it where it writes. Only one
        database makes them exclude each other (buffer_worker.mirror_lock)."""
        postgres = self.worker.postgres
        for side in Side:
            data_side = getattr(self.data, side.value)
            applied = None if postgres is None else postgres.side(side)
            if data_side is None or applied is None or self.worker.applier_toward(side) != "postgres":
                continue
            if not same_database(applied.url.get_secret_value(), data_side.postgres_url.get_secret_value()):
                raise ValueError(
                    f"worker.postgres.{side.value}.url and data.{side.value}.postgres_url must name the same"
                    " database (host, port, database name): the backfill and repair lock a tenant there"
                    " against the PostgreSQL applier"
                )
        return self

    @field_validator("postgres_url")
    @classmethod
    def _postgres_scheme(cls, value: SecretStr) -> SecretStr:
        scheme = urlsplit(value.get_secret_value()).scheme
        if scheme not in ("postgres", "postgresql"):
            raise ValueError("must be a postgresql:// URL")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: SecretStr) -> SecretStr:
        scheme = urlsplit(value.get_secret_value()).scheme
        if scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value
