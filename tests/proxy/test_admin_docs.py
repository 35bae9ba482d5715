"""The admin API's documentation pages work without the internet: every script, style sheet, image and
document they load is on the admin port itself, and answers."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest

from tests.support.proxies import Proxy

# Whatever a page makes the browser load: src/href attributes, and the URLs the inline script passes
# to Swagger UI or ReDoc (`url: '/openapi.json'`, `spec-url="/openapi.json"`).
_LOADED = re.compile(r"""(?:\bsrc|\bhref|\bspec-url)\s*=\s*["']([^"']+)["']|\burl\s*:\s*["']([^"']+)["']""")


def loaded_urls(html: str) -> list[str]:
    return [a or b for a, b in _LOADED.findall(html)]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_pages_load_only_same_origin_urls_that_answer(proxy: Proxy, page: str) -> None:
    response = await proxy.anon_admin.get(page)
    assert response.status_code == 200
    assert "text/html" in response.headers["content-type"]
    urls = loaded_urls(response.text)
    assert len(urls) >= 2, f"the test proved nothing: {response.text[:500]}"
    assert "/openapi.json" in urls
    for url in urls:
        parts = urlsplit(url)
        assert not parts.scheme, f"{page} loads {url}"
        assert not parts.netloc, f"{page} loads {url}"
        assert url.startswith("/"), f"{page} loads {url}"
        asset = await proxy.anon_admin.get(url)
        assert asset.status_code == 200, f"{page} loads {url}: {asset.status_code}"
        assert asset.content, url
    assert not re.search(r"https?://|//cdn|jsdelivr|unpkg|googleapis", response.text), response.text


async def test_a_missing_asset_is_a_404_in_the_api_error_shape(proxy: Proxy) -> None:
    response = await proxy.anon_admin.get("/docs/static/no-such-file.js")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
