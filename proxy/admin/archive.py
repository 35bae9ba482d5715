"""Admin routes of archived tenants (`proxy.control.tenant_archive`):

    POST /tenants/{tenant}/archive     write scope; {"reason"}; 404 `unknown_tenant` for a tenant no
                                       phase row or traffic knows (a typo archives nothing)
    POST /tenants/{tenant}/unarchive   write scope; {"reason"}
    GET  /archive/{tenant}             read scope; whether it is archived, and its archive audit
    GET  /archive                      read scope; archived tenants, a page at a time

Archiving twice (or unarchiving a tenant that is not archived) is not an error: it answers
`"changed": false` and audits nothing, so a clean-up can simply be run again.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, Query
from pydantic import BaseModel, ConfigDict, Field

from proxy.admin.errors import AdminError
from proxy.admin.guard import Reader, Writer
from proxy.admin.limits import TENANTS_PAGE_MAX
from proxy.admin.pages import LIMIT_HELP, page_of, page_schema
from proxy.admin.params import PgText, Tenant, TenantCursor, checked_tenant
from proxy.control.tenant_archive import archive_audit, archived, is_known, list_archived, set_archived
from proxy.runtime import Runtime

_UNKNOWN: dict[int | str, dict[str, Any]] = {
    404: {"description": "`unknown_tenant`: neither a phase row nor seen in traffic"}
}


class ArchiveChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: PgText = Field(min_length=1, max_length=2000)


def register_archive_routes(app: FastAPI, runtime: Runtime) -> None:
    pool = runtime.store.pool

    async def known_or_404(tenant: str) -> None:
        if not await is_known(pool, tenant):
            raise AdminError(
                404,
                "unknown_tenant",
                f"tenant {tenant!r} has no phase row and was never seen in traffic: nothing to archive",
            )

    @app.post("/tenants/{tenant}/archive", responses=_UNKNOWN)
    async def archive(tenant: Tenant, change: ArchiveChange, who: Writer) -> dict[str, Any]:
        """Hide a tenant from listings, fleet selection and the status page; its phase is frozen until it
        is unarchived. Nothing is deleted."""
        await known_or_404(tenant)
        changed, audit_id = await set_archived(
            pool, tenant, archive=True, actor=who.name, reason=change.reason
        )
        entry = await archived(pool, tenant)
        return {"tenant": tenant, "archived": entry, "changed": changed, "audit_id": audit_id}

    @app.post("/tenants/{tenant}/unarchive", responses=_UNKNOWN)
    async def unarchive(tenant: Tenant, change: ArchiveChange, who: Writer) -> dict[str, Any]:
        await known_or_404(tenant)
        changed, audit_id = await set_archived(
            pool, tenant, archive=False, actor=who.name, reason=change.reason
        )
        return {"tenant": tenant, "archived": None, "changed": changed, "audit_id": audit_id}

    @app.get("/archive/{tenant}")
    async def archive_state(
        tenant: Tenant,
        _who: Reader,
        limit: Annotated[int, Query(ge=1, le=1000, description="audit entries, newest first")] = 20,
    ) -> dict[str, Any]:
        """Whether the tenant is archived (by whom, when, why: null when not), and who archived or
        unarchived it, newest first."""
        return {
            "tenant": tenant,
            "archived": await archived(pool, tenant),
            "audit": await archive_audit(pool, tenant, limit=limit),
        }

    @app.get("/archive", responses={**page_schema("tenants"), 400: {"description": "`invalid_tenant`"}})
    async def archive_list(
        _who: Reader,
        limit: Annotated[int, Query(ge=1, le=TENANTS_PAGE_MAX, description=LIMIT_HELP)] = 1000,
        after: TenantCursor = None,
    ) -> dict[str, Any]:
        """Archived tenants in tenant order."""
        rows = await list_archived(
            pool, after=None if after is None else checked_tenant(after), limit=limit + 1
        )
        tenants, next_tenant = page_of(rows, limit, key=lambda row: str(row["tenant"]))
        return {"tenants": tenants, "next": next_tenant}
