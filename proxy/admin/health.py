"""Admin route of the tenant health view (registered by `proxy.admin.app.create_admin_app`).

GET /tenants/{tenant}/health?window_s=&step_s=   one tenant's health (`proxy.admin.tenant_health`), read scope
"""

# No `from __future__ import annotations`: the route's parameter bounds come from the settings, and
# FastAPI must see them as objects (a string annotation could not reach this function's locals).
from typing import Annotated, Any

from fastapi import FastAPI, Query

from proxy.admin.guard import Reader
from proxy.admin.params import Tenant
from proxy.admin.tenant_health import tenant_health
from proxy.runtime import Runtime

MAX_POINTS = 720  # per series: a bound on the body, whatever the step asked for


def register_health_routes(app: FastAPI, runtime: "Runtime") -> None:
    health = runtime.settings.operator.health
    # Bounds from the settings, so that the schema says exactly what is accepted.
    least_step = max(health.bucket_s, -(-health.history_s // MAX_POINTS))
    default_step = max(least_step, runtime.settings.operator.status_page.series_step_s)

    @app.get("/tenants/{tenant}/health", tags=["health"])
    async def tenant_health_route(
        tenant: Tenant,
        _who: Reader,
        window_s: Annotated[
            int,
            Query(
                ge=10,
                le=health.history_s,
                description="seconds of the traffic and shadow figures (at most operator.health.history_s)",
            ),
        ] = health.window_s,
        step_s: Annotated[
            int,
            Query(
                ge=least_step,
                le=health.history_s,
                description=f"seconds per point of `history` (a bucket or more, {MAX_POINTS} points at most)",
            ),
        ] = default_step,
    ) -> dict[str, Any]:
        """Phase and time in it, each next move with what blocks it, traffic per side (rate, errors,
        fallbacks, p50/p99), shadow divergence and new-side error rates, the buffer's backlog and dead
        letters, the last verify results, and the last hour as points: every proxy's figures."""
        return await tenant_health(runtime, tenant, window_s=window_s, step_s=step_s)
