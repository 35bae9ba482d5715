"""Admin API of the REST copy: what each copy did and what mirroring did meanwhile (`GET /tenants/{tenant}/
copy`, `GET /copy`). The `live` gate that reads them (a tenant leaves the phases that mirror to new only
once every REST resource is copied) is the phase mover's: `proxy.control.phase_moves`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, Query

from backfill.copy_status import CopyReader, CopyVerdict, copy_verdict
from proxy.admin.guard import Reader
from proxy.admin.limits import COPIES_PAGE_MAX
from proxy.admin.pages import LIMIT_HELP, PageResponse, page_of, page_schema
from proxy.admin.params import Tenant, TenantCursor, checked_tenant
from proxy.runtime import Runtime

COPY_ITEM_HELP = (
    "per resource: `status` (not_started, copying, stopped, done), records listed on old, copied to new"
    " and `items_skipped` (mirroring wrote them first), `total`, `progress`, `rate_per_s`, `eta_s`; and"
    " what the worker counted while the copy was open: `items_mirrored` (records mirroring created or"
    " changed), `intents_mirrored` (intents it applied to them), `intents_transferred` (settled from"
    " old: new lacked the record or differed), `deletes_absent` (deletes of records new did not hold"
    " yet); `stale` when the copy began before mirroring last began"
)


def _reader(runtime: Runtime) -> CopyReader:
    return CopyReader(runtime.settings, runtime.inspector.client)


def register_copy_routes(app: FastAPI, runtime: Runtime) -> None:
    @app.get("/tenants/{tenant}/copy", description=COPY_ITEM_HELP)
    async def tenant_copy(tenant: Tenant, _who: Reader) -> dict[str, Any]:
        """The tenant's REST copies: one row per configured resource (and per earlier copy of one no
        longer configured)."""
        async with runtime.pool.acquire() as conn:
            return await _reader(runtime).tenant(conn, tenant)

    @app.get(
        "/copy",
        description=COPY_ITEM_HELP,
        responses={
            **page_schema("copies"),
            400: {"description": "`after` is not a tenant id (`invalid_tenant`)"},
        },
    )
    async def copies(
        _who: Reader,
        limit: Annotated[int, Query(ge=1, le=COPIES_PAGE_MAX, description=LIMIT_HELP)] = 100,
        after: TenantCursor = None,
    ) -> PageResponse:
        """Tenants with a REST copy, in tenant order, each with its copies."""
        cursor = None if after is None else checked_tenant(after)
        async with runtime.pool.acquire() as conn:
            rows = await _reader(runtime).page(conn, after=cursor, limit=limit)
        found, next_tenant = page_of(rows, limit, key=lambda row: str(row["tenant"]))
        return PageResponse({"copies": found, "next": next_tenant})


async def copy_overview(runtime: Runtime, limit: int) -> dict[str, Any]:
    """The status page's `copies`: the first `limit` tenants with a REST copy (tenant order), each with
    its copies as `GET /tenants/{tenant}/copy` reports them, and whether more tenants follow."""
    async with runtime.pool.acquire() as conn:
        rows = await _reader(runtime).page(conn, after=None, limit=limit)
    shown, more = page_of(rows, limit, key=lambda row: str(row["tenant"]))
    return {"tenants": shown, "more": more is not None}


async def copy_verdict_of(runtime: Runtime, tenant: str) -> CopyVerdict:
    """The tenant's copy verdict (`backfill.copy_status.copy_verdict`): the gate's and the health view's."""
    async with runtime.pool.acquire() as conn:
        return await copy_verdict(_reader(runtime), conn, tenant)
