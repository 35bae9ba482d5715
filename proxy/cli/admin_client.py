"""A small synchronous client of the admin API, for the CLI. Errors come back as `AdminClientError`
carrying the API's `{"error", "detail"}` so the CLI can print them as they are. Lists come in pages
(`proxy.admin.pages`): `pages` follows `next`, `take` gathers up to a limit."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

from proxy.admin.limits import TENANTS_PAGE_MAX


class AdminClientError(Exception):
    def __init__(
        self, status: int | None, code: str, detail: str, body: dict[str, Any] | None = None
    ) -> None:
        self.status = status
        self.code = code
        self.detail = detail
        self.body = body or {}
        super().__init__(f"{code}: {detail}")


class AdminClient:
    def __init__(
        self, base_url: str, token: str | None, *, timeout_s: float = 10.0, token_source: str = ""
    ) -> None:
        import httpx  # here, not at the top: every `cutover` command imports this module, few call the API

        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._base_url = base_url.rstrip("/")
        self._token_source = token_source  # where the token came from (proxy.cli.target), for a 401
        self._http: httpx.Client = httpx.Client(base_url=self._base_url, headers=headers, timeout=timeout_s)

    def close(self) -> None:
        self._http.close()

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        return self._call("GET", path, params={k: v for k, v in params.items() if v is not None})

    def pages(self, path: str, *, page_size: int, **params: Any) -> Iterator[dict[str, Any]]:
        """Every page of a list, following `next` until the last."""
        after = None
        while True:
            body = self.get(path, limit=page_size, after=after, **params)
            yield body
            after = body.get("next")
            if after is None:
                return

    def take(
        self, path: str, key: str, *, limit: int | None, page_size: int = 1000, **params: Any
    ) -> list[dict[str, Any]]:
        """The items under `key` of a list, page after page, until `limit` (None: all of them)."""
        items: list[dict[str, Any]] = []
        size = page_size if limit is None else max(1, min(page_size, limit))
        for body in self.pages(path, page_size=size, **params):
            items.extend(body[key])
            if limit is not None and len(items) >= limit:
                return items[:limit]
        return items

    def tenants(self, *, limit: int | None = None) -> dict[str, Any]:
        """`GET /tenants` page after page: the first `limit` known tenants in the API's tenant order (all
        when None), in one body of the same shape (`default_phase`, `tenants`, `seen_in_traffic`)."""
        merged: dict[str, Any] = {"tenants": [], "seen_in_traffic": []}
        after, got = None, 0
        while True:
            size = TENANTS_PAGE_MAX if limit is None else min(TENANTS_PAGE_MAX, limit - got)
            page = self.get("/tenants", limit=size, after=after)
            merged["default_phase"] = page["default_phase"]
            for key in ("tenants", "seen_in_traffic"):
                merged[key].extend(page[key])
                got += len(page[key])
            after = page.get("next")
            if after is None or (limit is not None and got >= limit):
                return merged

    def put(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("PUT", path, json=body)

    def post(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        return self._call("POST", path, json=body or {})

    def delete(self, path: str) -> dict[str, Any]:
        return self._call("DELETE", path)

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        import httpx

        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise AdminClientError(
                None,
                "timeout",
                f"the admin API at {self._base_url} did not answer in time: {type(exc).__name__}",
            ) from None
        except httpx.HTTPError as exc:
            raise AdminClientError(
                None, "unreachable", f"cannot reach the admin API at {self._base_url}: {type(exc).__name__}"
            ) from None
        try:
            body = response.json()
        except ValueError:
            body = {"error": "bad_response", "detail": response.text[:200]}
        if response.is_success:
            if not isinstance(body, dict):
                raise AdminClientError(response.status_code, "bad_response", "expected a JSON object")
            return body
        detail = str(body.get("detail", ""))
        if response.status_code == 401 and self._token_source:
            detail += f" (the token from {self._token_source} was refused)"
        raise AdminClientError(response.status_code, str(body.get("error", "error")), detail, body)
