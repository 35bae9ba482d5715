"""Errors of the backfill and the verifier. Each carries the fields an operator needs to act on it.

DataError
├── PhaseRefusedError       the tenant's phase does not allow the operation (→ CLI exit 1)
├── TableSetupError         a configured table does not match the databases (missing column, no key)
├── TransformError          the configured transform cannot be loaded, or failed on a row
├── CheckpointMismatchError a resume would mix two transform versions or table shapes
└── RepairRefusedError      one table or resource cannot be repaired in this direction (the run goes on)
"""

from __future__ import annotations


class DataError(Exception):
    """Base class of backfill and verification errors."""


class PhaseRefusedError(DataError):
    def __init__(self, tenant: str, phase: str, detail: str) -> None:
        self.tenant = tenant
        self.phase = phase
        super().__init__(detail)


class TableSetupError(DataError):
    def __init__(self, table: str, detail: str) -> None:
        self.table = table
        super().__init__(f"table {table!r}: {detail}")


class TransformError(DataError):
    def __init__(self, table: str, detail: str) -> None:
        self.table = table
        super().__init__(f"table {table!r}: transform: {detail}")


class CheckpointMismatchError(DataError):
    def __init__(self, table: str, detail: str) -> None:
        self.table = table
        super().__init__(f"table {table!r}: {detail} (rerun with --restart to copy again from the start)")


class RepairRefusedError(DataError):
    """Raised for one table or REST resource: the run records it in that table's report and repairs the
    others."""

    def __init__(self, table: str, detail: str) -> None:
        self.table = table
        self.detail = detail
        super().__init__(f"{table!r} not repaired: {detail}")
