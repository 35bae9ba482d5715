"""The status page's HTML, CSS and script: one self-contained document, no external assets.

The script builds every element with `textContent` (never `innerHTML` with data: audit reasons are free
text). Every figure carries `data-k="<path in /status/data>"` so a test can compare it with the API.
Request rates are computed in the browser from the change of the request counters between two polls.
"""

from __future__ import annotations

import html
import json
from importlib import resources

_PAGE = (resources.files("proxy") / "static" / "status.html").read_text(encoding="utf-8")


def render_page(*, viewer: str, refresh_s: float) -> str:
    return _PAGE.replace("__REFRESH_S__", json.dumps(refresh_s)).replace("__VIEWER__", html.escape(viewer))
