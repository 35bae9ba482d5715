"""Apply intents by replaying the write to the mirrored backend over HTTP.

Idempotent by construction: every replay carries `Idempotency-Key: <intent id>`, so a backend that honours
the header applies a re-delivered intent once. Creates converge on one identity: when the authoritative
side answered with a `Location` header, the mirror gets a `PUT` to that location; otherwise, when its
JSON body carried the configured id field, the id is put into the replayed body. A `DELETE` the mirror
answers 404 or 410 is already applied.

Errors:
    ApplyError
    ├── TransientApplyError   408/425/429/5xx: retry with backoff, up to `max_attempts`
    │   └── UnreachableError  connection failure or timeout: an outage, retried without limit
    └── PermanentApplyError   any other 4xx: retrying cannot help; dead-letter and stop the tenant
"""

from __future__ import annotations

from urllib.parse import urlsplit

import aiohttp
import orjson

from buffer_worker.intent import Intent
from config.settings import Settings
from routing.phases import Side

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

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=self._timeout, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def apply(self, intent: Intent) -> None:
        assert self._session is not None, "HttpApplier.start() was not awaited"
        method, path, body = self._replay_form(intent)
        url = f"{self._bases[intent.target]}{path}" + (f"?{intent.query}" if intent.query else "")
        headers = self._headers(intent)
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

    def _headers(self, intent: Intent) -> dict[str, str]:
        rewrite = self._rewrites[intent.target]
        headers = {name.lower(): value for name, value in intent.headers}
        for name in rewrite.remove:
            headers.pop(name.lower(), None)
        headers.update((name.lower(), value.get_secret_value()) for name, value in rewrite.set.items())
        if intent.tenant:
            headers[self._tenant_header.lower()] = intent.tenant
        headers["idempotency-key"] = intent.intent_id
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
