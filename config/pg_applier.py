"""Settings of the PostgreSQL applier: per side, the database that intents toward that side are written
into, and which REST paths map to which of its tables (names may differ per side).

```yaml
worker:
  applier: postgres                       # or per side: {new: postgres, old: http}
  postgres:
    new: {url: postgresql://db-new/app, resources: [{path: /items/{key}, table: items}]}
    old: {url: postgresql://db-old/app, resources: [{path: /items/{key}, table: legacy_items}]}
    state_transfer: true                  # write the authoritative side's current row, not the body
```

The shape from before sides existed (`url` and `resources` directly under `worker.postgres`) still
loads and means the new side.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from routing.phases import Side

ApplierKind = Literal["http", "postgres"]
_IDENT = r"^[A-Za-z_][A-Za-z0-9_]*$"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PostgresResource(_Frozen):
    """Writes to `path` (a pattern with one `{key}` segment, e.g. `/items/{key}`) map to rows of `table`.
    The JSON body is stored whole in `document_column` (jsonb), keyed by tenant and key."""

    path: str = Field(pattern=r"^/.*\{key\}")
    table: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
    tenant_column: str = Field(default="tenant_id", pattern=_IDENT)
    key_column: str = Field(default="id", pattern=_IDENT)
    document_column: str = Field(default="doc", pattern=_IDENT)


class PostgresSide(_Frozen):
    """One side's database, as the applier writes to it (and, with state transfer, reads from it)."""

    url: SecretStr
    resources: list[PostgresResource] = Field(min_length=1)

    @field_validator("url")
    @classmethod
    def _postgres_scheme(cls, value: SecretStr) -> SecretStr:
        if urlsplit(value.get_secret_value()).scheme not in ("postgres", "postgresql"):
            raise ValueError("must be a postgresql:// URL")
        return value

    @model_validator(mode="after")
    def _distinct_paths(self) -> PostgresSide:
        paths = [resource.path for resource in self.resources]
        duplicates = sorted({path for path in paths if paths.count(path) > 1})
        if duplicates:
            raise ValueError(f"resource paths must be unique: {', '.join(duplicates)}")
        return self

    def resource(self, path: str) -> PostgresResource | None:
        return next((r for r in self.resources if r.path == path), None)


class PostgresApplierSettings(_Frozen):
    """Intents toward a side are written straight into that side's database: rows upserted and deleted."""

    new: PostgresSide | None = None
    old: PostgresSide | None = None
    # Write the key's current row read from the authoritative side instead of replaying the write's body:
    # replay follows stream order, which concurrent writers can make differ from the order the
    # authoritative side committed (buffer_worker.pg_state).
    state_transfer: bool = True
    # Applied-intent ids are kept this long (0: forever); longer than an intent can wait in a stream or a
    # proxy's spool, or a late duplicate of it would be applied again (buffer_worker.ledger).
    ledger_retention_h: float = Field(default=168.0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _one_side_shape(cls, value: Any) -> Any:
        """`url` + `resources` beside the sides: the shape before sides existed, meaning new."""
        if not isinstance(value, dict) or not ({"url", "resources"} & value.keys()):
            return value
        if "new" in value:
            raise ValueError("give worker.postgres.new (url, resources), not url and resources beside it")
        rest = {k: v for k, v in value.items() if k not in ("url", "resources")}
        return {**rest, "new": {k: value[k] for k in ("url", "resources") if k in value}}

    @model_validator(mode="after")
    def _some_side(self) -> PostgresApplierSettings:
        if self.new is None and self.old is None:
            raise ValueError("give worker.postgres.new and/or worker.postgres.old (each: url, resources)")
        if self.state_transfer and self.new is not None and self.old is not None:
            # State transfer toward one side reads the same resource in the other side's database.
            paths = {side: {r.path for r in getattr(self, side).resources} for side in ("new", "old")}
            for side, other in (("new", "old"), ("old", "new")):
                unmapped = sorted(paths[side] - paths[other])
                if unmapped:
                    raise ValueError(
                        f"worker.postgres.{other} maps no resource for {', '.join(unmapped)}: state transfer"
                        f" toward {side} reads it there (map it, or set state_transfer: false)"
                    )
        return self

    def side(self, side: Side) -> PostgresSide | None:
        return self.new if side is Side.NEW else self.old


class ApplierPerSide(_Frozen):
    """How intents reach each side, when the sides differ (e.g. a MariaDB old side over HTTP)."""

    new: ApplierKind = "http"
    old: ApplierKind = "http"


def same_database(first: str, second: str) -> bool:
    """Whether two PostgreSQL URLs name the same database of the same server (users and options aside)."""
    return _database_of(first) == _database_of(second)


_LOOPBACK = {"localhost", "127.0.0.1", "::1", ""}


def _database_of(url: str) -> tuple[str, int, str]:
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    host = (parts.hostname or query.get("host", [""])[0]).lower()
    port = parts.port or int(query.get("port", ["5432"])[0])
    user = unquote(parts.username or "") or query.get("user", [""])[0]
    name = unquote(parts.path.lstrip("/")) or query.get("dbname", [""])[0] or user  # libpq's default
    return ("localhost" if host in _LOOPBACK else host, port, name)
