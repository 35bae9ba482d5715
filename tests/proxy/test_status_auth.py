"""Status page sessions: signed, expiring, bound to a configured token name, useless when tampered with."""

from __future__ import annotations

from pydantic import SecretStr

from config.settings import AdminToken, TokenScope
from proxy.status_auth import StatusSessions

TOKENS = {
    "dash": AdminToken(token=SecretStr("r" * 20), scope=TokenScope.READ),
    "ops": AdminToken(token=SecretStr("w" * 20), scope=TokenScope.WRITE),
}


def test_issued_cookie_verifies_to_its_name_and_scope_and_holds_no_token() -> None:
    sessions = StatusSessions(TOKENS, ttl_s=60, key=b"k" * 32)
    cookie = sessions.issue("dash", now=1000)
    assert "r" * 20 not in cookie
    viewer = sessions.verify(cookie, now=1059)
    assert viewer is not None and viewer.name == "dash" and viewer.scope is TokenScope.READ


def test_expired_tampered_or_foreign_cookies_are_refused() -> None:
    sessions = StatusSessions(TOKENS, ttl_s=60, key=b"k" * 32)
    cookie = sessions.issue("dash", now=1000)
    assert sessions.verify(cookie, now=1061) is None  # expired
    payload, _, signature = cookie.rpartition(".")
    name, _, expires = payload.partition(".")
    assert sessions.verify(f"{name}.{int(expires) + 3600}.{signature}", now=1000) is None  # extended
    forged = StatusSessions(TOKENS, ttl_s=60, key=b"x" * 32).issue("ops", now=1000)
    assert sessions.verify(forged, now=1000) is None  # signed with another key
    for junk in (None, "", "abc", "..", "a.b.c.d"):
        assert sessions.verify(junk, now=1000) is None


def test_a_cookie_stops_working_when_its_token_is_removed() -> None:
    key = b"k" * 32
    cookie = StatusSessions(TOKENS, ttl_s=60, key=key).issue("ops", now=1000)
    after_rotation = StatusSessions({"dash": TOKENS["dash"]}, ttl_s=60, key=key)
    assert after_rotation.verify(cookie, now=1000) is None
