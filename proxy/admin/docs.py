"""The admin API's documentation pages, served without a CDN: FastAPI's `/docs` (Swagger UI) and
`/redoc` load their scripts and styles from jsDelivr and a favicon from fastapi.tiangolo.com, so on a
network without the internet (where a proxy often runs) they showed a blank page. `fastapi-offline`
(MIT; ships Swagger UI 5 and ReDoc 2 inside its wheel) builds the app with both pages pointing at its
own copies, mounted here under `/docs/static`: every URL the pages load is on the admin port itself.

The mount needs no token (the pages and their assets are public, as FastAPI's were); the OpenAPI
document they read is `/openapi.json`, public too.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

DOCS_STATIC_URL = "/docs/static"


def admin_app(**kwargs: Any) -> FastAPI:
    """A FastAPI app whose `/docs` and `/redoc` load only same-origin assets."""
    return FastAPIOffline(docs_url="/docs", redoc_url="/redoc", static_url=DOCS_STATIC_URL, **kwargs)
