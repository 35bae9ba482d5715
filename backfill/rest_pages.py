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

Boundary checks (page, offset and link paging; `check_boundaries`). Pages by position shift while they
are read: a delete of a record listed already moves every later record one place forward, and the
first record of the page not read yet lands on the page before, which was read. Sweeping the whole
collection again finds such a record only if nothing moves during the sweep, which a tenant that keeps
deleting never grants. So each page is checked where it is read: after reading the page that starts at
index `i`, the lister reads the one record at `i - 1` (a page of size 1) and takes the page only if that
is still the record it listed last (the anchor). Why that proves the page follows the anchor: a record
that stays in the collection only moves forward (records before it go; new records join at the end),
so the anchor found at `i - 1` again sat there the whole time, the page's read included. When it is not
there, the lister reads back, a page at a time, to a page holding a record it listed no later in the
order than where it found it then (or to the first page): that page is contiguous with what was listed,
and is yielded again (`Page.again`: the copy skips the records it wrote already), and paging goes on
from it, checked the same way.

What this assumes, as json-server and most list endpoints give it (insertion order, ascending ids or
creation times): a new record joins at the end, and an update moves no record. For an order that an
update changes, `sweep` is the remedy, and `cutover verify` proves the end state. A record deleted and
created again under the same id, landing at the very index it is checked at, within the milliseconds
between one page's read and its check, could pass a check it should fail.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
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
    # A page read back after a boundary check failed: it holds records listed already.
    again: bool = False


def record_id(resource: RestResource, item: Any) -> str | None:
    """A listed record's id as text (None: no usable id)."""
    value = item.get(resource.id_field) if isinstance(item, dict) else None
    if isinstance(value, orjson.Fragment):
        contents = value.contents
        value = contents.decode() if isinstance(contents, bytes) else contents
    if value is None or isinstance(value, bool | dict | list) or str(value) == "":
        return None
    return str(value)


@dataclass(frozen=True, slots=True)
class _Anchor:
    """The last record listed with an id, and its index in the collection's order when it was read."""

    key: str
    index: int


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
        """Every page from `start` (the first page when None) to the last, at most `max_pages` reads;
        with boundary checks, a page read back is yielded again (see the module's doc)."""
        if not self.resource.checks_boundaries:
            position: Position | None = self.first() if start is None else start
            read = 0
            while position is not None:
                self._count_read(read)
                page = await self.page(position)
                read += 1
                yield page
                position = page.next
            return
        async for page in self._checked_pages(start):
            yield page

    async def _checked_pages(self, start: Position | None) -> AsyncIterator[Page]:
        position: Position | None = self.first() if start is None else start
        # What was listed: each record's id and its index when read (a record found later at a greater
        # index is not the one listed: deleted and created again, at the end).
        listed: dict[str, int] = {}
        anchor: _Anchor | None = None
        if start is not None and "after" in start:  # a resumed copy: the record its last page ended with
            anchor = _Anchor(str(start["after"]), int(start["after_at"]))
            listed[anchor.key] = anchor.index
        reached = 0  # pages that start before this index were read already
        read = 0
        while position is not None:
            self._count_read(read)
            index = self._index_of(position)
            page = await self.page(position)
            read += 1
            if index is None:  # a link kept by a copy from before the checks: nothing to check against
                anchor = None
                yield page
                position = page.next
                continue
            if anchor is not None and not await self._anchor_holds(anchor):
                page, index, more = await self._read_back(index, listed)
                read += more
            start_index = index
            last: tuple[str, int] | None = None  # the page's last record with an id, and its index
            for offset, item in enumerate(page.items):
                key = record_id(self.resource, item)
                if key is not None:
                    listed[key] = start_index + offset
                    last = key, start_index + offset
            if last is not None:
                anchor = _Anchor(*last)
            following = page.next
            if following is not None:
                following = {**following, "at": start_index + len(page.items)}
                if anchor is not None:
                    following |= {"after": anchor.key, "after_at": anchor.index}
            yield replace(page, next=following, again=start_index < reached)
            reached = max(reached, start_index + len(page.items))
            position = following

    def _count_read(self, read: int) -> None:
        if read >= self.resource.max_pages:
            raise DataError(
                f"{self.resource.name}: the {self._label} side has more than max_pages"
                f" ({self.resource.max_pages}) pages"
            )

    def _index_of(self, position: Position) -> int | None:
        """Where a position starts in the collection's order (None: a link not followed from here)."""
        if "at" in position:
            return int(position["at"])
        if "offset" in position:
            return int(position["offset"])
        if "page" in position:
            return (int(position["page"]) - self.resource.first_page) * self.resource.page_size
        return None

    def _at(self, index: int, size: int) -> Position:
        """The position of the page of `size` records starting at `index` (a multiple of `size` for page
        numbers; link paging asks for pages by number, as for its first page)."""
        if self._style == "offset":
            return {"offset": index, "size": size}
        return {"page": index // size + self.resource.first_page, "size": size, "at": index}

    async def _anchor_holds(self, anchor: _Anchor) -> bool:
        """Whether the record at the anchor's index is still the anchor."""
        answer = await self._get(*self._request(self._at(anchor.index, 1)))
        items = self._items(self._body(answer))
        return len(items) == 1 and record_id(self.resource, items[0]) == anchor.key

    async def _read_back(self, index: int, listed: dict[str, int]) -> tuple[Page, int, int]:
        """The page before `index`, or the one before it, and so on, until one holds a record listed
        no later in the order than it is found now (or is the first page): that page, its index and
        the pages read."""
        size = self.resource.page_size
        back = index
        read = 0
        while True:
            back = max(back - size, 0)
            self._count_read(read)
            page = await self.page(self._at(back, size))
            read += 1
            if back == 0 or any(
                listed.get(key, -1) >= back + offset
                for offset, item in enumerate(page.items)
                if (key := record_id(self.resource, item)) is not None
            ):
                return page, back, read

    async def page(self, position: Position) -> Page:
        path, query = self._request(position)
        answer = await self._get(path, query)
        body = self._body(answer)
        items = self._items(body)
        total = self._total(answer)
        return Page(items, position, self._next(position, body, answer, len(items), total), total)

    def _request(self, position: Position) -> tuple[str, str]:
        resource = self.resource
        if "link" in position:
            path, _, query = str(position["link"]).partition("?")
            return path, query
        params: dict[str, Any] = {resource.size_param: position.get("size", resource.page_size)}
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

    def _body(self, answer: Answer) -> Any:
        try:
            return self._decode(answer.body)
        except ValueError:
            raise DataError(f"{self.resource.name}: the {self._label} side's page is not JSON") from None

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
