"""Errors of SQL-aware routing. Each carries a stable `code` and the fields a client needs to fix the request.

SqlError (ValueError, and a `common.coded_error.CodedError`)
├── SqlInputError           the request's SQL cannot be routed as sent (the proxy answers 400)
│   ├── SqlSyntaxError      the parser's message, with line and column (1-based) when it knows them
│   ├── SqlLimitError       empty text, text over the configured length, too many statements
│   ├── SqlParamsError      a placeholder without a parameter, or a body field of the wrong shape
│   └── SqlTenantError      statements pin several tenants, or one other than the request's header
└── SqlRefusedError         well-formed, but cannot be routed safely in this phase (the proxy answers 422)
    └── UntranspilableError the statement cannot be rewritten to the target dialect safely

Routing stays pure: these say what is wrong; `proxy/` maps them to HTTP statuses.
"""

from __future__ import annotations

from common.coded_error import CodedError


class SqlError(CodedError, ValueError):
    code = "sql_error"


class SqlInputError(SqlError):
    code = "sql_invalid"


class SqlSyntaxError(SqlInputError):
    code = "sql_syntax"

    def __init__(self, detail: str, *, line: int | None, col: int | None) -> None:
        super().__init__(detail, line=line, col=col)
        self.line = line
        self.col = col


class SqlLimitError(SqlInputError):
    code = "sql_limit"


class SqlParamsError(SqlInputError):
    code = "sql_params"


class SqlTenantError(SqlInputError):
    code = "sql_tenant"


class SqlRefusedError(SqlError):
    code = "sql_refused"


class UntranspilableError(SqlRefusedError):
    code = "sql_untranspilable"

    def __init__(self, detail: str, *, source: str, target: str) -> None:
        super().__init__(detail, source_dialect=source, target_dialect=target)
        self.source = source
        self.target = target
