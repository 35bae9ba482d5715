"""Sessions for the status page: a browser cannot add a bearer header to a page load, so the page is
opened once as `/status?token=TOKEN`; the token is checked like the API's, and the answer is a redirect
to `/status` with an HttpOnly, SameSite=Strict cookie scoped to `/status`.

The cookie holds no token: it holds the token's name, an expiry and an HMAC of both under a key made when
the admin app starts (a restart signs everyone out). It is accepted only by the status page's own GET
routes, so it grants reading the page and nothing else: no phase change can ride on it. A cookie whose
token name is no longer configured stops working at once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from config.settings import AdminToken, TokenScope

COOKIE_NAME = "cutover_status"
COOKIE_PATH = "/status"


@dataclass(frozen=True, slots=True)
class Viewer:
    name: str
    scope: TokenScope


class StatusSessions:
    def __init__(self, tokens: dict[str, AdminToken], *, ttl_s: int, key: bytes | None = None) -> None:
        self._scopes = {name: token.scope for name, token in tokens.items()}
        self._ttl_s = ttl_s
        self._key = key if key is not None else secrets.token_bytes(32)

    @property
    def ttl_s(self) -> int:
        return self._ttl_s

    def issue(self, name: str, *, now: float | None = None) -> str:
        expires = int((now if now is not None else time.time()) + self._ttl_s)
        encoded = base64.urlsafe_b64encode(name.encode()).decode().rstrip("=")
        payload = f"{encoded}.{expires}"
        return f"{payload}.{self._sign(payload)}"

    def verify(self, cookie: str | None, *, now: float | None = None) -> Viewer | None:
        if not cookie:
            return None
        payload, _, signature = cookie.rpartition(".")
        if not payload or not hmac.compare_digest(signature, self._sign(payload)):
            return None
        encoded, _, expires = payload.partition(".")
        if not expires.isdigit() or int(expires) < (now if now is not None else time.time()):
            return None
        try:
            name = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
        except (ValueError, UnicodeDecodeError):
            return None
        scope = self._scopes.get(name)
        return None if scope is None else Viewer(name, scope)

    def _sign(self, payload: str) -> str:
        return hmac.new(self._key, payload.encode(), hashlib.sha256).hexdigest()
