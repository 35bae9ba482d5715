"""The base of every error a client sees, over HTTP or from the CLI, in one JSON shape:
`{"error": code, "detail": text, ...fields}`.

CodedError
├── proxy.dataplane.errors.ProxyError            the data plane's answers (with an HTTP status)
├── proxy.admin.errors.AdminError      the admin API's answers (with an HTTP status)
├── proxy.cli.support.CommandError     a `cutover` command that cannot go on (with an exit code)
└── routing.sql_errors.SqlError        SQL that cannot be routed (a ValueError; `proxy` maps it to a status)

`code` is stable (scripts and tests match on it), `detail` is for people, `fields` name what a client needs
to fix the request (a tenant, the allowed moves, a line and column).
"""

from __future__ import annotations

from typing import Any


class CodedError(Exception):
    code: str = "internal_error"

    def __init__(self, detail: str, *, code: str | None = None, **fields: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        self.fields = fields

    def to_dict(self) -> dict[str, Any]:
        """The error's JSON body."""
        return {"error": self.code, "detail": self.detail, **self.fields}
