"""Tenant identity: where it comes from in a request and what a valid one looks like."""

from __future__ import annotations

import re

TENANT_HEADER_DEFAULT = "X-Tenant-ID"
_VALID_TENANT = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class InvalidTenantError(ValueError):
    """The tenant id is not 1–128 characters of `[A-Za-z0-9._:-]`."""

    def __init__(self, value: str) -> None:
        self.value = value
        shown = value if len(value) <= 40 else value[:40] + "…"
        rule = "must be 1-128 characters of [A-Za-z0-9._:-]"
        if "," in value:  # repeated fields arrive joined when a proxy in front merged them (RFC 9110 §5.3)
            super().__init__(
                f"tenant header {shown!r} names several tenants: a request names one; a tenant id {rule}"
            )
        else:
            super().__init__(f"tenant id {shown!r} {rule}")


def validate_tenant(value: str) -> str:
    if _VALID_TENANT.fullmatch(value) is None:
        raise InvalidTenantError(value)
    return value
