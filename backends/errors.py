"""What can go wrong talking to a backend, translated once from the HTTP library's exceptions.

BackendFailure                       the call produced no usable answer
    kind "timeout"                   no answer (head or a body read) in time
    kind "unreachable"               connection refused, reset or closed before an answer
    kind "invalid_request"           the request could not be built (e.g. a header value with CR/LF)

A backend's answer, whatever its status, is not a failure: callers decide what a 4xx or 5xx means.
Each consumer maps a failure once: the data plane to a 502/504 for its client, the worker to a retry.
"""

from __future__ import annotations

from typing import Literal

FailureKind = Literal["timeout", "unreachable", "invalid_request"]


class BackendFailure(Exception):
    def __init__(self, backend: str, kind: FailureKind, detail: str) -> None:
        super().__init__(detail)
        self.backend = backend
        self.kind: FailureKind = kind
        self.detail = detail

    @property
    def timeout(self) -> bool:
        return self.kind == "timeout"

    @property
    def code(self) -> str:
        """The error code a client sees for it (`backend_timeout` or `backend_unreachable`)."""
        return "backend_timeout" if self.kind == "timeout" else "backend_unreachable"
