"""Admin API (its own port): tenants and their phases, audit, divergences, health. JSON, OpenAPI at /docs
(served offline: `proxy.admin.docs`).

Errors share the data plane's shape: `{"error": code, "detail": text, ...}`, an unhandled exception too
(`proxy.dataplane.unexpected`: 500 `internal_error` with the request id of the logged traceback).

Shared plumbing lives below this module: errors and their shape (`proxy.admin.errors`), who may call what,
checked before a request is read (`proxy.admin.guard`), parameter types (`proxy.admin.params`), pages of
lists (`proxy.admin.pages`) and the OpenAPI document (`proxy.admin.openapi`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from proxy.admin.access_log import AdminAccessLog
from proxy.admin.archive import register_archive_routes
from proxy.admin.auth import TokenAuthenticator
from proxy.admin.copy import register_copy_routes
from proxy.admin.dead_letters import register_dead_letter_routes
from proxy.admin.divergence import register_divergence_routes
from proxy.admin.docs import admin_app
from proxy.admin.errors import AdminError, install_error_handlers
from proxy.admin.guard import AdminGuard, Reader, Writer
from proxy.admin.health import register_health_routes
from proxy.admin.limits import AUDIT_PAGE_MAX, DIVERGENCES_PAGE_MAX, TENANTS_PAGE_MAX
from proxy.admin.metrics_api import register_metrics
from proxy.admin.openapi import install_openapi
from proxy.admin.pages import AFTER_HELP, LIMIT_HELP, PageResponse, page_of, page_schema
from proxy.admin.params import (
    PG_BIGINT_MAX,
    PgText,
    Tenant,
    TenantCursor,
    TenantFilter,
    checked_tenant,
)
from proxy.admin.readiness import Readiness, readiness
from proxy.admin.status_page import create_status_router
from proxy.admin.tenant_listing import list_tenants
from proxy.admin.verify import register_verify_routes
from proxy.control.phase_moves import MoveRefused, MoveRequest
from proxy.dataplane.unexpected import CatchUnexpected
from proxy.runtime import Runtime
from proxy.shadow.divergences import list_divergences
from routing.phases import Phase

__all__ = ["AdminError", "Reader", "Tenant", "TenantFilter", "Writer", "create_admin_app"]


PHASE_CHANGE_ERRORS: dict[int | str, dict[str, Any]] = {
    409: {
        "description": "`version_conflict` (not at `expected_version`), `barrier_aborted`, or"
        " `tenant_archived` (unarchive it first)"
    },
    422: {
        "description": "an invalid body (`invalid_request`), or a move the rules refuse: "
        "`phase_move_not_allowed` (with `allowed`), `dead_letters`, `verify_required`, "
        "`copy_unfinished` (with `resources`), "
        "`applier_not_configured` (with `setting` and `side`)"
    },
}


class PhaseChange(BaseModel):
    # Strict: `"force": "yes"` or `"expected_version": 1.0` is a mistake to refuse, not to coerce, and
    # an unknown key (`"froce": true`) is refused rather than ignored.
    model_config = ConfigDict(extra="forbid")

    phase: Phase
    reason: PgText = Field(min_length=1, max_length=2000)
    expected_version: StrictInt | None = Field(default=None, ge=0, le=PG_BIGINT_MAX)
    force: StrictBool = False
    # Every check, no move: 200 with what would move, or the error the move would get (fleet plans).
    dry_run: StrictBool = False


def create_admin_app(runtime: Runtime) -> FastAPI:
    store = runtime.store
    app = admin_app(title="cutover admin", version="0.1.0")  # /docs and /redoc without a CDN
    app.state.authenticator = TokenAuthenticator(runtime.settings.admin.tokens)

    install_error_handlers(app)
    # Checks every request's token against its route before any route reads the request.
    app.add_middleware(AdminGuard, routes=app.router.routes, authenticator=app.state.authenticator)
    install_openapi(app)

    app.include_router(create_status_router(runtime))

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", responses={503: {"description": "phases not loaded yet (the same body)"}})
    async def readyz() -> JSONResponse:
        cache = runtime.cache
        buffer = runtime.sink.status()
        refusal = runtime.sink.refusal()
        status = readiness(cache, runtime.sink)  # the rule `cutover_ready` reports too
        body: dict[str, Any] = {
            "status": status,
            "phases_loaded": cache.loaded,
            "phase_store_connected": cache.connected,
            "phase_cache_stale_s": cache.staleness_s(),
            "phase_store_error": cache.last_error,
            "tenants_cached": len(cache.snapshot()),
            "shadow_in_flight": runtime.shadow.in_flight,
            "buffer": buffer,
            "buffer_refusal": None if refusal is None else {"error": refusal.code, "detail": refusal.detail},
        }
        return JSONResponse(body, status_code=503 if status is Readiness.NOT_READY else 200)

    @app.get("/stats")
    async def stats(_who: Reader) -> dict[str, Any]:
        return runtime.stats.as_json()

    @app.get(
        "/tenants",
        responses={
            **page_schema("tenants"),
            400: {"description": "`after` is not a tenant id (`invalid_tenant`)"},
        },
    )
    async def tenants(
        _who: Reader,
        limit: Annotated[int, Query(ge=1, le=TENANTS_PAGE_MAX, description=LIMIT_HELP)] = 1000,
        after: TenantCursor = None,
    ) -> PageResponse:
        """Known tenants in id order: those with a phase row (`tenants`) and those only seen in traffic
        (`seen_in_traffic`, following `default_phase`), one page of both together."""
        listing = await list_tenants(
            store.pool, after=None if after is None else checked_tenant(after), limit=limit
        )
        return PageResponse({"default_phase": store.default_phase.value, **listing})

    @app.get("/tenants/{tenant}")
    async def tenant(tenant: Tenant, _who: Reader) -> dict[str, Any]:
        return (await store.get(tenant)).as_json()

    @app.put("/tenants/{tenant}/phase", responses=PHASE_CHANGE_ERRORS)
    async def set_phase(tenant: Tenant, change: PhaseChange, who: Writer) -> dict[str, Any]:
        """Every guard is the mover's (`proxy.control.phase_moves`), the same for the automatic rollback."""
        request = MoveRequest(
            tenant,
            change.phase,
            actor=who.name,
            reason=change.reason,
            expected_version=change.expected_version,
            force=change.force,
            dry_run=change.dry_run,
        )
        try:
            row = await runtime.mover.move(request)
        except MoveRefused as exc:
            raise AdminError(exc.status, exc.code, exc.detail, **exc.fields) from None
        if change.dry_run:
            return {**row.as_json(), "to": change.phase.value, "dry_run": True}
        return row.as_json()

    @app.get("/audit", responses=page_schema("entries"))
    async def audit(
        _who: Reader,
        tenant: TenantFilter,
        limit: Annotated[int, Query(ge=1, le=AUDIT_PAGE_MAX, description=LIMIT_HELP)] = 100,
        after: Annotated[
            int | None, Query(ge=1, le=PG_BIGINT_MAX, description=f"{AFTER_HELP} (an entry id)")
        ] = None,
    ) -> PageResponse:
        """Phase changes, newest first."""
        rows = await store.audit(tenant, limit=limit + 1, before_id=after)
        entries, next_id = page_of(rows, limit, key=lambda entry: entry.id)
        return PageResponse({"entries": [entry.as_json() for entry in entries], "next": next_id})

    @app.get("/tenants/{tenant}/divergences", responses=page_schema("divergences"))
    async def divergences(
        tenant: Tenant,
        _who: Reader,
        limit: Annotated[int, Query(ge=1, le=DIVERGENCES_PAGE_MAX, description=LIMIT_HELP)] = 50,
        after: Annotated[
            int | None, Query(ge=1, le=PG_BIGINT_MAX, description=f"{AFTER_HELP} (a divergence id)")
        ] = None,
    ) -> PageResponse:
        """Stored divergences of a tenant, newest first."""
        rows = await list_divergences(runtime.pool, tenant, limit=limit + 1, before_id=after)
        found, next_id = page_of(rows, limit, key=lambda row: int(row["id"]))
        return PageResponse({"tenant": tenant, "divergences": found, "next": next_id})

    @app.get("/buffer")
    async def buffer(_who: Reader) -> dict[str, Any]:
        report = await runtime.inspector.report()
        report["spool"] = runtime.sink.status()
        return report

    register_metrics(app, runtime)
    register_verify_routes(app, runtime)
    register_copy_routes(app, runtime)
    register_dead_letter_routes(app, runtime)
    register_divergence_routes(app, runtime)
    register_health_routes(app, runtime)
    register_archive_routes(app, runtime)
    app.add_middleware(CatchUnexpected)  # inside the framework's own error middleware: no plain-text 500
    if runtime.settings.access_log:
        app.add_middleware(AdminAccessLog)  # outermost: every answer is logged, a guard's 401 too
    return app
