"""The SQL of a data-API body: `{"sql": "..." | [...], "params": [...] | {...} | [[...], ...]}`.

Shared by the proxy (which routes by it) and the PostgreSQL applier (which executes it), so both read a
body the same way. Field names come from the endpoint's settings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import orjson

from routing.sql import Params
from routing.sql_errors import SqlInputError, SqlParamsError


@dataclass(frozen=True, slots=True)
class SqlBody:
    document: dict[str, Any]
    texts: list[str]
    params: list[Params]  # one entry per text
    as_list: bool  # the SQL field held a list of texts


def load_document(body: bytes) -> dict[str, Any]:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        try:
            document = json.loads(body)  # integers beyond 64 bits, which orjson refuses
        except (ValueError, RecursionError):
            raise SqlInputError("the body of a SQL endpoint must be JSON", code="sql_body") from None
    if not isinstance(document, dict):
        raise SqlInputError("the body of a SQL endpoint must be a JSON object", code="sql_body")
    return document


def dump_document(document: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(document)
    except TypeError:
        return json.dumps(document, separators=(",", ":")).encode()


def read_body(body: bytes, sql_field: str, params_field: str) -> SqlBody:
    """Raises `SqlInputError` (code `sql_body` or `sql_params`) for a body of the wrong shape."""
    document = load_document(body)
    value = document.get(sql_field)
    params = document.get(params_field)
    if isinstance(value, str):
        return SqlBody(document, [value], [_params(params, params_field)], False)
    if isinstance(value, list) and all(isinstance(text, str) for text in value):
        if params is None:
            return SqlBody(document, value, [None] * len(value), True)
        if not isinstance(params, list) or len(params) != len(value):
            raise SqlParamsError(
                f"with a list of statements in {sql_field!r}, {params_field!r} must be a list of as many "
                "parameter lists"
            )
        return SqlBody(
            document, value, [_params(item, f"{params_field}[{i}]") for i, item in enumerate(params)], True
        )
    raise SqlInputError(
        f"field {sql_field!r} must hold the SQL text or a list of texts", code="sql_body", field=sql_field
    )


def _params(value: object, where: str) -> Params:
    if value is None or isinstance(value, list | dict):
        return value
    raise SqlParamsError(f"{where!r} must be a list or an object")
