"""Parameter types shared by the admin routes, each checked against where its value goes.

- `Tenant` / `TenantFilter`: `routing.tenant`'s check, the data plane's own (400 `invalid_tenant`); the
  schema carries the same pattern.
- `PgText`: free text bound for a PostgreSQL `text` column, which cannot hold NUL (422, not a store
  error).
- Row ids (`row_id_or_404`): ids are `bigserial`, 1 to 2^63-1; an id outside cannot name a row (404),
  and must not reach asyncpg, which cannot encode it.
- Page cursors (`TenantCursor`, `DeadLetterCursor`; id cursors are bounded ints in the routes): checked
  like the values they stand for, so a cursor never reaches a store it would make fail.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Query
from pydantic import AfterValidator, Field, StrictStr

from proxy.admin.errors import AdminError
from proxy.admin.pages import AFTER_HELP
from routing.tenant import TENANT_PATTERN, InvalidTenantError, validate_tenant

PG_BIGINT_MAX = 2**63 - 1
NO_NUL_PATTERN = "^[^\\u0000]*$"  # ECMA-262, for the schema
_TENANT_SCHEMA = {"pattern": TENANT_PATTERN}
_TENANT_HELP = "1-128 characters of [A-Za-z0-9._:-], other than '.' and '..'"
ROW_ID_SCHEMA = {"minimum": 1, "maximum": PG_BIGINT_MAX}


def _tenant_id(
    tenant: Annotated[str, Path(description=_TENANT_HELP, json_schema_extra=_TENANT_SCHEMA)],
) -> str:
    return checked_tenant(tenant)


def _tenant_filter(
    tenant: Annotated[
        str | None, Query(description=f"only this tenant ({_TENANT_HELP})", json_schema_extra=_TENANT_SCHEMA)
    ] = None,
) -> str | None:
    return None if tenant is None else checked_tenant(tenant)


def checked_tenant(value: str) -> str:
    try:
        return validate_tenant(value)
    except InvalidTenantError as exc:
        raise AdminError(400, "invalid_tenant", str(exc)) from None


Tenant = Annotated[str, Depends(_tenant_id)]
TenantFilter = Annotated[str | None, Depends(_tenant_filter)]


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL (\\u0000): PostgreSQL text cannot hold it")
    return value


PgText = Annotated[StrictStr, AfterValidator(_no_nul), Field(json_schema_extra={"pattern": NO_NUL_PATTERN})]


def row_id_or_404(value: int, what: str) -> int:
    """`value` if a `bigserial` id can have it, else AdminError 404 naming `what`."""
    if not 1 <= value <= PG_BIGINT_MAX:
        raise AdminError(404, "not_found", f"no {what} {value}: ids run from 1 to {PG_BIGINT_MAX}")
    return value


# A dead letter's `cursor`: its stream entry id (`<ms>-<seq>`) and partition. 19 digits: every value
# fits the 64-bit parts Redis accepts.
DeadLetterCursor = Annotated[
    str | None,
    Query(
        pattern="^[0-9]{1,19}-[0-9]{1,19}:[0-9]{1,9}$",
        description=f"{AFTER_HELP} (a dead letter's `cursor`)",
    ),
]
# The `next` of a page of tenants: a tenant id (400 `invalid_tenant` otherwise, as everywhere).
TenantCursor = Annotated[
    str | None, Query(description=f"{AFTER_HELP} (a tenant id)", json_schema_extra=_TENANT_SCHEMA)
]
