"""Errors of the admin API, all in one JSON shape: `{"error": code, "detail": text, ...}`.

    AdminError(status, code, detail, **fields)   raised by routes and dependencies; fields join the body
    ├── 401 unauthorized, 403 forbidden          the guard (`proxy.admin.guard`), before anything is read
    ├── 400 invalid_tenant                       a tenant id outside `routing.tenant.TENANT_PATTERN`
    ├── 404 not_found, 405 method_not_allowed    routing's own answers, reshaped here
    ├── 422 invalid_request                      a body or parameter that does not validate, with
    │                                            `problems: [{"field", "problem"}]`
    ├── 503 store_unavailable                    PostgreSQL unreachable or failing (`STORE_ERRORS`)
    └── 503 buffer_unavailable                   Redis unreachable or failing (RedisError)
AdminError is a `common.coded_error.CodedError`; the failure tuples are `common.store_errors`'.
Routes add their own codes (409 version_conflict, 422 phase_move_not_allowed, ...) with AdminError.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException

from common.coded_error import CodedError
from common.store_errors import STORE_ERRORS

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


class AdminError(CodedError):
    def __init__(self, status: int, code: str, detail: str, **fields: Any) -> None:
        super().__init__(detail, code=code, **fields)
        self.status = status

    def response(self, headers: Mapping[str, str] | None = None) -> JSONResponse:
        if self.status == 401:
            headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
        return JSONResponse(
            self.to_dict(),
            status_code=self.status,
            headers=headers,
        )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AdminError)
    async def _admin_error(_request: Request, exc: AdminError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {
                # A body that is not JSON at all is located at its byte offset: name the body instead.
                "field": "body"
                if e["type"] == "json_invalid"
                else ".".join(str(p) for p in e["loc"] if p != "body") or "body",
                "problem": e["msg"],
            }
            for e in exc.errors()
        ]
        return AdminError(
            422, "invalid_request", "the request body or parameters are invalid", problems=problems
        ).response()

    @app.exception_handler(HTTPException)
    async def _http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return AdminError(exc.status_code, code, str(exc.detail)).response(headers=exc.headers)

    async def _store_error(_request: Request, exc: Exception) -> JSONResponse:
        detail = f"the phase store is unavailable ({type(exc).__name__})"
        return AdminError(503, "store_unavailable", detail).response()

    for error_type in STORE_ERRORS:
        app.add_exception_handler(error_type, _store_error)

    async def _buffer_error(_request: Request, exc: Exception) -> JSONResponse:
        detail = f"the intent buffer (Redis) is unavailable ({type(exc).__name__})"
        return AdminError(503, "buffer_unavailable", detail).response()

    # RedisError alone: the socket layer's OSError and a timeout are already the store's handlers, and an
    # exception class takes one handler.
    app.add_exception_handler(RedisError, _buffer_error)
