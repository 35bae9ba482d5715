"""The admin API's OpenAPI document, made to say what the API answers.

FastAPI documents each route's success and, for routes with parameters, a 422 in its own validation
shape; cutover answers errors as `{"error": code, "detail": text, ...}` (`proxy.admin.errors`). After
FastAPI builds the document, every route gets the errors it can produce, in cutover's shape:

    401 (+ 403 for write routes)  it depends on `require_read` / `require_write` (`proxy.admin.guard`)
    400                           it takes a `tenant` (path or query) or declares one itself
    422                           it takes parameters or a body (with `problems`)
    503                           it needs a token (every such route reads PostgreSQL or Redis)

and any error status a route declares itself (`responses={404: {"description": ...}}`) gets the same
schema unless it brings its own content. A schema fuzzer run against the live API checks the result
(`tests/proxy/test_admin_schema.py`).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from config.settings import TokenScope
from proxy.admin.guard import flat_routes, needed_scope

_ERROR = "#/components/schemas/Error"
_SCHEMAS: dict[str, Any] = {
    "Error": {
        "title": "Error",
        "type": "object",
        "required": ["error", "detail"],
        "properties": {
            "error": {"type": "string", "description": "a stable code: what went wrong"},
            "detail": {"type": "string", "description": "the same, in words"},
            "problems": {
                "type": "array",
                "description": "each field at fault and why (`invalid_request`), or each problem in words",
                "items": {
                    "anyOf": [
                        {
                            "type": "object",
                            "required": ["field", "problem"],
                            "properties": {"field": {"type": "string"}, "problem": {"type": "string"}},
                        },
                        {"type": "string"},
                    ]
                },
            },
        },
        "additionalProperties": True,
    },
}
_DESCRIPTIONS = {
    400: "a malformed tenant id (`invalid_tenant`)",
    401: "no valid token (`unauthorized`)",
    403: "a read token on a route that changes something (`forbidden`)",
    422: "a body or parameter that does not validate (`invalid_request`, with `problems`)",
    503: "PostgreSQL or Redis unavailable (`store_unavailable`, `buffer_unavailable`)",
}


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            document_errors(document, app.routes)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend the schema


def document_errors(document: dict[str, Any], routes: list[Any]) -> None:
    for route in flat_routes(routes):
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        needed = needed_scope(route.dependant)
        for method in route.methods or ():
            operation = document["paths"][route.path_format].get(method.lower())
            if operation is None:
                continue
            responses: dict[str, Any] = operation.setdefault("responses", {})
            for generated in _generated_errors(operation, needed):
                responses.setdefault(str(generated), {"description": _DESCRIPTIONS[generated]})
            for status, response in responses.items():
                if status[0] in "45" and (status == "422" or "content" not in response):
                    # 422 also replaces FastAPI's own validation shape: cutover never sends it.
                    response["content"] = {"application/json": {"schema": {"$ref": _ERROR}}}
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):  # FastAPI's shape, which cutover never sends
        schemas.pop(unused, None)
    schemas.update(_SCHEMAS)


def _generated_errors(operation: dict[str, Any], needed: TokenScope | None) -> list[int]:
    errors = []
    names = {param["name"] for param in operation.get("parameters", []) if param["in"] in ("path", "query")}
    if "tenant" in names:
        errors.append(400)
    if needed is not None:
        errors.append(401)
    if needed is TokenScope.WRITE:
        errors.append(403)
    if operation.get("parameters") or "requestBody" in operation:
        errors.append(422)
    if needed is not None:
        errors.append(503)
    return errors
