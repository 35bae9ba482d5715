"""Admin API of the data half: stored verification reports (the `complete` gate that reads them is the
phase mover's: `proxy.control.phase_moves`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, Path, Query

from backfill.report import get_report, list_reports
from proxy.admin.errors import AdminError
from proxy.admin.guard import Reader
from proxy.admin.params import ROW_ID_SCHEMA, PgText, Tenant, row_id_or_404
from proxy.runtime import Runtime


def register_verify_routes(app: FastAPI, runtime: Runtime) -> None:
    @app.get("/tenants/{tenant}/verify-reports")
    async def verify_reports(
        tenant: Tenant,
        _who: Reader,
        table: Annotated[PgText | None, Query(max_length=63)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> dict[str, Any]:
        async with runtime.pool.acquire() as conn:
            reports = await list_reports(conn, tenant, table=table, limit=limit)
        return {"tenant": tenant, "reports": reports}

    @app.get("/verify-reports/{report_id}", responses={404: {"description": "no such report"}})
    async def verify_report(
        report_id: Annotated[int, Path(json_schema_extra=ROW_ID_SCHEMA)], _who: Reader
    ) -> dict[str, Any]:
        row_id_or_404(report_id, "verification report")
        async with runtime.pool.acquire() as conn:
            report = await get_report(conn, report_id)
        if report is None:
            raise AdminError(404, "not_found", f"no verification report {report_id}")
        return report
