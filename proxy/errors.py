"""Errors the data plane answers with, each in one stable JSON shape: `{"error": code, "detail": text, ...}`.

ProxyError
├── BadRequest             400  bad_request / invalid_tenant / invalid_target / sql_* (SQL endpoints)
├── PayloadTooLarge        413  body_too_large
├── Unprocessable          422  sql_refused / sql_mixed_tables / sql_ddl_refused / sql_untranspilable
├── BackendError           502 / 504  backend_unreachable / backend_timeout  (names the backend)
├── ServiceUnavailable     503  not_ready / fallback_unsafe / buffer_unavailable  (+ Retry-After)
└── MethodNotAllowed       405  (non-HTTP scopes such as websockets are not proxied)
"""

from __future__ import annotations

from typing import Any

import orjson

from backends.errors import BackendFailure


class ProxyError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, detail: str, *, code: str | None = None, **fields: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        self.fields = fields

    def headers(self) -> list[tuple[bytes, bytes]]:
        return []

    def body(self) -> bytes:
        return orjson.dumps({"error": self.code, "detail": self.detail, **self.fields})


class BadRequest(ProxyError):
    status = 400
    code = "bad_request"


class Unprocessable(ProxyError):
    """Well-formed, but cannot be routed safely in the tenant's phase."""

    status = 422
    code = "sql_refused"


class PayloadTooLarge(ProxyError):
    status = 413
    code = "body_too_large"


class BackendError(ProxyError):
    """The backend could not be reached or did not answer in time."""

    def __init__(self, backend: str, *, timeout: bool, detail: str) -> None:
        self.status = 504 if timeout else 502
        super().__init__(
            detail, code="backend_timeout" if timeout else "backend_unreachable", backend=backend
        )
        self.backend = backend
        self.timeout = timeout

    @classmethod
    def of(cls, failure: BackendFailure) -> BackendError:
        """The client's answer to a failed backend call (an unbuildable request counts as unreachable)."""
        return cls(failure.backend, timeout=failure.timeout, detail=failure.detail)


class ServiceUnavailable(ProxyError):
    status = 503
    code = "unavailable"

    def __init__(self, detail: str, *, code: str, retry_after_s: int = 1, **fields: Any) -> None:
        super().__init__(detail, code=code, **fields)
        self.retry_after_s = retry_after_s

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"retry-after", str(self.retry_after_s).encode())]
