"""Apply intents by replaying the write to the mirrored backend over HTTP.

Idempotent by construction: every replay carries `Idempotency-Key: <intent id>`, so a backend that honours
the header applies a re-delivered intent once. Creates converge on one identity: when the authoritative
side answered with a `Location` header, the mirror gets a `PUT` to that location; otherwise, when its
JSON body carried the configured id field, the id is put into the replayed body. A `DELETE` the mirror
answers 404 or 410 is already applied.

State transfer: for resources listed in `worker.state_transfer`, the apply does not replay the write.
It reads the key's current representation from the authoritative side and PUTs it to the mirror (or
DELETEs it there when the authoritative side answers 404/410). Replay applies writes in stream order,
which can differ from the order the authoritative side applied them when several proxies write one key
at once; state transfer makes the last apply of a key carry the key's final state whatever the order.

Errors:
    ApplyError
    ├── TransientApplyError   408/425/429/5xx: retry with backoff, up to `max_attempts`
    │   └── UnreachableError  connection failure or timeout: an outage, retried without limit
    └── PermanentApplyError   any other 4xx: retrying cannot help; dead-letter and stop the tenant
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import aiohttp
import orjson
from opentelemetry import trace

from buffer_worker.intent import Intent
from config.settings import Settings
from routing.phases import Side
from telemetry.tracing import traceparent_of

_TRANSIENT_STATUSES = frozenset({408, 425, 429})


class ApplyError(Exception):
    def __init__(self, intent: Intent, detail: str) -> None:
        self.intent = intent
        self.detail = detail
        super().__init__(f"intent {intent.intent_id} of tenant {intent.tenant!r}: {detail}")


class TransientApplyError(ApplyError):
    pass


class UnreachableError(TransientApplyError):
    pass


class PermanentApplyError(ApplyError):
    pass


class HttpApplier:
    def __init__(self, settings: Settings) -> None:
        self._base_paths = {
            side: urlsplit(getattr(settings.backends, side.value).url.get_secret_value()).path.rstrip("/")
            for side in Side
        }
        self._bases = {
            side: getattr(settings.backends, side.value).url.get_secret_value().rstrip("/") for side in Side
        }
        self._rewrites = {side: getattr(settings.backends, side.value).headers for side in Side}
        self._tenant_header = settings.tenant.header
        self._id_field = settings.worker.id_field
        self._timeout = aiohttp.ClientTimeout(total=settings.worker.apply_timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._state_transfer = [_pattern(path) for path in settings.worker.state_transfer]
        # One pool serves both sides: keep idle connections no longer than either backend's limit allows.
        self._keepalive_s = min(
            settings.backends.old.idle_keepalive_s, settings.backends.new.idle_keepalive_s
        )

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(keepalive_timeout=self._keepalive_s),
            timeout=self._timeout,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def apply(self, intent: Intent) -> None:
        assert self._session is not None, "HttpApplier.start() was not awaited"
        method, path, body = self._replay_form(intent)
        if any(pattern.fullmatch(path) for pattern in self._state_transfer):
            await self.transfer_state(intent, path)
            return
        await self._send(intent, method, path, intent.query, body, self._headers(intent, intent.target))

    async def transfer_state(self, intent: Intent, path: str) -> str:
        """Set the key at `path` on `intent.target` to its current state on the other (authoritative) side:
        a PUT of the representation it answers, or a DELETE when it has none. Returns the method sent.
        Also what `cutover verify --repair` sends for a differing REST record."""
        assert self._session is not None, "HttpApplier.start() was not awaited"
        headers = self._headers(intent, intent.target)
        method, body, content_type = await self._current_state(intent, path)
        if content_type is not None:
            headers["content-type"] = content_type
        await self._send(intent, method, path, "", body, headers)
        return method

    async def _send(
        self, intent: Intent, method: str, path: str, query: str, body: bytes, headers: dict[str, str]
    ) -> None:
        assert self._session is not None
        url = f"{self._bases[intent.target]}{path}" + (f"?{query}" if query else "")
        try:
            async with self._session.request(
                method, url, data=body, headers=headers, allow_redirects=False
            ) as response:
                status = response.status
                text = (await response.read())[:300]
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UnreachableError(intent, f"{intent.target} unreachable: {type(exc).__name__}") from exc
        if 200 <= status < 300 or (method == "DELETE" and status in (404, 410)):
            return
        detail = f"{intent.target} answered {status} to {method} {path}: {text.decode(errors='replace')}"
        if status >= 500 or status in _TRANSIENT_STATUSES:
            raise TransientApplyError(intent, detail)
        raise PermanentApplyError(intent, detail)

    def _replay_form(self, intent: Intent) -> tuple[str, str, bytes]:
        if intent.method != "POST" or not 200 <= intent.status < 300:
            return intent.method, intent.path, intent.body
        for name, value in intent.response_headers:
            if name.lower() == "location":
                location = urlsplit(value)
                # Only a location on the same service names the created resource. It is in the
                # authoritative backend's URL space: strip that backend's base path to get the path as
                # clients (and so the mirror's base URL) see it.
                if location.path.startswith("/") and not location.netloc:
                    base = self._base_paths[intent.target.other]
                    path = location.path
                    if base and (path == base or path.startswith(base + "/")):
                        path = path[len(base) :] or "/"
                    return "PUT", path, intent.body
        created_id = _json_field(intent.response_body, self._id_field)
        if created_id is not None:
            document = _json_object(intent.body)
            if document is not None:
                document[self._id_field] = created_id
                return "POST", intent.path, orjson.dumps(document)
        return intent.method, intent.path, intent.body

    async def _current_state(self, intent: Intent, path: str) -> tuple[str, bytes, str | None]:
        """The key's state on the authoritative side, as the write that sets the mirror to it."""
        assert self._session is not None
        source = intent.target.other
        headers = self._headers(intent, source)
        headers.pop("idempotency-key", None)
        headers.pop("content-type", None)
        try:
            async with self._session.get(f"{self._bases[source]}{path}", headers=headers) as response:
                status = response.status
                body = await response.read()
                content_type = response.headers.get("content-type")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UnreachableError(
                intent, f"{source} unreachable for state transfer: {type(exc).__name__}"
            ) from exc
        if status == 200:
            return "PUT", body, content_type
        if status in (404, 410):
            return "DELETE", b"", None
        raise TransientApplyError(intent, f"{source} answered {status} to the state-transfer read of {path}")

    def _headers(self, intent: Intent, side: Side) -> dict[str, str]:
        rewrite = self._rewrites[side]
        headers = {name.lower(): value for name, value in intent.headers}
        for name in rewrite.remove:
            headers.pop(name.lower(), None)
        headers.update((name.lower(), value.get_secret_value()) for name, value in rewrite.set.items())
        if intent.tenant:
            headers[self._tenant_header.lower()] = intent.tenant
        headers["idempotency-key"] = intent.intent_id
        # The worker's span for this apply, when tracing: the mirror continues the write's trace.
        traceparent = traceparent_of(trace.get_current_span())
        if traceparent is not None:
            headers["traceparent"] = traceparent
        return headers


def _json_object(body: bytes) -> dict[str, object] | None:
    try:
        value = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _json_field(body: bytes, field: str) -> object | None:
    document = _json_object(body)
    return None if document is None else document.get(field)


def _pattern(path: str) -> re.Pattern[str]:
    """`/items/{key}` → a regex where each `{…}` is one path segment."""
    parts = re.split(r"\{[^/{}]+\}", path)
    return re.compile("[^/]+".join(re.escape(part) for part in parts))
