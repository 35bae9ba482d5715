"""The backend client: one per backend and process, built from `BackendSettings`; transport errors are
translated here, once, into `BackendFailure`.

Every component that sends a request to a backend uses it (the data plane, the shadow process, the
worker's HTTP applier, REST verification and repair): the same base URL, credentials (`user:password@`
in the URL become `Authorization: Basic`, unless `headers.set` names an Authorization), header
rewrites and timeouts, whoever sends. Three hand-made clients once disagreed on header precedence, and
one of them crashed the worker on a URL with credentials plus `headers.set.Authorization`.

aiohttp rather than httpx on the request path: under 32 concurrent connections httpx's pool serialises
(encode/httpx#3215) and a FastAPI + httpx hop measured ~0.5k req/s against ~6k for raw ASGI + aiohttp on
this machine (see BENCHMARKS.md). The client is configured as a transparent proxy: no automatic
decompression, no default User-Agent / Accept headers, no cookie jar, no redirects followed.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

import aiohttp
import orjson
from multidict import CIMultiDict, CIMultiDictProxy
from pydantic import SecretStr

from backends.errors import BackendFailure, FailureKind
from backends.headers import IpNetwork, RequestHeaderRewriter
from config.settings import BackendSettings, HeaderRewrite, Settings
from routing.phases import Side

_SKIP_AUTO_HEADERS = frozenset({"User-Agent", "Accept", "Accept-Encoding", "Content-Type"})
_NO_AUTO_HEADERS: CIMultiDict[None] = CIMultiDict((name, None) for name in sorted(_SKIP_AUTO_HEADERS))


class _TransparentRequest(aiohttp.ClientRequest):
    """A request that adds no header the client did not send (no default Accept, Accept-Encoding,
    User-Agent or Content-Type).

    The stock way, `skip_auto_headers`, rebuilds a multidict of the skipped names and copies the request
    headers on every request (~5 % of a proxied request's CPU here); the outcome is the same fixed set
    each time, so it is built once. Relies on `ClientRequest.update_auto_headers` and the
    `_skip_auto_headers` attribute it sets; `tests/proxy/test_upstream.py` pins that behaviour.
    """

    def update_auto_headers(self, skip_auto_headers: Any) -> None:
        self._skip_auto_headers = _NO_AUTO_HEADERS


@dataclass(frozen=True, slots=True)
class Answer:
    """A backend's whole answer to `BackendClient.call`."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    # The `Link` header's links (RFC 8288) as (relation type, absolute URL) pairs, one per relation type
    # a link names (`rel="next last"` is two), in lower case; empty without the header.
    links: tuple[tuple[str, str], ...] = ()

    def link(self, rel: str) -> str | None:
        """The URL of the first link of relation type `rel`, or None."""
        return next((url for name, url in self.links if name == rel), None)

    def json(self) -> Any:
        """The body as JSON; `ValueError` (orjson's decode error) when it is not."""
        return orjson.loads(self.body)


class BackendClient:
    """A backend: its base URL, header rewriting, timeouts and connection pool."""

    def __init__(
        self, side: Side, settings: BackendSettings, *, trusted_proxies: Sequence[IpNetwork] = ()
    ) -> None:
        self.side = side
        self.name = side.value
        parts = urlsplit(settings.url.get_secret_value())
        netloc = parts.hostname or ""
        netloc = f"[{netloc}]" if ":" in netloc else netloc
        netloc += f":{parts.port}" if parts.port else ""
        self._base = urlunsplit((parts.scheme, netloc, parts.path, "", "")).rstrip("/")
        # Shown in errors and logs: never the userinfo (it may hold credentials).
        self.display = f"{parts.scheme}://{netloc}"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.rewriter = RequestHeaderRewriter(
            _with_url_credentials(settings.headers, parts), trusted_proxies=trusted_proxies
        )
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=settings.connect_timeout_s, sock_read=settings.timeout_s
        )
        self._connect_timeout_s = settings.connect_timeout_s
        self._call_timeouts: dict[float, aiohttp.ClientTimeout] = {}  # by `timeout_s`: a copy sends 1000s
        self._max_connections = settings.max_connections
        self._keepalive_s = settings.idle_keepalive_s
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def of(cls, settings: Settings, side: Side) -> BackendClient:
        """The client for `side`, as every component builds it."""
        return cls(side, getattr(settings.backends, side.value), trusted_proxies=settings.trusted_proxies)

    def url_for(self, raw_path: str, query: str) -> str:
        return f"{self._base}{raw_path}?{query}" if query else f"{self._base}{raw_path}"

    def relative(self, url: str) -> tuple[str, str]:
        """The path (as clients see it: this backend's base path taken off) and the query of a URL the
        backend answered with, e.g. a `Link`. Only those are requested, from this backend: a link's own
        origin is never contacted, so credentials stay with the configured backend."""
        parts = urlsplit(url)
        base = urlsplit(self._base).path
        path = parts.path or "/"
        if base and (path == base or path.startswith(base + "/")):
            path = path[len(base) :] or "/"
        return path, parts.query

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self._max_connections,
            limit_per_host=0,
            keepalive_timeout=self._keepalive_s,
            ttl_dns_cache=60,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            request_class=_TransparentRequest,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(
        self,
        method: str,
        url: str,
        headers: list[tuple[str, str]],
        body: bytes,
        *,
        timeout: aiohttp.ClientTimeout | None = None,  # noqa: ASYNC109 - aiohttp's own per-request timeout
    ) -> aiohttp.ClientResponse:
        """Send and return the response with its body unread; the caller must `release()` it."""
        assert self._session is not None, "BackendClient.start() was not awaited"
        kwargs: dict[str, Any] = {
            "headers": headers,
            "data": body if body or method not in ("GET", "HEAD", "OPTIONS") else None,
            "allow_redirects": False,
            "compress": None,
        }
        if timeout is not None:
            kwargs["timeout"] = timeout
        try:
            return await self._session.request(method, url, **kwargs)
        except ValueError as exc:  # aiohttp refuses to build the request (e.g. a malformed header value)
            raise BackendFailure(
                self.name, "invalid_request", f"request to backend {self.name} could not be built: {exc}"
            ) from exc
        except TimeoutError as exc:
            raise self._failure("timeout", exc) from exc
        except aiohttp.ClientError as exc:
            raise self._failure(_kind(exc), exc) from exc

    async def read_body(self, response: aiohttp.ClientResponse) -> bytes:
        """Read a whole (small) body, translating a mid-body failure."""
        try:
            return await response.read()
        except TimeoutError as exc:
            raise self._failure("timeout", exc) from exc
        except aiohttp.ClientError as exc:
            raise self._failure(_kind(exc), exc) from exc

    async def call(
        self,
        method: str,
        path: str,
        *,
        query: str = "",
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        timeout_s: float | None = None,
    ) -> Answer:
        """One request on cutover's own behalf (mirroring, state transfer, verification, repair), its
        answer read whole. `headers` are the request's own (content type, tenant, idempotency key); this
        backend's rewrites and credentials are applied to them exactly as to a client's request. With
        `timeout_s`, the whole call is bounded by it instead of the per-read timeout."""
        timeout = None
        if timeout_s is not None:
            timeout = self._call_timeouts.get(timeout_s)
            if timeout is None:
                timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=self._connect_timeout_s)
                self._call_timeouts[timeout_s] = timeout
        response = await self.request(
            method, self.url_for(path, query), self.rewriter.internal(headers), body, timeout=timeout
        )
        try:
            content = await self.read_body(response)
        finally:
            response.release()
        return Answer(response.status, response.headers, content, _links(response))

    def _failure(self, kind: FailureKind, exc: BaseException) -> BackendFailure:
        what = {
            "timeout": "did not answer in time",
            "bad_response": f"answered malformed HTTP ({_first_line(exc)})",
        }.get(kind, f"could not be reached ({type(exc).__name__})")
        return BackendFailure(self.name, kind, f"backend {self.name} ({self.display}) {what}")


def _links(response: aiohttp.ClientResponse) -> tuple[tuple[str, str], ...]:
    """aiohttp's parse of the `Link` header (relative references resolved against the request URL), one
    pair per relation type: aiohttp keys a link by its whole `rel`, which may name several."""
    if "Link" not in response.headers:
        return ()
    found: list[tuple[str, str]] = []
    for link in response.links.values():
        for rel in str(link.get("rel", "")).lower().split():
            found.append((rel, str(link["url"])))
    return tuple(found)


def _kind(exc: aiohttp.ClientError) -> FailureKind:
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return "timeout"
    # A response the parser refused (bad status line, duplicate Content-Length), or a body that ended
    # before its announced length: the backend answered, but not in HTTP.
    if isinstance(exc, aiohttp.ClientResponseError | aiohttp.ClientPayloadError):
        return "bad_response"
    return "unreachable"


def _first_line(exc: BaseException) -> str:
    text = exc.message if isinstance(exc, aiohttp.ClientResponseError) else str(exc)
    return text.split("\n", 1)[0].strip().rstrip(":")[:120] or type(exc).__name__


def _with_url_credentials(rewrite: HeaderRewrite, parts: SplitResult) -> HeaderRewrite:
    """Credentials in a backend URL become that backend's `Authorization: Basic` header. They are the
    operator's choice for this backend, so they replace the client's own Authorization (unless
    `headers.set` names one explicitly, which wins)."""
    if parts.username is None or any(name.lower() == "authorization" for name in rewrite.set):
        return rewrite
    pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
    basic = SecretStr("Basic " + base64.b64encode(pair).decode())
    return HeaderRewrite(set={**rewrite.set, "Authorization": basic}, remove=rewrite.remove)
