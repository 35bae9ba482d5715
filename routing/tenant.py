"""Tenant identity: where it comes from in a request and what a valid one looks like."""

from __future__ import annotations

import re

TENANT_HEADER_DEFAULT = "X-Tenant-ID"
# 1-128 of [A-Za-z0-9._:-], except `.` and `..`: a tenant id ends up in URL paths (the admin API's
# `/tenants/{tenant}`), where those two are dot segments that clients and proxies normalise away.
# Written without a lookahead so that the same text is a valid ECMA-262 pattern for the OpenAPI schema
# (the admin API publishes it) and generators that cannot handle lookarounds.
TENANT_PATTERN = (
    r"^(?:[A-Za-z0-9_:-][A-Za-z0-9._:-]{0,127}"
    r"|\.[A-Za-z0-9_:-][A-Za-z0-9._:-]{0,126}"
    r"|\.\.[A-Za-z0-9._:-]{1,126})$"
)
_VALID_TENANT = re.compile(TENANT_PATTERN)


class InvalidTenantError(ValueError):
    """The tenant id is not 1–128 characters of `[A-Za-z0-9._:-]`, or is `.` or `..`."""

    def __init__(self, value: str) -> None:
        self.value = value
        shown = value if len(value) <= 40 else value[:40] + "…"
        rule = "must be 1-128 characters of [A-Za-z0-9._:-], other than '.' and '..'"
        if "," in value:  # repeated fields arrive joined when a proxy in front merged them (RFC 9110 §5.3)
            super().__init__(
                f"tenant header {shown!r} names several tenants: a request names one; a tenant id {rule}"
            )
        else:
            super().__init__(f"tenant id {shown!r} {rule}")


def validate_tenant(value: str) -> str:
    # `fullmatch`: `$` alone would also accept a trailing newline.
    if _VALID_TENANT.fullmatch(value) is None:
        raise InvalidTenantError(value)
    return value
