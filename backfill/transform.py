"""Load a configured row transform and apply it to old rows.

A transform is a plain function `f(row: dict[str, Any]) -> dict[str, Any] | None`: it gets an old row
(old column names) and returns the new row (new column names; every copied column) or None to leave the
row out. It must be deterministic: reruns and verification apply it again and expect the same rows.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from backfill.errors import TransformError
from config.data import DataTable

RowFunction = Callable[[dict[str, Any]], Mapping[str, Any] | None]


def load_transform(table: DataTable) -> RowFunction | None:
    if table.transform is None:
        return None
    module_name, _, attribute = table.transform.function.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise TransformError(table.name, f"cannot import {module_name!r}: {exc}") from None
    function = getattr(module, attribute, None)
    if not callable(function):
        raise TransformError(table.name, f"{table.transform.function!r} is not a function")
    return function  # type: ignore[no-any-return]


def transform_label(table: DataTable) -> str | None:
    """`function@version`, as kept in checkpoints and reports (None: rows are copied as they are)."""
    return None if table.transform is None else f"{table.transform.function}@{table.transform.version}"


def apply_transform(
    table: str, function: RowFunction, rows: Iterable[Mapping[str, Any]], columns: Sequence[str]
) -> list[tuple[Any, ...]]:
    """Transformed rows as tuples in `columns` order; a missing or unknown column is an error."""
    wanted = set(columns)
    out: list[tuple[Any, ...]] = []
    for row in rows:
        try:
            result = function(dict(row))
        except Exception as exc:
            raise TransformError(table, f"failed on a row: {type(exc).__name__}: {exc}") from exc
        if result is None:
            continue
        if result.keys() != wanted:
            missing, extra = sorted(wanted - result.keys()), sorted(result.keys() - wanted)
            raise TransformError(table, f"returned the wrong columns (missing {missing}, unexpected {extra})")
        out.append(tuple(result[c] for c in columns))
    return out
