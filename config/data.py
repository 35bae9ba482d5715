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
    # Moving a tenant to live (past dual_write and shadow) needs every REST resource copied, by a copy
    # started after mirroring last began for the tenant (`cutover backfill`).
    require_copy: bool = True


class VerifySettings(_Frozen):
    range_rows: int = Field(default=2_000, ge=100, le=1_000_000)  # rows per range of the first pass
    leaf_rows: int = Field(default=2_000, ge=10, le=100_000)  # ranges this small are compared key by key
    split_ways: int = Field(default=16, ge=2, le=256)  # sub-ranges a mismatching range is split into
    sample_diffs: int = Field(default=20, ge=0, le=10_000)  # keys per table shown with a column diff
    max_keys: int = Field(default=10_000, ge=1)  # differing keys listed per table (the rest are counted)
    drain_timeout_s: float = Field(default=30.0, gt=0)  # wait for pending intents before re-checking
    recheck_rounds: int = Field(default=3, ge=1, le=100)


class CreateRequest(_Frozen):
    """A create of a record with a given id that is neither a PUT to its record path nor a POST to the
    collection: `method` to `path`, where `{key}` (if present) is the record's id. A POST carries the id
    in its body."""

    method: Literal["PUT", "POST"]
    path: Annotated[str, Field(pattern=r"^/[^{}]*(\{key\}[^{}]*)?$")]


# How a page of a collection leads to the next: a page number, an offset, a cursor in the body, or the
# `Link: <...>; rel="next"` header (RFC 8288).
PagingStyle = Literal["page", "offset", "cursor", "link"]


class RestResource(_Frozen):
    """A REST resource both backends serve: its collection (`list_path`), one record's path (`item_path`),
    the field holding a record's id, and how a record with a given id is created (`create`). The copy
    (`cutover backfill`) and verification page the collection (`paging`: page numbers from `first_page`,
    offsets, the cursor a body carries in `next_field`, or the `Link` header's `rel="next"`); repair and
    the worker's replay read and write single records."""

    name: Identifier
    list_path: Annotated[str, Field(pattern=r"^/")]
    id_field: str = Field(default="id", min_length=1)
    # Where the records are in a page's body (a dotted path for nested fields); a body that is itself a
    # JSON array is the page's records (json-server).
    items_field: str = Field(default="items", min_length=1)
    # None: `cursor` when `next_field` is set, else `page`.
    paging: PagingStyle | None = None
    page_param: str = Field(default="page", min_length=1)
    first_page: int = Field(default=1, ge=0)
    offset_param: str = Field(default="offset", min_length=1)
    size_param: str = Field(default="limit", min_length=1)
    page_size: int = Field(default=500, ge=1, le=100_000)
    next_field: str | None = None  # body field (dotted) with the next page's cursor (null/absent at the end)
    cursor_param: str = Field(default="cursor", min_length=1)
    # A response header with the collection's size (json-server's X-Total-Count): progress and ETA of the
    # copy; page and offset paging also stop there.
    total_header: str | None = "X-Total-Count"
    ignore_fields: list[str] = Field(default_factory=list)  # per-side noise, e.g. served_at
    tenant_query: str | None = None  # also pass the tenant as this query parameter (besides the header)
    max_pages: int = Field(default=100_000, ge=1)
    # One record's path (one `{key}` segment, the record's id): `verify --repair` reads the record there on
    # the authoritative side and PUTs or DELETEs it on the other; a resource without it is not repaired.
    # Pending writes to it defer a difference (without it: writes to `<list_path>/{key}`).
    item_path: Annotated[str, Field(pattern=r"^/[^{}]*\{key\}[^{}]*$")] | None = None
    # How a backend is given a record it lacks, with the id the authoritative side holds: `put` to the
    # record's path (an upsert), `post` to the collection with the id in the body (json-server and
    # services whose PUT only replaces), or a request of its own (`{method: PUT, path: /v2/items/{key}}`).
    # The copy creates every record this way; the worker when it settles an intent.
    create: Literal["put", "post"] | CreateRequest = "put"
    # Page, offset and link paging count positions: a delete before the next page moves its first
    # record onto a page listed already. Before it takes a page, the lister checks that the record it
    # listed last still sits where the page begins, and reads back to a page that overlaps what it
    # listed when not (`backfill.rest_pages`). None: on for those paging styles; cursors do not shift.
    check_boundaries: bool | None = None
    # After its last page the copy lists the collection again, up to 3 times until a pass finds nothing:
    # for orders in which an update moves a record to an earlier page (a sort by a field clients write),
    # which the boundary check does not see. Off by default.
    sweep: bool = False

    @model_validator(mode="after")
    def _paging_complete(self) -> RestResource:
        if self.paging == "cursor" and self.next_field is None:
            raise ValueError("paging: cursor needs next_field (the body field holding the next cursor)")
        return self

    @property
    def paging_style(self) -> PagingStyle:
        if self.paging is not None:
            return self.paging
        return "cursor" if self.next_field is not None else "page"

    @property
    def sweeps(self) -> bool:
        return self.sweep

    @property
    def positional(self) -> bool:
        """Pages are positions in the collection's order: a delete shifts the records after it."""
        return self.paging_style != "cursor"

    @property
    def checks_boundaries(self) -> bool:
        return self.positional if self.check_boundaries is None else self.check_boundaries and self.positional

    @property
    def record_path(self) -> str:
        """The path pattern of one record, as writes to it are seen."""
        return self.item_path or self.collection_path.rstrip("/") + "/{key}"

    @property
    def collection_path(self) -> str:
        """`list_path` without its query string: where creates are POSTed."""
        return self.list_path.partition("?")[0]

    def create_call(self, key: str) -> tuple[str, str]:
        """The method and path that create the record `key` (one percent-encoded segment) with its id."""
        if isinstance(self.create, CreateRequest):
            return self.create.method, self.create.path.replace("{key}", key)
        if self.create == "post":
            return "POST", self.collection_path
        return "PUT", self.record_path.replace("{key}", key)

    @property
    def create_only(self) -> bool:
        """Whether the create refuses a record that exists (a POST), rather than replacing it (a PUT)."""
        return self.create_call("k")[0] == "POST"


class RestCopySettings(_Frozen):
    """The copy of REST resources (`cutover backfill`)."""

    concurrency: int = Field(default=8, ge=1, le=256)  # record writes in flight (`--parallel` overrides)
    # How long the copy's claim on a page's records holds: a mirrored write of a claimed record waits for
    # the copy to write it (or for the claim to lapse, if the copy died). The copy sends no write of a
    # claim with less than a third of this left.
    claim_ttl_s: float = Field(default=30.0, ge=1.0, le=3600.0)


class RestVerifySettings(_Frozen):
    resources: list[RestResource] = Field(default_factory=list)
    timeout_s: float = Field(default=30.0, gt=0)
    concurrency: int = Field(default=4, ge=1, le=64)
    copy_: RestCopySettings = Field(default=RestCopySettings(), alias="copy")

    def resource(self, name: str) -> RestResource:
        for resource in self.resources:
            if resource.name == name:
                return resource
        known = ", ".join(r.name for r in self.resources) or "none"
        raise KeyError(f"no resource {name!r} in data.rest.resources (configured: {known})")


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
