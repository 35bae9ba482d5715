"""Settings of SQL-aware routing: which endpoints carry SQL, and what the migration covers.

The dialect each side speaks is a property of that backend (`backends.old.sql_dialect`,
`backends.new.sql_dialect`, typed `SqlDialect` here); everything else lives under `sql:`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:
    from routing.sql import SqlAnalyzer

# The dialects whose parameter styles and rewrites are implemented and tested.
SqlDialect = Literal["mysql", "postgres"]
_IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_$]*$"
_TABLE = r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*){0,2}$"


_Identifier = Annotated[str, Field(pattern=_IDENTIFIER)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SqlEndpoint(_Frozen):
    """A data-API endpoint whose JSON body carries SQL: `{"sql": "...", "params": [...]}`.

    `sql_field` holds one text (one or more `;`-separated statements) or a list of texts; `params_field`
    holds the parameters: a list (positional) or an object (named) for one text, a list of those for a
    list of texts. A request to this path and method is routed by what its SQL does, not by its method.
    """

    path: Annotated[str, Field(pattern=r"^/")]
    method: str = "POST"
    sql_field: str = Field(default="sql", min_length=1)
    params_field: str = Field(default="params", min_length=1)

    @field_validator("method")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()


class SqlSettings(_Frozen):
    endpoints: list[SqlEndpoint] = Field(default_factory=list)
    # Tables the migration moves to new (`table` or `schema.table`, compared case-insensitively and as
    # written: `public.orders` and `orders` are different names). Statements touching none stay on old.
    covered_tables: list[Annotated[str, Field(pattern=_TABLE)]] = Field(default_factory=list)
    # Columns that hold the tenant id, in every table not in `tenant_columns`: `WHERE tenant_id = 'acme'`
    # (or `= $1`) names the request's tenant. One name or a list (`[tenant_id, w_id]`).
    tenant_column: _Identifier | Annotated[list[_Identifier], Field(min_length=1)] = "tenant_id"
    # Per table, the column (or columns) holding its tenant id, when it differs: {district: d_w_id}.
    tenant_columns: dict[
        Annotated[str, Field(pattern=_TABLE)], _Identifier | Annotated[list[_Identifier], Field(min_length=1)]
    ] = Field(default_factory=dict)
    # Key columns per table, for the keys of single-row writes and for rewriting MySQL's ON DUPLICATE KEY
    # UPDATE into PostgreSQL's ON CONFLICT (<key>) (refused for tables not listed). Others use `id`.
    primary_keys: dict[
        Annotated[str, Field(pattern=_TABLE)], list[Annotated[str, Field(pattern=_IDENTIFIER)]]
    ] = Field(default_factory=dict)
    max_text_chars: int = Field(default=65_536, ge=1)  # over all SQL texts of one request
    max_statements: int = Field(default=32, ge=1)  # over all SQL texts of one request
    cache_size: int = Field(default=4096, ge=1)  # parsed statements kept, per proxy process

    def analyzer(self) -> SqlAnalyzer:
        """The statement analyzer these settings describe: the proxy's router and the worker's SQL applier
        must classify a statement alike."""
        # Imported here: every command loads the settings, only the processes that handle SQL need sqlglot.
        from routing.sql import SqlAnalyzer, SqlLimits
        from routing.sql_classify import Rules

        return SqlAnalyzer(
            Rules(
                tenant_columns=_names(self.tenant_column),
                table_tenant_columns={table: _names(names) for table, names in self.tenant_columns.items()},
                primary_keys={table: tuple(columns) for table, columns in self.primary_keys.items()},
            ),
            SqlLimits(max_text_chars=self.max_text_chars, max_statements=self.max_statements),
            cache_size=self.cache_size,
        )

    @field_validator("covered_tables")
    @classmethod
    def _lower(cls, value: list[str]) -> list[str]:
        return [name.lower() for name in value]

    @field_validator("primary_keys")
    @classmethod
    def _lower_keys(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        return {table.lower(): [column.lower() for column in columns] for table, columns in value.items()}

    @field_validator("tenant_columns")
    @classmethod
    def _lower_tables(cls, value: dict[str, str | list[str]]) -> dict[str, str | list[str]]:
        return {table.lower(): names for table, names in value.items()}

    def check_dialects(self, old: str | None, new: str | None) -> None:
        """SQL endpoints need both sides' dialects (called by `Settings`, which sees the backends)."""
        if not self.endpoints:
            return
        missing = [
            f"backends.{side}.sql_dialect" for side, value in (("old", old), ("new", new)) if not value
        ]
        if missing:
            raise ValueError(f"sql.endpoints are configured, so {' and '.join(missing)} must be set")


def _names(value: str | list[str]) -> tuple[str, ...]:
    """One column name or a list of them, in lower case (SQL compares unquoted names that way)."""
    return tuple(name.lower() for name in ([value] if isinstance(value, str) else value))
