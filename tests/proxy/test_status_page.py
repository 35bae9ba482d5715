"""The status page end to end: a running proxy with real traffic, a divergent shadow, a dead letter made by a
real worker, loaded in headless Chromium (selenium + chromedriver); the figures it shows must be the admin
API's. Also: sign-in by `?token=` sets an HttpOnly cookie that is good for the page and nothing else."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from buffer_worker.http_applier import HttpApplier
from buffer_worker.worker import Worker
from routing.phases import Phase
from tests.support.demo_backends import DemoBackend
from tests.support.proxies import Proxy, ProxyFactory
from tests.support.waits import wait_for

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
async def status_proxy(make_proxy: ProxyFactory) -> Proxy:
    """A proxy (the test's own buffer prefix: this test runs a worker on it) and a fast-refreshing page."""
    return await make_proxy(
        {
            "worker": {"max_attempts": 1, "retry_initial_s": 0.01, "retry_max_s": 0.05, "block_ms": 50},
            "operator": {"status_page": {"refresh_s": 0.5}, "seen_tenants": {"flush_interval_s": 0.1}},
        }
    )


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
  last_links: map("a[data-last-divergence]", "data-last-divergence", (n) => n.getAttribute("href")),
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
    assert cookie is not None
    assert cookie["httpOnly"]
    assert cookie["sameSite"] == "Strict"
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
    assert int(after["figures"]["shadow.divergent"]) >= 8
    assert after["figures"]["buffer.dead_letters.total"] != "0"
    assert {t: page["phases"][t] for t in tenants} == after["phases"]
    assert proxy.tokens.write_name in page["who"][shadowed]  # who made the last change
    assert page["dead"] == after["dead"]
    assert page["dead"][mirrored] == "1"
    assert page["divergent"][shadowed] == after["divergent"][shadowed]
    assert page["top_fields"][shadowed] == after["top_fields"][shadowed]
    assert "status (8)" in page["top_fields"][shadowed]  # old has the item, new does not (no worker)
    newest = (await proxy.admin.get(f"/tenants/{shadowed}/divergences", params={"limit": 1})).json()
    assert page["last_links"][shadowed] == f"/status/divergence/{shadowed}/{newest['divergences'][0]['id']}"
    assert len(page["lags"]) == len(after["lags"]) == 4
    for shown, (low, high) in zip(page["lags"], zip(before["lags"], after["lags"], strict=True), strict=True):
        assert low - 0.1 <= shown <= high + 0.1  # lag grows with time: between the two API reads
    assert max(after["lags"]) > 0  # the write waiting behind the dead letter
    assert page["rates"] == ["0.0", "0.0"]  # no traffic between the last two polls


async def test_sign_in_and_what_the_cookie_is_good_for(status_proxy: Proxy) -> None:
    proxy = status_proxy
    anonymous = await proxy.anon_admin.get("/status")
    assert anonymous.status_code == 401
    assert "/status?token=" in anonymous.text
    assert (await proxy.anon_admin.get("/status/data")).json()["error"] == "unauthorized"
    wrong = await proxy.anon_admin.get("/status", params={"token": "not-a-token-of-this-proxy"})
    assert wrong.status_code == 401
    assert "set-cookie" not in wrong.headers

    signed_in = await proxy.anon_admin.get("/status", params={"token": proxy.tokens.read})
    assert signed_in.status_code == 303
    assert signed_in.headers["location"] == "/status"
    set_cookie = signed_in.headers["set-cookie"]
    assert "HttpOnly" in set_cookie
    assert "SameSite=strict" in set_cookie
    assert "Path=/status" in set_cookie
    cookie = signed_in.cookies["cutover_status"]
    async with httpx.AsyncClient(
        base_url=proxy.admin_server.url, cookies={"cutover_status": cookie}
    ) as browser:
        page = await browser.get("/status")
        assert page.status_code == 200
        assert "<title>cutover status</title>" in page.text
        assert page.headers["cache-control"] == "no-store"
        data = await browser.get("/status/data")
        assert data.status_code == 200
        assert data.json()["viewer"] == proxy.tokens.read_name
        # The cookie opens the page and nothing else of the admin API: no read, and above all no write.
        assert (await browser.get("/stats")).status_code == 401
        change = await browser.put(
            f"/tenants/st-{uuid.uuid4().hex[:6]}/phase", json={"phase": "dual_write", "reason": "x"}
        )
        assert change.status_code == 401
    bearer = await proxy.admin.get("/status/data")  # a bearer token works too (scripts)
    assert bearer.status_code == 200
    assert set(bearer.json()) >= {"tenants", "requests", "shadow", "buffer"}


_READ_SERIES = """
const all = (selector) => Array.from(document.querySelectorAll(selector));
const line = (key, side) => {
  const node = document.querySelector(`svg[data-series="${key}"] polyline[data-side="${side}"]`);
  return node ? {n: Number(node.dataset.n), values: JSON.parse(node.dataset.values),
                 points: node.getAttribute("points")} : null;
};
const tenants = arguments[0];
return {
  at: document.body.dataset.seriesAt || null,
  cards: all("[data-series-tenant]").map((n) => n.dataset.seriesTenant),
  series: Object.fromEntries(tenants.map((t) => [t, {
    totals: Object.fromEntries(["old", "new"].map((s) => {
      const n = document.querySelector(`[data-total="${t}|${s}"]`);
      return [s, n ? Number(n.innerText) : null];
    })),
    rate_old: line(t + "|rate", "old"), rate_new: line(t + "|rate", "new"),
    p99_new: line(t + "|p99", "new"), divergence: line(t + "|divergence", "div"),
    links: all(`[data-series-tenant="${t}"] a[data-divergence]`).map((a) => a.getAttribute("href")),
  }])),
};
"""


async def test_series_of_the_last_hour_divergence_links_and_a_phone_screen(
    make_proxy: ProxyFactory, browser: webdriver.Chrome, new: DemoBackend
) -> None:
    proxy = await make_proxy(
        {
            "operator": {
                "status_page": {"refresh_s": 0.5, "series_step_s": 2},
                "health": {"bucket_s": 1, "flush_interval_s": 0.1, "history_s": 60, "window_s": 30},
            },
            "divergence": {"flush_interval_s": 0.1},
        }
    )
    run = uuid.uuid4().hex[:6]
    shadowed, live = f"ss{run}-shadow", f"ss{run}-live"
    await proxy.set_phase_api(shadowed, Phase.SHADOW)
    await proxy.set_phase_api(live, Phase.LIVE)
    new.faults.stamp = True  # new adds a field: every shadowed read of `shadowed` diverges
    for _ in range(6):
        assert (await proxy.client.get("/items", headers={"X-Tenant-ID": shadowed})).status_code == 200
    for _ in range(4):
        response = await proxy.client.get("/items", headers={"X-Tenant-ID": live})
        assert response.headers["x-cutover-served-by"] == "new"

    async def settled() -> bool:
        bodies = [(await proxy.admin.get(f"/tenants/{t}/health")).json() for t in (shadowed, live)]
        return bool(
            bodies[0]["traffic"]["sides"]["old"]["requests"] == 6
            and bodies[0]["shadow"]["divergent"] == 6
            and bodies[1]["traffic"]["sides"]["new"]["requests"] == 4
        )

    await wait_for(settled, timeout_s=15)
    samples = (await proxy.admin.get(f"/tenants/{shadowed}/divergences")).json()["divergences"]
    assert samples, "no divergence stored: the test proved nothing"

    await in_thread(browser.get, f"{proxy.admin_server.url}/status?token={proxy.tokens.read}")
    query = f"?tenant={shadowed}&tenant={live}"
    await in_thread(browser.get, f"{proxy.admin_server.url}/status{query}")
    tenants = [shadowed, live]
    page: dict[str, Any] = {}
    for _ in range(100):
        page = await in_thread(browser.execute_script, _READ_SERIES, tenants)
        if page["at"] and page["series"][live]["rate_new"]:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the series were not drawn")
    assert page["cards"][:2] == tenants  # pinned first
    mine, other = page["series"][shadowed], page["series"][live]
    assert mine["totals"] == {"old": 6, "new": 0}
    assert other["totals"] == {"old": 0, "new": 4}
    for line in (mine["rate_old"], other["rate_new"], other["p99_new"], mine["divergence"]):
        assert line["n"] >= 1, line
        assert line["points"], line
        assert max(v for v in line["values"] if v is not None) > 0
    assert max(v for v in mine["divergence"]["values"] if v is not None) == 1.0  # 6 of 6 answered
    assert set(mine["rate_new"]["values"]) == {0}  # nothing was sent to new for this tenant
    expected = [f"/status/divergence/{shadowed}/{s['id']}" for s in samples[:5]]
    assert mine["links"] == expected

    # A divergence link opens its stored sample.
    link = browser.find_element(By.CSS_SELECTOR, f'a[href="{expected[0]}"]')
    await in_thread(link.click)
    await drawn(browser, "loaded")
    shown = await in_thread(browser.execute_script, _READ_SAMPLE)
    sample = samples[0]
    assert browser.current_url.endswith(expected[0])
    assert shown["id"] == str(sample["id"])
    query_text = f"?{sample['query']}" if sample["query"] else ""
    assert shown["request"] == f"{sample['method']} {sample['path']}{query_text}"
    assert shown["paths"] == [d["path"] for d in sample["differences"]]

    # A phone: 390 px wide. The pages never scroll sideways; wide tables scroll inside their box.
    await in_thread(
        browser.execute_cdp_cmd,
        "Emulation.setDeviceMetricsOverride",
        {"width": 390, "height": 844, "deviceScaleFactor": 3, "mobile": True},
    )
    try:
        for path, mark in ((f"/status{query}", "seriesAt"), (expected[0], "loaded")):
            await in_thread(browser.get, f"{proxy.admin_server.url}{path}")
            await drawn(browser, mark)
            if mark == "seriesAt":
                await drawn(browser, "generatedAt")
            widths = await in_thread(
                browser.execute_script, "return [window.innerWidth, document.documentElement.scrollWidth]"
            )
            assert widths[1] <= 390, f"{path} scrolls sideways at 390 px: {widths[1]} px wide"
            assert widths[0] == 390, widths  # a mobile browser zooms out a page wider than the screen
    finally:
        await in_thread(browser.execute_cdp_cmd, "Emulation.clearDeviceMetricsOverride", {})


_READ_SAMPLE = """
return {
  id: document.body.dataset.loaded,
  request: document.querySelector("[data-fact=request]").innerText,
  paths: Array.from(document.querySelectorAll("tr[data-path]")).map((row) => row.dataset.path),
};
"""


async def drawn(driver: webdriver.Chrome, mark: str) -> None:
    """Wait until the page's script has set `document.body.dataset[mark]` (it does after drawing)."""
    for _ in range(100):
        if await in_thread(driver.execute_script, f"return document.body.dataset.{mark} || null"):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the page did not draw ({mark})")


async def test_series_and_sample_routes_need_a_viewer_and_check_their_input(status_proxy: Proxy) -> None:
    proxy = status_proxy
    for path in ("/status/series", "/status/divergence/t1/1/data"):
        response = await proxy.anon_admin.get(path)
        assert response.status_code == 401
        assert response.json()["error"] == "unauthorized"
    page = await proxy.anon_admin.get("/status/divergence/t1/1")
    assert page.status_code == 401
    assert "/status?token=" in page.text
    pinned = [f"pin-{uuid.uuid4().hex[:6]}", f"pin-{uuid.uuid4().hex[:6]}"]
    series = (await proxy.admin.get("/status/series", params={"tenants": ",".join(pinned)})).json()
    assert [t["tenant"] for t in series["tenants"][:2]] == pinned  # shown even without traffic
    assert series["tenants"][0]["phase"] == "legacy"
    assert series["tenants"][0]["divergences"] == []
    bad = await proxy.admin.get("/status/series", params={"tenants": "ok,not ok"})
    assert bad.status_code == 400
    assert bad.json()["error"] == "invalid_tenant"
    many = await proxy.admin.get("/status/series", params={"tenants": ",".join(f"t{n}" for n in range(11))})
    assert many.status_code == 422
    assert many.json()["problems"][0]["field"] == "query.tenants"
    missing = await proxy.admin.get("/status/divergence/t1/987654321/data")
    assert missing.status_code == 404
    assert missing.json()["error"] == "not_found"
    assert (await proxy.admin.get("/status/divergence/t1/0")).status_code == 404
    assert (await proxy.admin.get("/status/divergence/not%20ok/1/data")).status_code == 400
