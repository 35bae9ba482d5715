"""Pages of the admin API's lists.

Every list answers at most `limit` items (each list has its own default and maximum) and `next`: the
key of its last item when more follow, else null. The next page is asked for with `after=<next>`, which
means "the items after this key, in this list's order" (ascending for tenants and dead letters, newest
first for the audit log and divergences). Keys are stable values (a tenant id, a row id, a stream entry
id), never offsets, so a page costs the same wherever it starts and rows added meanwhile do not shift
the pages.

How a list uses it: fetch `limit + 1` items after the cursor in the list's order, then

    items, next_key = page_of(rows, limit, key=lambda row: row["id"])
    return {"entries": items, "next": next_key}

The extra item only tells whether a next page exists, without a count. Send the body as a
`PageResponse`: orjson encodes it (datetimes included) in a fraction of what FastAPI's generic encoder
takes, and process 0 serves the data plane on the same event loop (BENCHMARKS.md, admin API).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import orjson
from fastapi.responses import JSONResponse

T = TypeVar("T")
K = TypeVar("K")


LIMIT_HELP = "at most this many items; follow `next` for more"
AFTER_HELP = "the `next` of the previous page: items after this key, in this list's order"


def page_of(rows: Sequence[T], limit: int, *, key: Callable[[T], K]) -> tuple[list[T], K | None]:
    """The first `limit` of `rows` (fetched as `limit + 1`), and the cursor of the next page or None."""
    if len(rows) <= limit:
        return list(rows), None
    items = list(rows[:limit])
    return items, key(items[-1])


class PageResponse(JSONResponse):
    """JSON encoded by orjson, as-is: no validation pass over what the route built itself."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def page_schema(items_key: str) -> dict[int | str, dict[str, Any]]:
    """`responses=` of a list route answering a `PageResponse`: the shape of its body."""
    schema = {
        "type": "object",
        "required": [items_key, "next"],
        "properties": {items_key: {"type": "array", "items": {"type": "object"}}, "next": {}},
    }
    return {200: {"description": "one page", "content": {"application/json": {"schema": schema}}}}
