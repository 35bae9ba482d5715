"""A small synchronous client of the admin API, for the CLI. Errors come back as `AdminClientError`
carrying the API's `{"error", "detail"}` so the CLI can print them as they are."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx


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
    def __init__(self, base_url: str, token: str | None, *, timeout_s: float = 10.0) -> None:
        import httpx  # here, not at the top: every `cutover` command imports this module, few call the API

        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._base_url = base_url.rstrip("/")
        self._http: httpx.Client = httpx.Client(base_url=self._base_url, headers=headers, timeout=timeout_s)

    def close(self) -> None:
        self._http.close()

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        return self._call("GET", path, params={k: v for k, v in params.items() if v is not None})

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
        raise AdminClientError(
            response.status_code, str(body.get("error", "error")), str(body.get("detail", "")), body
        )
