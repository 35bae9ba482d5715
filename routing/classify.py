"""Classify a request: which tenant, read or write, and whether its target is safe to forward.

Pure functions over plain values (no ASGI, no I/O) so every rule is table-testable.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import unquote

from routing.tenant import validate_tenant

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class RequestKind(StrEnum):
    READ = "read"
    WRITE = "write"

    __hash__ = str.__hash__  # see routing.phases.Side


class InvalidTargetError(ValueError):
    """The request target cannot be forwarded: absolute-form, or a path that would leave the base URL."""


@dataclass(frozen=True, slots=True)
class RequestFacts:
    tenant: str | None
    kind: RequestKind
    method: str


def classify(method: str, tenant_header: str | None) -> RequestFacts:
    """Facts the routing decision needs. Raises `InvalidTenantError` for a malformed tenant id."""
    tenant = None if tenant_header is None else validate_tenant(tenant_header)
    kind = RequestKind.READ if method in READ_METHODS else RequestKind.WRITE
    return RequestFacts(tenant=tenant, kind=kind, method=method)


def check_target(raw_path: bytes, request_target: bytes | None = None) -> None:
    """Refuse targets a reverse proxy must not forward.

    `request_target` is the target exactly as the client sent it, when the server exposes it: an
    absolute-form target (`GET http://host/x`) is a forward-proxy request and is refused. A path whose
    decoded segments contain `.` or `..` could resolve above the backend's base path, so it is refused
    too; so is an encoded slash or backslash, which backends decode differently.
    """
    if request_target is not None and not request_target.startswith(b"/"):
        raise InvalidTargetError("absolute-form or authority-form request targets are not accepted")
    if not raw_path.startswith(b"/"):
        raise InvalidTargetError("the request path must start with '/'")
    if b"%" not in raw_path and b"." not in raw_path and b"\\" not in raw_path:
        return  # the common case: nothing that can decode into a dot segment
    lowered = raw_path.lower()
    if b"%2f" in lowered or b"%5c" in lowered or b"\\" in raw_path:
        raise InvalidTargetError("encoded slashes and backslashes are not accepted in the path")
    decoded = unquote(raw_path.decode("latin-1"))
    if any(segment in (".", "..") for segment in decoded.split("/")):
        raise InvalidTargetError("dot segments ('.' or '..') are not accepted in the path")
