"""Errors the data plane answers with, each in one stable JSON shape: `{"error": code, "detail": text, ...}`.

ProxyError (a `common.coded_error.CodedError`)
├── BadRequest             400  bad_request / invalid_tenant / invalid_target / sql_* (SQL endpoints)
├── RequestTimeout         408  request_timeout  (head or body too slow; the connection is closed)
├── PayloadTooLarge        413  body_too_large
├── HeaderFieldsTooLarge   431  header_too_large  (the connection is closed)
├── Unprocessable          422  sql_refused / sql_mixed_tables / sql_ddl_refused / sql_untranspilable
├── BackendError           502 / 504  backend_unreachable / backend_bad_response / backend_timeout
├── ServiceUnavailable     503  not_ready / fallback_unsafe / buffer_full / buffer_unavailable (Retry-After)
├── InternalError          500  internal_error  (an exception nobody handled: a bug; carries request_id)
└── MethodNotAllowed       405  (non-HTTP scopes such as websockets are not proxied)
"""

from __future__ import annotations

from typing import Any

import orjson

from backends.errors import BackendFailure
from common.coded_error import CodedError


class ProxyError(CodedError):
    status = 500
    code = "internal_error"

    def headers(self) -> list[tuple[bytes, bytes]]:
        return []

    def body(self) -> bytes:
        return orjson.dumps(self.to_dict())


class BadRequest(ProxyError):
    status = 400
    code = "bad_request"


class RequestTimeout(ProxyError):
    status = 408
    code = "request_timeout"


class HeaderFieldsTooLarge(ProxyError):
    status = 431
    code = "header_too_large"


class Unprocessable(ProxyError):
    """Well-formed, but cannot be routed safely in the tenant's phase."""

    status = 422
    code = "sql_refused"


class PayloadTooLarge(ProxyError):
    status = 413
    code = "body_too_large"


class BackendError(ProxyError):
    """The backend could not be reached, did not answer in time, or answered malformed HTTP."""

    def __init__(self, backend: str, *, timeout: bool, detail: str, code: str | None = None) -> None:
        self.status = 504 if timeout else 502
        code = code or ("backend_timeout" if timeout else "backend_unreachable")
        super().__init__(detail, code=code, backend=backend)
        self.backend = backend
        self.timeout = timeout

    @classmethod
    def of(cls, failure: BackendFailure) -> BackendError:
        """The client's answer to a failed backend call."""
        return cls(failure.backend, timeout=failure.timeout, detail=failure.detail, code=failure.code)


class InternalError(ProxyError):
    """What the client sees of a bug: the log line with the traceback carries the same request id."""

    status = 500
    code = "internal_error"

    def __init__(self, exc: BaseException, *, request_id: str) -> None:
        # The exception's type, never its text: that may hold values or secrets.
        super().__init__(
            f"unexpected {type(exc).__name__} while handling the request; it is logged with request id "
            f"{request_id}",
            request_id=request_id,
        )


class ServiceUnavailable(ProxyError):
    status = 503
    code = "unavailable"

    def __init__(self, detail: str, *, code: str, retry_after_s: int = 1, **fields: Any) -> None:
        super().__init__(detail, code=code, **fields)
        self.retry_after_s = retry_after_s

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"retry-after", str(self.retry_after_s).encode())]
