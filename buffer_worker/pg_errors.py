"""PostgreSQL's errors as apply errors, decided once for the applier's mirror database and its state
source alike: no connection is an outage (retried without limit); SQLSTATE classes 22 (data), 23
(integrity) and 42 (syntax, access rules, missing objects) are permanent (retrying cannot fix them);
anything else the server answers is transient."""

from __future__ import annotations

import asyncpg

from backends.content import EXCERPT_CHARS
from buffer_worker.apply_errors import ApplyError, PermanentApplyError, TransientApplyError, UnreachableError
from buffer_worker.intent import Intent

UNREACHABLE = (OSError, asyncpg.InterfaceError, asyncpg.CannotConnectNowError)
_PERMANENT_CLASSES = ("22", "23", "42")


def database_error(intent: Intent, exc: BaseException, database: str, what: str) -> ApplyError:
    """The apply error for `exc`, which `database` ("mirror database", "old database") raised on `what`
    ("the batch", "the state-transfer read"); `intent` is the one the error names."""
    if isinstance(exc, UNREACHABLE):
        return UnreachableError(intent, f"{database} unreachable for {what}: {type(exc).__name__}")
    sqlstate = getattr(exc, "sqlstate", "") or ""
    # The server's message is the answer an operator reads; the SQLSTATE says what kind of failure.
    status = f"sqlstate {sqlstate}" if sqlstate else type(exc).__name__
    detail = f"{database} refused {what} ({status})"
    said = {"status": status, "excerpt": " ".join(str(exc).split())[:EXCERPT_CHARS] or None}
    if sqlstate[:2] in _PERMANENT_CLASSES:
        return PermanentApplyError(intent, detail, **said)
    return TransientApplyError(intent, detail, **said)
