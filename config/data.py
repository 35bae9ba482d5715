"""Settings of the data half of a migration: where each side's rows live, how tables map between the
sides, and what the backfill, the verifier and the `complete` gate do with them.

```yaml
data:
  old: {postgres_url: postgresql://...}
  new: {postgres_url: postgresql://...}
  tables:
    - name: items                     # the name in commands and reports
      old: {table: legacy_items, tenant_column: account}
      new: {table: items, tenant_column: tenant_id}
      key: [id]                       # key columns, as named on the new side
      columns: {title: name}          # new column -> old column, where the names differ
      transform: {function: mypkg.migrate.item_v2, version: "2"}
      path: /items/{key}              # writes to this path change the row keyed {key}
```
"""

from __future__ import annotations

import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from config.limits import CHUNK_ROWS_DEFAULT, CHUNK_ROWS_MAX, CHUNK_ROWS_MIN

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
Identifier = Annotated[str, Field(pattern=f"^{_IDENT}$", max_length=63)]
QualifiedName = Annotated[str, Field(pattern=f"^{_IDENT}(\\.{_IDENT})?$", max_length=127)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def postgres_scheme(value: SecretStr) -> SecretStr:
    scheme = urlsplit(value.get_secret_value()).scheme
    if scheme not in ("postgres", "postgresql"):
        raise ValueError("must be a postgresql:// URL")
    return value


class DataSide(_Frozen):
    postgres_url: SecretStr  # may carry credentials

    _scheme = field_validator("postgres_url")(postgres_scheme)


class TableSide(_Frozen):
    table: QualifiedName
    tenant_column: Identifier = "tenant_id"


class Transform(_Frozen):
    """A deterministic row function `f(old_row: dict) -> dict` (new-side column names); its version goes
    into every checkpoint and report, so a rerun can tell whether it copies the same way."""

    function: Annotated[str, Field(pattern=rf"^{_IDENT}(\.{_IDENT})+$")]  # dotted: package.module.function
    version: str = Field(min_length=1, max_length=64)


class DataTable(_Frozen):
    name: Identifier
    old: TableSide
    new: TableSide
    key: list[Identifier] = Field(default_factory=lambda: ["id"], min_length=1, max_length=8)
    columns: dict[Identifier, Identifier] = Field(default_factory=dict)  # new column -> old column
    exclude_columns: list[Identifier] = Field(default_factory=list)  # new-side columns left to defaults
    transform: Transform | None = None
    # REST path pattern (one `{key}` segment) of the writes that change this table's rows: verification
    # uses it to tell which keys have intents still pending. Without it, any pending intent of the tenant
    # defers every difference found in the table until the buffer has drained.
    path: Annotated[str, Field(pattern=r"^/.*\{key\}")] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> DataTable:
        if len(set(self.key)) != len(self.key):
            raise ValueError("key columns must be distinct")
        if set(self.key) & set(self.exclude_columns):
            raise ValueError("a key column cannot be excluded")
        if self.path is not None and len(self.key) != 1:
            raise ValueError("path needs a single-column key")
        return self

    def old_column(self, new_column: str) -> str:
        return self.columns.get(new_column, new_column)


class GateSettings(_Frozen):
    """Moving a tenant to `complete` needs a passing verification of every table (and REST resource)."""

    require_verify: bool = True
    # The report must be newer than the tenant's last phase change (so it saw the phase's write path).
    since_last_phase_change: bool = True
    max_age_s: float | None = Field(default=None, gt=0)  # and, if set, no older than this


class VerifySettings(_Frozen):
    range_rows: int = Field(default=2_000, ge=100, le=1_000_000)  # rows per range of the first pass
    leaf_rows: int = Field(default=2_000, ge=10, le=100_000)  # ranges this small are compared key by key
    split_ways: int = Field(default=16, ge=2, le=256)  # sub-ranges a mismatching range is split into
    sample_diffs: int = Field(default=20, ge=0, le=10_000)  # keys per table shown with a column diff
    max_keys: int = Field(default=10_000, ge=1)  # differing keys listed per table (the rest are counted)
    drain_timeout_s: float = Field(default=30.0, gt=0)  # wait for pending intents before re-checking
    recheck_rounds: int = Field(default=3, ge=1, le=100)


class RestResource(_Frozen):
    """A REST resource both backends serve: its collection (`list_path`), one record's path (`item_path`),
    the field holding a record's id, and how a record with a given id is created (`create`). Verification
    pages the collection and compares records by id (pages are followed by `page_param`, a page number
    from `first_page`, or, when the body carries `next_field`, by the cursor it holds); repair and the
    worker's replay read and write single records."""

    name: Identifier
    list_path: Annotated[str, Field(pattern=r"^/")]
    id_field: str = Field(default="id", min_length=1)
    items_field: str = Field(default="items", min_length=1)  # where the records are in a page's body
    page_param: str = Field(default="page", min_length=1)
    first_page: int = Field(default=1, ge=0)
    size_param: str = Field(default="limit", min_length=1)
    page_size: int = Field(default=500, ge=1, le=100_000)
    next_field: str | None = None  # body field with the next page's cursor (null/absent at the end)
    cursor_param: str = Field(default="cursor", min_length=1)
    ignore_fields: list[str] = Field(default_factory=list)  # per-side noise, e.g. served_at
    tenant_query: str | None = None  # also pass the tenant as this query parameter (besides the header)
    max_pages: int = Field(default=100_000, ge=1)
    # One record's path (one `{key}` segment, the record's id): `verify --repair` reads the record there on
    # the authoritative side and PUTs or DELETEs it on the other; a resource without it is not repaired.
    # Pending writes to it defer a difference (without it: writes to `<list_path>/{key}`).
    item_path: Annotated[str, Field(pattern=r"^/[^{}]*\{key\}[^{}]*$")] | None = None
    # How the mirror is given a record it lacks, with the id the authoritative side holds: `put` to the
    # record's path (an upsert), or `post` to the collection with the id in the body (json-server and
    # services whose PUT only replaces). The worker uses it when it settles an intent in doubt.
    create: Literal["put", "post"] = "put"

    @property
    def record_path(self) -> str:
        """The path pattern of one record, as writes to it are seen."""
        return self.item_path or self.collection_path.rstrip("/") + "/{key}"

    @property
    def collection_path(self) -> str:
        """`list_path` without its query string: where creates are POSTed."""
        return self.list_path.partition("?")[0]


class RestVerifySettings(_Frozen):
    resources: list[RestResource] = Field(default_factory=list)
    timeout_s: float = Field(default=30.0, gt=0)
    concurrency: int = Field(default=4, ge=1, le=64)


class DataSettings(_Frozen):
    old: DataSide | None = None  # both sides, or neither (REST-only verification)
    new: DataSide | None = None
    tables: list[DataTable] = Field(default_factory=list)
    chunk_rows: int = Field(default=CHUNK_ROWS_DEFAULT, ge=CHUNK_ROWS_MIN, le=CHUNK_ROWS_MAX)
    verify: VerifySettings = VerifySettings()
    rest: RestVerifySettings = RestVerifySettings()
    gate: GateSettings = GateSettings()

    @model_validator(mode="after")
    def _consistent(self) -> DataSettings:
        if (self.old is None) != (self.new is None):
            raise ValueError("give both data.old and data.new, or neither")
        if self.tables and self.old is None:
            raise ValueError("tables need data.old.postgres_url and data.new.postgres_url")
        names = [t.name for t in self.tables] + [r.name for r in self.rest.resources]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"table and resource names must be unique: {', '.join(duplicates)}")
        return self

    def table(self, name: str) -> DataTable:
        for table in self.tables:
            if table.name == name:
                return table
        known = ", ".join(t.name for t in self.tables) or "none"
        raise KeyError(f"no table {name!r} in data.tables (configured: {known})")

    @property
    def covered(self) -> list[str]:
        """Every table and REST resource the `complete` gate needs a passing report of."""
        return [t.name for t in self.tables] + [r.name for r in self.rest.resources]


def path_key_pattern(path: str) -> re.Pattern[str]:
    """`/items/{key}` → a regex whose `key` group is that segment."""
    prefix, _, suffix = path.partition("{key}")
    return re.compile("^" + re.escape(prefix) + "(?P<key>[^/]+)" + re.escape(suffix) + "$")
