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

Every request goes through the shared backend client (`backends.BackendClient`), one per side, so a
mirrored write carries the same credentials and header rewrites as the client's own request to that
backend. Failures are `buffer_worker.apply_errors`: an answer of 408/425/429/5xx is transient, any other
4xx permanent, no answer at all (refused, reset, timed out) an outage.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import orjson
from opentelemetry import trace

from backends.client import Answer, BackendClient
from backends.errors import BackendFailure
from buffer_worker.apply_errors import PermanentApplyError, TransientApplyError, UnreachableError
from buffer_worker.intent import Intent
from config.settings import Settings
from routing.phases import Side
from telemetry.tracing import traceparent_of

_TRANSIENT_STATUSES = frozenset({408, 425, 429})


class HttpApplier:
    def __init__(self, settings: Settings) -> None:
        self._base_paths = {
            side: urlsplit(getattr(settings.backends, side.value).url.get_secret_value()).path.rstrip("/")
            for side in Side
        }
        self._backends = {side: BackendClient(side, getattr(settings.backends, side.value)) for side in Side}
        self._tenant_header = settings.tenant.header
        self._id_field = settings.worker.id_field
        self._timeout_s = settings.worker.apply_timeout_s
        self._state_transfer = [_pattern(path) for path in settings.worker.state_transfer]
        self._started = False

    async def start(self) -> None:
        for backend in self._backends.values():
            await backend.start()
        self._started = True

    async def close(self) -> None:
        for backend in self._backends.values():
            await backend.close()

    async def apply(self, intent: Intent) -> None:
        assert self._started, "HttpApplier.start() was not awaited"
        method, path, body = self._replay_form(intent)
        if any(pattern.fullmatch(path) for pattern in self._state_transfer):
            await self.transfer_state(intent, path)
            return
        await self._send(intent, method, path, intent.query, body, self._headers(intent))

    async def transfer_state(self, intent: Intent, path: str) -> str:
        """Set the key at `path` on `intent.target` to its current state on the other (authoritative) side:
        a PUT of the representation it answers, or a DELETE when it has none. Returns the method sent.
        Also what `cutover verify --repair` sends for a differing REST record."""
        assert self._started, "HttpApplier.start() was not awaited"
        headers = self._headers(intent)
        method, body, content_type = await self._current_state(intent, path)
        if content_type is not None:
            headers["content-type"] = content_type
        await self._send(intent, method, path, "", body, headers)
        return method

    async def _send(
        self, intent: Intent, method: str, path: str, query: str, body: bytes, headers: dict[str, str]
    ) -> None:
        answer = await self._call(intent, intent.target, method, path, query, body, headers, "")
        status = answer.status
        if 200 <= status < 300 or (method == "DELETE" and status in (404, 410)):
            return
        text = answer.body[:300].decode(errors="replace")
        detail = f"{intent.target} answered {status} to {method} {path}: {text}"
        if status >= 500 or status in _TRANSIENT_STATUSES:
            raise TransientApplyError(intent, detail)
        raise PermanentApplyError(intent, detail)

    async def _call(
        self,
        intent: Intent,
        side: Side,
        method: str,
        path: str,
        query: str,
        body: bytes,
        headers: dict[str, str],
        purpose: str,
    ) -> Answer:
        try:
            return await self._backends[side].call(
                method, path, query=query, headers=headers.items(), body=body, timeout_s=self._timeout_s
            )
        except BackendFailure as exc:
            if exc.kind == "invalid_request":  # the same request would be refused again: never retry it
                raise PermanentApplyError(intent, exc.detail) from exc
            raise UnreachableError(intent, f"{side} unreachable{purpose}: {exc.kind}") from exc

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
        source = intent.target.other
        headers = self._headers(intent)
        headers.pop("idempotency-key", None)
        headers.pop("content-type", None)
        answer = await self._call(intent, source, "GET", path, "", b"", headers, " for state transfer")
        status = answer.status
        if status == 200:
            return "PUT", answer.body, answer.headers.get("content-type")
        if status in (404, 410):
            return "DELETE", b"", None
        raise TransientApplyError(intent, f"{source} answered {status} to the state-transfer read of {path}")

    def _headers(self, intent: Intent) -> dict[str, str]:
        """The apply's own headers; the backend client then applies the side's rewrites and credentials,
        as it does to a client's request."""
        headers = {name.lower(): value for name, value in intent.headers}
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
