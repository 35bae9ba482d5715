"""The lister the copy and verification share (`backfill.rest_pages`): every paging style real APIs use
(page numbers, offsets, a cursor in the body, the `Link` header), bodies that are bare arrays or nest
their records, `list_path` keeping its query string, the collection's size from `X-Total-Count`; against
a server of each style and against the json-server-like backend; and verification reading them."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from backends.client import BackendClient
from backfill.errors import DataError
from backfill.rest_pages import Page, RestLister, decode_verbatim
from backfill.verify_run import VerifyOptions, run_verify
from config.data import RestResource
from config.settings import BackendSettings
from routing.phases import Side
from tests.backfill.conftest import DataEnv
from tests.backfill.rest_sides import JSON_SERVER_ITEMS, json_sides, rest_settings

COUNT = 23  # records of the tenant: not a multiple of any page size used here
TENANT = "acme"


def _records(request: web.Request) -> list[dict[str, Any]]:
    assert request.headers["X-Tenant-ID"] == TENANT
    return [{"id": n, "v": f"{n}.50"} for n in range(1, COUNT + 1)]


def paging_app(requests: list[str]) -> web.Application:
    """One route per paging style; every request's path and query goes to `requests`."""

    @web.middleware
    async def log(request: web.Request, handler: Any) -> web.StreamResponse:
        requests.append(request.path_qs)
        response: web.StreamResponse = await handler(request)
        return response

    async def by_page(request: web.Request) -> web.Response:
        assert request.query.get("expand") == "1"  # list_path's own query string is kept
        page, limit = int(request.query["page"]), int(request.query["limit"])
        rows = _records(request)[(page - 1) * limit : page * limit]
        return web.json_response({"items": rows}, headers={"X-Total-Count": str(COUNT)})

    async def by_offset(request: web.Request) -> web.Response:
        offset, limit = int(request.query["offset"]), int(request.query["limit"])
        return web.json_response({"data": {"records": _records(request)[offset : offset + limit]}})

    async def by_cursor(request: web.Request) -> web.Response:
        after, limit = int(request.query.get("after", "0")), int(request.query["limit"])
        rows = [r for r in _records(request) if r["id"] > after][:limit]
        more = rows and rows[-1]["id"] < COUNT
        return web.json_response({"items": rows, "meta": {"next": str(rows[-1]["id"]) if more else None}})

    async def by_link(request: web.Request) -> web.Response:
        page, limit = int(request.query.get("p", "1")), int(request.query["per_page"])
        rows = _records(request)[(page - 1) * limit : page * limit]
        headers = {}
        if page * limit < COUNT:
            # Relative on odd pages, absolute (with the backend's base path) on even ones; the next link
            # also names another relation (`next last`) on the first page.
            target = f"items?p={page + 1}&per_page={limit}"
            url = target if page % 2 else f"http://elsewhere.test/base/link/{target}"
            rels = "next last" if page == 1 else "next"
            headers["Link"] = f'<http://x.test/base/link/items?p=1>; rel="first", <{url}>; rel="{rels}"'
        return web.json_response(rows, headers=headers)  # a bare array

    app = web.Application(middlewares=[log])
    app.router.add_get("/base/page", by_page)
    app.router.add_get("/base/offset", by_offset)
    app.router.add_get("/base/cursor", by_cursor)
    app.router.add_get("/base/link/items", by_link)
    return app


@pytest.fixture
async def paging_server() -> AsyncIterator[tuple[str, list[str]]]:
    requests: list[str] = []
    runner = web.AppRunner(paging_app(requests), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/base", requests
    await runner.cleanup()


async def _list_all(url: str, resource: RestResource) -> list[Page]:
    client = BackendClient(Side.OLD, BackendSettings.model_validate({"url": url}))
    await client.start()
    try:
        lister = RestLister(
            client,
            resource,
            tenant=TENANT,
            tenant_header="X-Tenant-ID",
            timeout_s=5,
            label="old",
            decode=decode_verbatim,
        )
        return [page async for page in lister.pages()]
    finally:
        await client.close()


STYLES = {
    "page": {"list_path": "/page?expand=1", "page_size": 10},
    "offset": {"list_path": "/offset", "paging": "offset", "items_field": "data.records", "page_size": 7},
    "cursor": {
        "list_path": "/cursor",
        "next_field": "meta.next",
        "cursor_param": "after",
        "page_size": 5,
    },
    "link": {
        "list_path": "/link/items",
        "paging": "link",
        "page_param": "p",
        "size_param": "per_page",
        "page_size": 4,
    },
}
PAGES = {"page": 3, "offset": 4, "cursor": 5, "link": 6}


@pytest.mark.parametrize("style", list(STYLES))
async def test_every_paging_style_lists_every_record_once(
    style: str, paging_server: tuple[str, list[str]]
) -> None:
    url, requests = paging_server
    resource = RestResource.model_validate({"name": "things", **STYLES[style]})
    pages = await _list_all(url, resource)
    ids = [item["id"] for page in pages for item in page.items]
    assert ids == list(range(1, COUNT + 1))
    assert len(pages) == PAGES[style]
    # Positional paging checks each boundary: one record read where the page before ended.
    peeks = [r for r in requests if re.search(r"[?&](limit|per_page)=1(&|$)", r)]
    assert len(peeks) == (0 if style == "cursor" else PAGES[style] - 1)
    assert len(requests) == PAGES[style] + len(peeks)
    assert pages[-1].next is None
    assert all(page.next is not None for page in pages[:-1])
    # Numbers reach the copy as old wrote them (`"n.50"` strings here; see test_rest_copy for floats).
    assert pages[0].items[0]["v"] == "1.50"


async def test_positions_resume_where_a_page_starts(paging_server: tuple[str, list[str]]) -> None:
    url, requests = paging_server
    resource = RestResource.model_validate({"name": "things", **STYLES["link"]})
    pages = await _list_all(url, resource)
    # The checkpoint keeps the next page's position: a link's path and query on the backend, without
    # its base path or its origin (credentials never leave the configured backend).
    # With it, where that page starts and the record the one before ended with (its boundary check).
    assert pages[0].next == {"link": "/link/items?p=2&per_page=4", "at": 4, "after": "4", "after_at": 3}
    assert pages[1].next == {"link": "/link/items?p=3&per_page=4", "at": 8, "after": "8", "after_at": 7}
    client = BackendClient(Side.OLD, BackendSettings.model_validate({"url": url}))
    await client.start()
    try:
        lister = RestLister(
            client, resource, tenant=TENANT, tenant_header="X-Tenant-ID", timeout_s=5, label="old"
        )
        assert pages[2].next is not None
        rest = [page async for page in lister.pages(pages[2].next)]
    finally:
        await client.close()
    assert [item["id"] for page in rest for item in page.items] == list(range(13, COUNT + 1))
    # The resumed run checks its first boundary too: record 12 is still the 12th.
    assert "/base/link/items?per_page=1&p=12" in requests
    assert requests[-2].startswith("/base/link/items?p=6&per_page=4")


async def test_page_paging_stops_at_the_announced_total_and_names_a_broken_page(
    paging_server: tuple[str, list[str]],
) -> None:
    url, requests = paging_server
    # 23 records in pages of 23: the first page is full, but X-Total-Count says there is no second.
    resource = RestResource.model_validate({"name": "things", "list_path": "/page?expand=1", "page_size": 23})
    pages = await _list_all(url, resource)
    assert len(pages) == 1 == len(requests)
    assert pages[0].total == COUNT
    flat = RestResource.model_validate({"name": "things", "list_path": "/offset", "paging": "offset"})
    with pytest.raises(DataError, match="things: the old side's page is neither a JSON array nor an object"):
        await _list_all(url, flat)  # its records are at data.records, not items


@pytest.mark.parametrize(
    ("overrides", "pages"),
    [
        pytest.param({}, 4, id="link-_page"),
        pytest.param({"paging": "page"}, 4, id="page-_page"),
        pytest.param({"paging": "offset", "offset_param": "_start"}, 4, id="offset-_start"),
        pytest.param({"paging": "page", "page_size": 1000}, 1, id="one-short-page"),
    ],
)
async def test_json_server_paging_styles(overrides: dict[str, Any], pages: int) -> None:
    async with json_sides() as sides:
        old = sides[Side.OLD]
        old.seed(TENANT, 200)
        old.seed("someone-else", 3)
        resource = RestResource.model_validate({**JSON_SERVER_ITEMS, **overrides})
        found = await _list_all(old.url, resource)
    assert [item["id"] for page in found for item in page.items] == list(range(1, 201))
    assert len(found) == pages
    assert {page.total for page in found} == {200}  # X-Total-Count


async def test_verify_reads_bare_arrays_and_every_paging_style(data_env: DataEnv, prefix: str) -> None:
    """REST verification pages json-server's bare arrays (it refused any page that was not a JSON
    object) with its `Link` header, and finds exactly the differing ids."""
    async with json_sides() as sides:
        old, new = sides[Side.OLD], sides[Side.NEW]
        old.seed(TENANT, 120)
        new.seed(TENANT, 120)
        del new.store[TENANT]["7"]
        new.store[TENANT]["80"]["v"] = 1
        new.seed(TENANT, 1, start=500)
        settings = rest_settings(data_env, sides, prefix)
        run = await run_verify(settings, VerifyOptions(TENANT, store=False))
    items = run.tables[0]
    assert items.rows_old == 120
    assert items.rows_new == 120
    assert items.ranges == 3  # pages of 50, following the Link header
    assert items.keys["missing_on_new"] == [["7"]]
    assert items.keys["missing_on_old"] == [["500"]]
    assert items.keys["different"] == [["80"]]


# -- boundary checks: deletes moving records across page boundaries while the lister pages ---------------
class ShiftingList:
    """A json-server-like list (insertion order, `_page`/`_limit`) that makes the changes `after[n]`
    once it has answered its n-th request (pages and one-record checks alike): a delete there shifts
    every later record."""

    def __init__(self, count: int) -> None:
        self.rows: list[dict[str, Any]] = [{"id": n} for n in range(1, count + 1)]
        self.pages_served = 0
        self.checks = 0
        self.after: dict[int, list[Any]] = {}

    def delete(self, *ids: int) -> None:
        self.rows = [row for row in self.rows if row["id"] not in ids]

    def recreate(self, record_id: int) -> None:
        self.delete(record_id)
        self.rows.append({"id": record_id})

    def app(self) -> web.Application:
        async def listing(request: web.Request) -> web.Response:
            page, limit = int(request.query["_page"]), int(request.query["_limit"])
            rows = self.rows[(page - 1) * limit : page * limit]
            if limit == 1:
                self.checks += 1
            else:
                self.pages_served += 1
            for change in self.after.get(self.pages_served + self.checks, []):
                change(self)
            return web.json_response(rows, headers={"X-Total-Count": str(len(self.rows))})

        app = web.Application()
        app.router.add_get("/items", listing)
        return app


async def _list_shifting(data: ShiftingList, *, check: bool) -> list[Page]:
    runner = web.AppRunner(data.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        resource = RestResource.model_validate(
            {**JSON_SERVER_ITEMS, "paging": "page", "page_size": 10, "check_boundaries": check}
        )
        return await _list_all(f"http://127.0.0.1:{runner.addresses[0][1]}", resource)
    finally:
        await runner.cleanup()


# Unshifted, the requests go: page 1, page 2, check, page 3, check, ... (10 records a page).
SHIFTS = {
    # request answered → what changes right after it
    "one delete on a page read": {2: [lambda d: d.delete(3)]},
    "the anchor itself goes": {4: [lambda d: d.delete(20)]},
    "more than a page goes": {4: [lambda d: d.delete(*range(2, 16))]},
    "deletes at two boundaries": {2: [lambda d: d.delete(1)], 6: [lambda d: d.delete(12, 25)]},
    # Between page 2's check and page 3: everything listed goes but record 5, which comes back at the
    # end, alone on the page read back first. Found at a later index than it was listed at, it is not
    # the record listed; taken for it, the lister would go on from there and miss 21-30.
    "a listed record created again": {
        3: [lambda d: d.delete(*range(1, 21), *range(31, 46)), lambda d: d.recreate(5)]
    },
}


# Cases of where to read back from rather than of the check: without checks the same requests fall
# elsewhere (no one-record reads), so they have no unchecked control.
READ_BACK_ONLY = {"a listed record created again"}


@pytest.mark.parametrize("shift", list(SHIFTS))
async def test_a_boundary_check_finds_every_record_a_delete_moved_onto_a_page_read_already(
    shift: str,
) -> None:
    for check in (True, False) if shift not in READ_BACK_ONLY else (True,):
        data = ShiftingList(45)
        data.after = SHIFTS[shift]
        before = {row["id"] for row in data.rows}
        pages = await _list_shifting(data, check=check)
        stayed = before & {row["id"] for row in data.rows}
        listed = {item["id"] for page in pages for item in page.items}
        if check:
            assert stayed <= listed, f"missed {sorted(stayed - listed)}"
            assert any(page.again for page in pages)  # read back: the shift was seen
            assert data.checks >= len([p for p in pages if not p.again]) - 1
        else:
            assert stayed - listed, "the shift moved nothing across a boundary: the test proved nothing"


async def test_an_unshifted_collection_is_read_once() -> None:
    data = ShiftingList(45)
    pages = await _list_shifting(data, check=True)
    assert [item["id"] for page in pages for item in page.items] == list(range(1, 46))
    assert not any(page.again for page in pages)
    assert (data.pages_served, data.checks) == (5, 4)
