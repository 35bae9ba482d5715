"""Sessions for the status page: a browser cannot add a bearer header to a page load, so the page is
opened once as `/status?token=TOKEN`; the token is checked like the API's, and the answer is a redirect
to `/status` with an HttpOnly, SameSite=Strict cookie scoped to `/status`.

The cookie holds no token: it holds the token's name and the time it was issued, signed with
itsdangerous (`URLSafeTimedSerializer`: HMAC-SHA1 over a derived key, timestamp checked against
`session_ttl_s`) under `operator.status_page.session_key`. Every proxy given the same key accepts the
cookie any of them issued, before and after a restart. Without a key each process signs with a random one
of its own: a restart signs everyone out and a load balancer that sends the next poll to another proxy
answers 401, so a key is required as soon as more than one proxy serves the page (logged at start).

The cookie is accepted only by the status page's own GET routes, so it grants reading the page and
nothing else: no phase change can ride on it. A cookie whose token name is no longer configured stops
working at once.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from itsdangerous.timed import TimestampSigner

from config.operator import StatusPageSettings
from config.settings import AdminToken, TokenScope

COOKIE_NAME = "cutover_status"
COOKIE_PATH = "/status"
_SALT = "cutover.status-session"  # a key shared with another use signs nothing valid here
# itsdangerous refuses a cookie whose timestamp lies ahead of the verifier's clock; proxies' clocks
# differ by a little, so the check runs this far ahead (and allows as much more age): a cookie issued by
# a proxy up to a minute ahead is accepted by the others, and every cookie still ends after its ttl.
_CLOCK_SKEW_S = 60
log = logging.getLogger("cutover.status")


@dataclass(frozen=True, slots=True)
class Viewer:
    name: str
    scope: TokenScope


class _ClockedSigner(TimestampSigner):
    """itsdangerous' timestamp signer on a given clock (tests pass `now`; serving uses time.time)."""

    def __init__(self, *args: Any, clock: Callable[[], float] = time.time, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._clock = clock

    def get_timestamp(self) -> int:
        return int(self._clock())


class StatusSessions:
    def __init__(self, tokens: dict[str, AdminToken], *, ttl_s: int, key: bytes | None = None) -> None:
        self._scopes = {name: token.scope for name, token in tokens.items()}
        self._ttl_s = ttl_s
        self._key = key if key is not None else secrets.token_bytes(32)

    @classmethod
    def from_settings(cls, tokens: dict[str, AdminToken], settings: StatusPageSettings) -> StatusSessions:
        if settings.session_key is None:
            if settings.enabled:
                log.warning(
                    "operator.status_page.session_key is not set: status page sessions are signed with a"
                    " key of this process only (a restart signs everyone out, another proxy refuses them);"
                    " set it, the same on every proxy, when more than one proxy serves the page"
                )
            return cls(tokens, ttl_s=settings.session_ttl_s)
        key = settings.session_key.get_secret_value().encode()
        return cls(tokens, ttl_s=settings.session_ttl_s, key=key)

    @property
    def ttl_s(self) -> int:
        return self._ttl_s

    def issue(self, name: str, *, now: float | None = None) -> str:
        return str(self._serializer(now).dumps({"name": name}))

    def verify(self, cookie: str | None, *, now: float | None = None) -> Viewer | None:
        if not cookie:
            return None
        at = (time.time() if now is None else now) + _CLOCK_SKEW_S
        try:
            payload = self._serializer(at).loads(cookie, max_age=self._ttl_s + _CLOCK_SKEW_S)
        except BadSignature:  # also SignatureExpired and a payload that does not decode
            return None
        name = payload.get("name") if isinstance(payload, dict) else None
        scope = self._scopes.get(name) if isinstance(name, str) else None
        return None if scope is None or not isinstance(name, str) else Viewer(name, scope)

    def _serializer(self, now: float | None) -> URLSafeTimedSerializer:
        clock: Callable[[], float] = time.time if now is None else (lambda: now)
        return URLSafeTimedSerializer(
            self._key, salt=_SALT, signer=_ClockedSigner, signer_kwargs={"clock": clock}
        )
