"""The status page end to end: a running proxy with real traffic, a divergent shadow, a dead letter made by a
real worker, loaded in headless Chromium (selenium + chromedriver); the figures it shows must be the admin
API's. Also: sign-in by `?token=` sets an HttpOnly cookie that is good for the page and nothing else."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import httpx
import pytest
import redis.asyncio as aioredis
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from buffer_worker.http_applier import HttpApplier
from buffer_worker.worker import Worker
from routing.phases import Phase
from tests.conftest import REDIS_URL, DemoBackend, Proxy, ProxyFactory, wait_for

pytestmark = pytest.mark.browser

T = TypeVar("T")
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    if CHROMIUM is None or CHROMEDRIVER is None:
        message = "chromium and chromedriver are needed (`make browser-tools` installs them)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1440,900",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


async def in_thread(call: Callable[..., T], *args: Any) -> T:
    """Selenium is synchronous and the servers share this event loop: drive the browser from a thread."""
    return await asyncio.to_thread(call, *args)


@pytest.fixture
async def status_proxy(make_proxy: ProxyFactory) -> AsyncIterator[Proxy]:
    """A proxy with its own buffer prefix (this test runs a worker on it) and a fast-refreshing page."""
    prefix = f"cutover_status_{uuid.uuid4().hex[:10]}"
    yield await make_proxy(
        {
            "buffer": {"key_prefix": prefix},
            "worker": {"max_attempts": 1, "retry_initial_s": 0.01, "retry_max_s": 0.05, "block_ms": 50},
            "operator": {"status_page": {"refresh_s": 0.5}, "seen_tenants": {"flush_interval_s": 0.1}},
        }
    )
    client = aioredis.Redis.from_url(REDIS_URL)
    keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def api_snapshot(proxy: Proxy, tenants: list[str]) -> dict[str, Any]:
    """The figures the page must show, read from the admin API's own endpoints."""
    stats = (await proxy.admin.get("/stats")).json()
    listing = (await proxy.admin.get("/tenants", params={"limit": 5000})).json()
    while listing["next"] is not None:  # every page: the page counts all tenants
        more = (await proxy.admin.get("/tenants", params={"limit": 5000, "after": listing["next"]})).json()
        for key in ("tenants", "seen_in_traffic"):
            more[key] = listing[key] + more[key]
        listing = more
    buffer = (await proxy.admin.get("/buffer")).json()
    by_phase = {p.value: 0 for p in Phase}
    for row in listing["tenants"]:
        by_phase[row["phase"]] += 1
    by_phase[listing["default_phase"]] += len(listing["seen_in_traffic"])
    by_side = {"old": 0, "new": 0}
    for row in stats["requests"]:
        by_side[row["served_by"]] += row["count"]
    divergent, top_fields = {}, {}
    for tenant in tenants:
        samples = (await proxy.admin.get(f"/tenants/{tenant}/divergences", params={"limit": 500})).json()
        divergent[tenant] = len(samples["divergences"])
        paths = Counter(d["path"] for sample in samples["divergences"] for d in sample["differences"])
        top = sorted(paths.items(), key=lambda item: (-item[1], item[0]))[:3]
        top_fields[tenant] = ", ".join(f"{path} ({n})" for path, n in top)
    return {
        "figures": {
            **{f"tenants.by_phase.{p}.count": str(n) for p, n in by_phase.items()},
            "requests.by_side.old": str(by_side["old"]),
            "requests.by_side.new": str(by_side["new"]),
            "fallbacks.served": str(sum(stats["fallbacks"].values())),
            "fallbacks.refused": str(stats["fallback_refused"]),
            "shadow.compared": str(stats["shadow"]["compared"]),
            "shadow.equal": str(stats["shadow"]["equal"]),
            "shadow.divergent": str(stats["shadow"]["divergent"]),
            "buffer.dead_letters.total": str(sum(t["dead_letters"] for t in buffer["tenants"])),
        },
        "phases": {row["tenant"]: row["phase"] for row in listing["tenants"] if row["tenant"] in tenants},
        "dead": {t["tenant"]: str(t["dead_letters"]) for t in buffer["tenants"] if t["dead_letters"]},
        "divergent": {t: str(n) for t, n in divergent.items() if n},
        "top_fields": {t: text for t, text in top_fields.items() if text},
        "lags": [p["lag_s"] for p in buffer["partitions"]],
    }


# One script, so the whole read happens between two renders of the page (a render replaces elements).
_READ_PAGE = """
const all = (selector) => Array.from(document.querySelectorAll(selector));
const map = (selector, key, value) =>
  Object.fromEntries(all(selector).map((n) => [n.getAttribute(key), value(n)]));
return {
  generated_at: document.body.dataset.generatedAt || null,
  figures: map("[data-k]", "data-k", (n) => n.innerText),
  phases: map("li[data-tenant]", "data-tenant", (n) => n.getAttribute("data-phase")),
  who: map("li[data-tenant]", "data-tenant", (n) => n.innerText),
  dead: map("[data-dead]", "data-dead", (n) => n.innerText),
  divergent: map("[data-divergent]", "data-divergent", (n) => n.innerText),
  top_fields: map("tr[data-divergent-tenant]", "data-divergent-tenant", (n) => n.cells[3].innerText),
  lags: all("[data-lag]").map((n) => Number(n.innerText)),
  rates: all("[data-rate]").map((n) => n.innerText),
};
"""


def read_page(driver: webdriver.Chrome) -> dict[str, Any]:
    page: dict[str, Any] = driver.execute_script(_READ_PAGE)
    return page


async def next_render(driver: webdriver.Chrome, after: str | None) -> dict[str, Any]:
    """The page as drawn by a poll that started after `after` (an earlier `generated_at`)."""
    for _ in range(100):
        page = await in_thread(read_page, driver)
        if page["generated_at"] and page["generated_at"] != after:
            return page
        await asyncio.sleep(0.1)
    raise AssertionError("the status page did not refresh")


async def test_status_page_shows_what_the_admin_api_says(
    status_proxy: Proxy, browser: webdriver.Chrome, new: DemoBackend
) -> None:
    proxy = status_proxy
    run = uuid.uuid4().hex[:6]
    mirrored, shadowed, seen = f"st{run}-mirror", f"st{run}-shadow", f"st{run}-seen"
    await proxy.set_phase_api(mirrored, Phase.DUAL_WRITE, reason="start mirroring")
    await proxy.set_phase_api(shadowed, Phase.SHADOW, reason="compare reads")
    stop = asyncio.Event()
    worker = Worker(proxy.runtime.settings, HttpApplier(proxy.runtime.settings), worker_id=f"status-{run}")
    worker_task = asyncio.create_task(worker.run(stop))
    try:
        # A write the new side refuses: the worker gives up after one attempt and dead-letters it.
        new.faults.fail_writes = True
        response = await proxy.client.put("/items/k1", json={"v": 1}, headers={"X-Tenant-ID": mirrored})
        assert response.status_code == 200

        async def dead_lettered() -> bool:
            tenants = (await proxy.admin.get("/buffer")).json()["tenants"]
            return any(t["tenant"] == mirrored and t["dead_letters"] == 1 for t in tenants)

        await wait_for(dead_lettered, timeout_s=10)
    finally:
        stop.set()
        await worker_task
    # With no worker running, the next mirrored write waits in its partition: a lag that grows.
    response = await proxy.client.put("/items/k2", json={"v": 2}, headers={"X-Tenant-ID": mirrored})
    assert response.status_code == 200
    # Shadowed reads of a new side that adds a field: every comparison diverges on it.
    new.faults.stamp = True
    await proxy.client.put("/items/a", json={"v": 2}, headers={"X-Tenant-ID": shadowed})
    for _ in range(8):
        assert (await proxy.client.get("/items/a", headers={"X-Tenant-ID": shadowed})).status_code == 200
    await proxy.client.get("/items", headers={"X-Tenant-ID": seen})

    async def settled() -> bool:
        stats = (await proxy.admin.get("/stats")).json()
        stored = stats["divergences"]["stored"]
        return stats["shadow"]["compared"] >= 8 and stored >= 8 and proxy.runtime.shadow.in_flight == 0

    await wait_for(settled, timeout_s=10)

    # Sign in once with the read token: redirected to /status, token gone from the URL, HttpOnly cookie.
    await in_thread(browser.get, f"{proxy.admin_server.url}/status?token={proxy.tokens.read}")
    assert browser.current_url == f"{proxy.admin_server.url}/status"
    cookie = browser.get_cookie("cutover_status")
    assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert proxy.tokens.read not in cookie["value"]
    assert proxy.tokens.read_name in browser.find_element(By.TAG_NAME, "header").text

    # Background tasks (other proxies of this session flushing seen tenants) may change the API's answer
    # between two reads: compare only against an answer that held on both sides of the page's poll.
    tenants = [mirrored, shadowed]
    page: dict[str, Any] = {"generated_at": None}
    for _attempt in range(5):
        before = await api_snapshot(proxy, tenants)
        page = await next_render(browser, page["generated_at"])
        page = await next_render(browser, page["generated_at"])  # a poll that began after `before`
        after = await api_snapshot(proxy, tenants)
        if {k: v for k, v in before.items() if k != "lags"} == {
            k: v for k, v in after.items() if k != "lags"
        }:
            break
    else:
        raise AssertionError("the admin API's figures kept changing")

    assert {k: page["figures"][k] for k in after["figures"]} == after["figures"]
    assert (
        int(after["figures"]["shadow.divergent"]) >= 8
        and after["figures"]["buffer.dead_letters.total"] != "0"
    )
    assert {t: page["phases"][t] for t in tenants} == after["phases"]
    assert proxy.tokens.write_name in page["who"][shadowed]  # who made the last change
    assert page["dead"] == after["dead"] and page["dead"][mirrored] == "1"
    assert page["divergent"][shadowed] == after["divergent"][shadowed]
    assert page["top_fields"][shadowed] == after["top_fields"][shadowed]
    assert "status (8)" in page["top_fields"][shadowed]  # old has the item, new does not (no worker)
    assert len(page["lags"]) == len(after["lags"]) == 4
    for shown, (low, high) in zip(page["lags"], zip(before["lags"], after["lags"], strict=True), strict=True):
        assert low - 0.1 <= shown <= high + 0.1  # lag grows with time: between the two API reads
    assert max(after["lags"]) > 0  # the write waiting behind the dead letter
    assert page["rates"] == ["0.0", "0.0"]  # no traffic between the last two polls


async def test_sign_in_and_what_the_cookie_is_good_for(status_proxy: Proxy) -> None:
    proxy = status_proxy
    anonymous = await proxy.anon_admin.get("/status")
    assert anonymous.status_code == 401 and "/status?token=" in anonymous.text
    assert (await proxy.anon_admin.get("/status/data")).json()["error"] == "unauthorized"
    wrong = await proxy.anon_admin.get("/status", params={"token": "not-a-token-of-this-proxy"})
    assert wrong.status_code == 401 and "set-cookie" not in wrong.headers

    signed_in = await proxy.anon_admin.get("/status", params={"token": proxy.tokens.read})
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/status"
    set_cookie = signed_in.headers["set-cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=strict" in set_cookie and "Path=/status" in set_cookie
    cookie = signed_in.cookies["cutover_status"]
    async with httpx.AsyncClient(
        base_url=proxy.admin_server.url, cookies={"cutover_status": cookie}
    ) as browser:
        page = await browser.get("/status")
        assert page.status_code == 200 and "<title>cutover status</title>" in page.text
        assert page.headers["cache-control"] == "no-store"
        data = await browser.get("/status/data")
        assert data.status_code == 200 and data.json()["viewer"] == proxy.tokens.read_name
        # The cookie opens the page and nothing else of the admin API: no read, and above all no write.
        assert (await browser.get("/stats")).status_code == 401
        change = await browser.put(
            f"/tenants/st-{uuid.uuid4().hex[:6]}/phase", json={"phase": "dual_write", "reason": "x"}
        )
        assert change.status_code == 401
    bearer = await proxy.admin.get("/status/data")  # a bearer token works too (scripts)
    assert bearer.status_code == 200 and set(bearer.json()) >= {"tenants", "requests", "shadow", "buffer"}
