"""The status page's HTML, CSS and script: one self-contained document, no external assets.

The script builds every element with `textContent` (never `innerHTML` with data: audit reasons are free
text). Every figure carries `data-k="<path in /status/data>"` so a test can compare it with the API.
Request rates are computed in the browser from the change of the request counters between two polls;
time series are drawn as inline SVG sparklines from `/status/series`.
"""

from __future__ import annotations

import html
import json
from importlib import resources

_STATIC = resources.files("proxy") / "static"
_PAGE = (_STATIC / "status.html").read_text(encoding="utf-8")
_DIVERGENCE = (_STATIC / "divergence.html").read_text(encoding="utf-8")


def render_page(*, viewer: str, refresh_s: float, series_refresh_s: float) -> str:
    return (
        _PAGE.replace("__REFRESH_S__", json.dumps(refresh_s))
        .replace("__SERIES_REFRESH_S__", json.dumps(series_refresh_s))
        .replace("__VIEWER__", html.escape(viewer))
    )


def render_divergence_page(*, viewer: str) -> str:
    """One stored divergence; its script reads the tenant and id from its own address."""
    return _DIVERGENCE.replace("__VIEWER__", html.escape(viewer))
