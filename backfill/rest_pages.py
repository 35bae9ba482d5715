"""One tenant's records of a REST collection, page by page, as the copy (`backfill.rest_copy`) and
verification (`backfill.rest_verify`) both read them: one lister, so what the copy wrote and what
verification compares are the same records.

Paging (`data.rest.resources[].paging`), each as real APIs do it:
- `page`: a page number (`page_param`, from `first_page`) and a size (`size_param`); json-server's
  `_page` / `_limit`.
- `offset`: an offset (`offset_param`) advanced by the records each page held, and a size; json-server's
  `_start` / `_limit`.
- `cursor`: the body names the next page's cursor (`next_field`, a dotted path), sent back as
  `cursor_param`; null, empty or absent at the end.
- `link`: the first page is asked for as with `page` (json-server sends links only then), the next ones
  at the `Link` header's `rel="next"` (RFC 8288, parsed by aiohttp; a relative reference is taken
  against the request's URL), followed as they are: path and query, requested from the same backend.

Page and offset paging end at a page shorter than `page_size`, or once the collection's size (the
`total_header`, json-server's `X-Total-Count`) is reached. A body that is a JSON array is the page's
records (json-server); otherwise they are at `items_field`. A `list_path` with a query string keeps it;
the paging parameters (and `tenant_query`) are added to it.

A position (where a page starts) is a small JSON object (`{"page": 3}`, `{"offset": 1000}`,
`{"cursor": "..."}`, `{"link": "/items?page=3"}`): the copy's checkpoint keeps the next page's.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import orjson

from backends.client import Answer, BackendClient
from backends.errors import BackendFailure
from backfill.errors import DataError
from config.data import RestResource

Position = dict[str, Any]
Decode = Callable[[bytes], Any]


def decode_exact(body: bytes) -> Any:
    """JSON as verification compares it: numbers with a fraction as Decimal (digits and scale as sent)."""
    from decimal import Decimal

    return json.loads(body, parse_float=Decimal)


def _int_or_fragment(text: str) -> Any:
    # orjson writes integers up to 64 bits; a longer one goes back out as its digits.
    return int(text) if len(text) < 19 else orjson.Fragment(text)


def decode_verbatim(body: bytes) -> Any:
    """JSON as the copy writes it again: numbers kept as their text (`orjson.Fragment`), so `1.00`,
    `-0.0`, `1e5` and 30-digit integers reach the other side as old sent them."""
    return json.loads(body, parse_float=orjson.Fragment, parse_int=_int_or_fragment)


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Any]
    position: Position  # where this page starts
    next: Position | None  # where the next page starts; None: this is the last
    total: int | None  # the collection's size, when the backend says it


def dotted(document: Any, path: str) -> Any:
    """`document["a"]["b"]` for the path `a.b`; None where a step is missing."""
    for step in path.split("."):
        if not isinstance(document, dict):
            return None
        document = document.get(step)
    return document


class RestLister:
    """Pages of one resource of one tenant on one side."""

    def __init__(
        self,
        client: BackendClient,
        resource: RestResource,
        *,
        tenant: str,
        tenant_header: str,
        timeout_s: float,
        label: str,
        decode: Decode = decode_exact,
    ) -> None:
        self._client = client
        self.resource = resource
        self._tenant = tenant
        self._tenant_header = tenant_header
        self._timeout_s = timeout_s
        self._label = label
        self._decode = decode
        self._style = resource.paging_style

    def first(self) -> Position:
        match self._style:
            case "page" | "link":
                return {"page": self.resource.first_page}
            case "offset":
                return {"offset": 0}
            case _:
                return {}

    async def pages(self, start: Position | None = None) -> AsyncIterator[Page]:
        """Every page from `start` (the first page when None) to the last, at most `max_pages`."""
        position: Position | None = self.first() if start is None else start
        read = 0
        while position is not None:
            if read >= self.resource.max_pages:
                raise DataError(
                    f"{self.resource.name}: the {self._label} side has more than max_pages"
                    f" ({self.resource.max_pages}) pages"
                )
            page = await self.page(position)
            read += 1
            yield page
            position = page.next

    async def page(self, position: Position) -> Page:
        path, query = self._request(position)
        answer = await self._get(path, query)
        try:
            body = self._decode(answer.body)
        except ValueError:
            raise DataError(f"{self.resource.name}: the {self._label} side's page is not JSON") from None
        items = self._items(body)
        total = self._total(answer)
        return Page(items, position, self._next(position, body, answer, len(items), total), total)

    def _request(self, position: Position) -> tuple[str, str]:
        resource = self.resource
        if "link" in position:
            path, _, query = str(position["link"]).partition("?")
            return path, query
        params: dict[str, Any] = {resource.size_param: resource.page_size}
        match self._style:
            case "page" | "link":
                params[resource.page_param] = position["page"]
            case "offset":
                params[resource.offset_param] = position["offset"]
            case "cursor" if "cursor" in position:
                params[resource.cursor_param] = position["cursor"]
        if resource.tenant_query:
            params[resource.tenant_query] = self._tenant
        # A query string in `list_path` is kept; the paging parameters are added to it.
        path, _, fixed = resource.list_path.partition("?")
        return path, "&".join(part for part in (fixed, urlencode(params)) if part)

    async def _get(self, path: str, query: str) -> Answer:
        name = self.resource.name
        try:
            answer = await self._client.call(
                "GET",
                path,
                query=query,
                headers=[(self._tenant_header, self._tenant)],
                timeout_s=self._timeout_s,
            )
        except BackendFailure as exc:
            raise DataError(f"{name}: the {self._label} side is unreachable ({exc.kind})") from None
        if answer.status != 200:
            raise DataError(f"{name}: the {self._label} side answered {answer.status} to the list")
        return answer

    def _items(self, body: Any) -> list[Any]:
        items = body if isinstance(body, list) else dotted(body, self.resource.items_field)
        if not isinstance(items, list):
            raise DataError(
                f"{self.resource.name}: the {self._label} side's page is neither a JSON array nor an object"
                f" with a list at {self.resource.items_field!r}"
            )
        return items

    def _total(self, answer: Answer) -> int | None:
        header = self.resource.total_header
        value = answer.headers.get(header) if header else None
        try:
            return int(value) if value is not None else None
        except ValueError:
            return None

    def _next(
        self, position: Position, body: Any, answer: Answer, count: int, total: int | None
    ) -> Position | None:
        resource = self.resource
        if self._style == "link":
            url = answer.link("next")
            if url is None:
                return None
            path, query = self._client.relative(url)
            following = {"link": f"{path}?{query}" if query else path}
            return None if following == position else following  # a page naming itself: the end
        if self._style == "cursor":
            cursor = dotted(body, resource.next_field or "")
            if cursor is None or cursor == "":
                return None
            if position.get("cursor") == cursor:
                raise DataError(f"{resource.name}: the {self._label} side returned the same cursor again")
            return {"cursor": cursor}
        if count == 0 or count < resource.page_size:
            return None
        if self._style == "offset":
            offset = int(position["offset"]) + count
            return None if total is not None and offset >= total else {"offset": offset}
        number = int(position["page"]) + 1
        seen = (number - resource.first_page) * resource.page_size
        return None if total is not None and seen >= total else {"page": number}
