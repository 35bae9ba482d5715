"""Admin routes of the divergence engine (registered by `proxy.admin.app.create_admin_app`).

GET    /divergence/report?tenant=&top=      counts per tenant and resource, top fields with example ids
DELETE /tenants/{tenant}/divergence-counters   forget a tenant's counters (write scope)
GET    /tenants/{tenant}/divergences/{id}   one divergence, both bodies side by side
GET    /divergence/policy                   the policy in force in this process
POST   /divergence/reload                   re-read divergence.policy_file here (as SIGHUP does)
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Path, Query

from proxy.admin.errors import AdminError
from proxy.admin.guard import Reader, Writer
from proxy.admin.params import ROW_ID_SCHEMA, Tenant, TenantFilter, row_id_or_404
from proxy.runtime import Runtime
from proxy.shadow.divergences import get_divergence
from proxy.shadow.report import reset_counters, side_by_side, tenant_report
from proxy.shadow.runner import PolicyReloadError


def register_divergence_routes(app: FastAPI, runtime: Runtime) -> None:
    router = APIRouter(tags=["divergence"])

    @router.get("/divergence/report")
    async def report(
        _who: Reader,
        tenant: TenantFilter,
        top: Annotated[int, Query(ge=1, le=100)] = 10,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        return {"tenants": await tenant_report(runtime.pool, tenant, top=top, limit=limit)}

    @router.delete("/tenants/{tenant}/divergence-counters")
    async def reset(tenant: Tenant, _who: Writer) -> dict[str, Any]:
        return {"tenant": tenant, "resources_reset": await reset_counters(runtime.pool, tenant)}

    @router.get(
        "/tenants/{tenant}/divergences/{divergence_id}",
        responses={404: {"description": "no such divergence"}},
    )
    async def one(
        tenant: Tenant,
        divergence_id: Annotated[int, Path(json_schema_extra=ROW_ID_SCHEMA)],
        _who: Reader,
    ) -> dict[str, Any]:
        row_id_or_404(divergence_id, "divergence")
        found = await get_divergence(runtime.pool, tenant, divergence_id)
        if found is None:
            raise AdminError(404, "not_found", f"no divergence {divergence_id} of tenant {tenant!r}")
        found["side_by_side"] = side_by_side(found["serving_body"], found["shadow_body"])
        return found

    @router.get("/divergence/policy")
    async def policy(_who: Reader) -> dict[str, Any]:
        return runtime.shadow.policy.model_dump(mode="json")

    @router.post("/divergence/reload", responses={422: {"description": "`policy_invalid`, with `problems`"}})
    async def reload(_who: Writer) -> dict[str, Any]:
        try:
            return runtime.shadow.reload_policy()
        except PolicyReloadError as exc:
            raise AdminError(422, "policy_invalid", str(exc), problems=exc.problems) from None

    app.include_router(router)
