"""Bearer-token authentication for the admin API.

Every configured token is compared on every request, with `hmac.compare_digest`, so neither the position
of a match nor a prefix match shows in the timing.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from config.settings import AdminToken, TokenScope


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    scope: TokenScope

    def can_write(self) -> bool:
        return self.scope is TokenScope.WRITE


class TokenAuthenticator:
    def __init__(self, tokens: dict[str, AdminToken]) -> None:
        self._tokens = [
            (name, token.token.get_secret_value().encode(), token.scope) for name, token in tokens.items()
        ]

    def authenticate(self, authorization: str | None) -> Principal | None:
        if not authorization:
            return None
        scheme, _, presented = authorization.partition(" ")
        if scheme.lower() != "bearer" or not presented:
            return None
        candidate = presented.strip().encode()
        found: Principal | None = None
        for name, secret, scope in self._tokens:
            if hmac.compare_digest(candidate, secret) and found is None:
                found = Principal(name, scope)
        return found
