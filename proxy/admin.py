"""Admin API (its own port): tenants and their phases, audit, divergences, health. JSON, OpenAPI at /docs.

Errors share the data plane's shape: `{"error": code, "detail": text, ...}`, an unhandled exception too
(`proxy.unexpected`: 500 `internal_error` with the request id of the logged traceback).
"""

from __future__ import annotations

from typing import Annotated, Any

import asyncpg
from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from redis.exceptions import RedisError

from proxy.admin_auth import Principal, TokenAuthenticator
from proxy.barrier import BarrierAbortedError
from proxy.divergences import list_divergences
from proxy.metrics_api import register_metrics
from proxy.phase_moves import ApplierMissingError, move_phase
from proxy.phase_store import VersionConflictError
from proxy.readiness import Readiness, readiness
from proxy.runtime import Runtime
from proxy.seen_tenants import list_seen_only
from proxy.status_page import create_status_router
from proxy.unexpected import CatchUnexpected
from routing.phases import Phase, PhaseMoveError
from routing.tenant import InvalidTenantError, validate_tenant

_STORE_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)
_BUFFER_ERRORS = (RedisError,)


class AdminError(Exception):
    def __init__(self, status: int, code: str, detail: str, **fields: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.fields = fields

    def response(self) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return JSONResponse(
            {"error": self.code, "detail": self.detail, **self.fields},
            status_code=self.status,
            headers=headers,
        )


class PhaseChange(BaseModel):
    phase: Phase
    reason: str = Field(min_length=1, max_length=2000)
    expected_version: int | None = Field(default=None, ge=0)
    force: bool = False


def _principal(request: Request, authorization: Annotated[str | None, Header()] = None) -> Principal:
    authenticator: TokenAuthenticator = request.app.state.authenticator
    found = authenticator.authenticate(authorization)
    if found is None:
        raise AdminError(401, "unauthorized", "a valid 'Authorization: Bearer <token>' header is required")
    return found


def _writer(who: Annotated[Principal, Depends(_principal)]) -> Principal:
    if not who.can_write():
        raise AdminError(403, "forbidden", f"token {who.name!r} has read scope; this needs write scope")
    return who


def _tenant_id(tenant: str) -> str:
    try:
        return validate_tenant(tenant)
    except InvalidTenantError as exc:
        raise AdminError(400, "invalid_tenant", str(exc)) from None


def _tenant_filter(tenant: Annotated[str | None, Query(max_length=128)] = None) -> str | None:
    return None if tenant is None else _tenant_id(tenant)


Reader = Annotated[Principal, Depends(_principal)]
TenantFilter = Annotated[str | None, Depends(_tenant_filter)]
Writer = Annotated[Principal, Depends(_writer)]
Tenant = Annotated[str, Depends(_tenant_id)]


def create_admin_app(runtime: Runtime) -> FastAPI:
    from proxy.verify_admin import register_verify_routes, require_verified  # it imports this module

    store = runtime.store
    app = FastAPI(title="cutover admin", version="0.1.0")
    app.state.authenticator = TokenAuthenticator(runtime.settings.admin.tokens)

    @app.exception_handler(AdminError)
    async def _admin_error(_request: Request, exc: AdminError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"field": ".".join(str(p) for p in e["loc"] if p != "body"), "problem": e["msg"]}
            for e in exc.errors()
        ]
        return AdminError(
            422, "invalid_request", "the request body or parameters are invalid", problems=problems
        ).response()

    async def _store_error(_request: Request, exc: Exception) -> JSONResponse:
        detail = f"the phase store is unavailable ({type(exc).__name__})"
        return AdminError(503, "store_unavailable", detail).response()

    for error_type in _STORE_ERRORS:
        app.add_exception_handler(error_type, _store_error)

    async def _buffer_error(_request: Request, exc: Exception) -> JSONResponse:
        detail = f"the intent buffer (Redis) is unavailable ({type(exc).__name__})"
        return AdminError(503, "buffer_unavailable", detail).response()

    for error_type in _BUFFER_ERRORS:
        app.add_exception_handler(error_type, _buffer_error)

    app.include_router(create_status_router(runtime))

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
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

    @app.get("/tenants")
    async def tenants(_who: Reader) -> dict[str, Any]:
        rows = await store.list_all()
        return {
            "default_phase": store.default_phase.value,
            "tenants": [row.as_json() for row in rows],
            # Tenants seen in traffic without a phase row: they follow default_phase.
            "seen_in_traffic": await list_seen_only(store.pool),
        }

    @app.get("/tenants/{tenant}")
    async def tenant(tenant: Tenant, _who: Reader) -> dict[str, Any]:
        return (await store.get(tenant)).as_json()

    @app.put("/tenants/{tenant}/phase")
    async def set_phase(tenant: Tenant, change: PhaseChange, who: Writer) -> dict[str, Any]:
        current = (await store.get(tenant)).phase
        if change.phase is Phase.COMPLETE and not change.force:
            await require_verified(runtime, tenant)  # the data half: see proxy/verify_admin.py
        if change.phase.rank > max(current.rank, Phase.DUAL_WRITE.rank) and not change.force:
            dead = await runtime.inspector.dead_letter_count(tenant)
            if dead:
                raise AdminError(
                    422,
                    "dead_letters",
                    f"tenant {tenant!r} has {dead} dead-lettered intents; inspect or re-drive them"
                    " before moving past dual_write (or use force)",
                    dead_letters=dead,
                )
        try:
            updated = await move_phase(
                store,
                runtime.cache,
                tenant,
                change.phase,
                actor=who.name,
                reason=change.reason,
                expected_version=change.expected_version,
                force=change.force,
                hold_timeout_s=runtime.settings.barrier.hold_timeout_s,
                pending_toward=runtime.inspector.pending,
                missing_applier=runtime.settings.worker.missing_for,
            )
        except ApplierMissingError as exc:
            raise AdminError(
                422, "applier_not_configured", str(exc), setting=exc.setting, side=exc.side.value
            ) from None
        except BarrierAbortedError as exc:
            raise AdminError(409, "barrier_aborted", str(exc), reason=exc.reason) from None
        except VersionConflictError as exc:
            raise AdminError(409, "version_conflict", str(exc), current_version=exc.actual) from None
        except PhaseMoveError as exc:
            raise AdminError(
                422,
                "phase_move_not_allowed",
                str(exc),
                current=exc.current.value,
                allowed=[p.value for p in exc.allowed],
            ) from None
        return updated.as_json()

    @app.get("/audit")
    async def audit(
        _who: Reader, tenant: TenantFilter, limit: Annotated[int, Query(ge=1, le=1000)] = 100
    ) -> dict[str, Any]:
        return {"entries": [entry.as_json() for entry in await store.audit(tenant, limit=limit)]}

    @app.get("/tenants/{tenant}/divergences")
    async def divergences(
        tenant: Tenant, _who: Reader, limit: Annotated[int, Query(ge=1, le=500)] = 50
    ) -> dict[str, Any]:
        return {"tenant": tenant, "divergences": await list_divergences(runtime.pool, tenant, limit=limit)}

    @app.get("/buffer")
    async def buffer(_who: Reader) -> dict[str, Any]:
        report = await runtime.inspector.report()
        report["spool"] = runtime.sink.status()
        return report

    @app.get("/buffer/dead-letters")
    async def dead_letters(
        _who: Reader, tenant: TenantFilter, limit: Annotated[int, Query(ge=1, le=1000)] = 100
    ) -> dict[str, Any]:
        return {"dead_letters": await runtime.inspector.dead_letters(tenant, limit=limit)}

    @app.post("/buffer/dead-letters/{tenant}/redrive")
    async def redrive(tenant: Tenant, _who: Writer) -> dict[str, Any]:
        count = await runtime.inspector.request_redrive(tenant)
        return {"tenant": tenant, "requested": count}

    register_metrics(app, runtime)
    register_verify_routes(app, runtime)
    from proxy.divergence.admin import register_divergence_routes  # imported here: it imports this module

    register_divergence_routes(app, runtime)
    app.add_middleware(CatchUnexpected)  # inside the framework's own error middleware: no plain-text 500
    return app
