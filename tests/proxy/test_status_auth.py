"""Status page sessions: signed, expiring, bound to a configured token name, useless when tampered with,
and valid on every proxy that shares the configured key (across restarts and replicas)."""

from __future__ import annotations

import base64
import logging

import pytest
from pydantic import SecretStr, ValidationError

from config.operator import StatusPageSettings
from config.settings import AdminToken, TokenScope
from proxy.admin.status_auth import StatusSessions

TOKENS = {
    "dash": AdminToken(token=SecretStr("r" * 20), scope=TokenScope.READ),
    "ops": AdminToken(token=SecretStr("w" * 20), scope=TokenScope.WRITE),
}


def test_issued_cookie_verifies_to_its_name_and_scope_and_holds_no_token() -> None:
    sessions = StatusSessions(TOKENS, ttl_s=60, key=b"k" * 32)
    cookie = sessions.issue("dash", now=1000)
    assert "r" * 20 not in cookie
    viewer = sessions.verify(cookie, now=1059)
    assert viewer is not None
    assert viewer.name == "dash"
    assert viewer.scope is TokenScope.READ


def test_expired_tampered_or_foreign_cookies_are_refused() -> None:
    sessions = StatusSessions(TOKENS, ttl_s=60, key=b"k" * 32)
    cookie = sessions.issue("dash", now=1000)
    assert sessions.verify(cookie, now=1061) is None  # expired
    payload, stamp, signature = cookie.split(".")
    later = base64.urlsafe_b64encode((3600 + int.from_bytes(_unb64(stamp), "big")).to_bytes(4, "big"))
    assert sessions.verify(f"{payload}.{later.decode().rstrip('=')}.{signature}", now=4000) is None  # renewed
    assert sessions.verify(f"{payload[:-2]}xx.{stamp}.{signature}", now=1000) is None  # another name
    forged = StatusSessions(TOKENS, ttl_s=60, key=b"x" * 32).issue("ops", now=1000)
    assert sessions.verify(forged, now=1000) is None  # signed with another key
    for junk in (None, "", "abc", "..", "a.b.c.d"):
        assert sessions.verify(junk, now=1000) is None


def test_a_cookie_stops_working_when_its_token_is_removed() -> None:
    key = b"k" * 32
    cookie = StatusSessions(TOKENS, ttl_s=60, key=key).issue("ops", now=1000)
    after_rotation = StatusSessions({"dash": TOKENS["dash"]}, ttl_s=60, key=key)
    assert after_rotation.verify(cookie, now=1000) is None


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_a_configured_key_keeps_sessions_across_restarts_and_replicas(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = StatusPageSettings(session_ttl_s=600, session_key=SecretStr("s" * 40))
    with caplog.at_level(logging.WARNING, logger="cutover.status"):
        first = StatusSessions.from_settings(TOKENS, settings)
        cookie = first.issue("dash", now=1000)
        other_proxy = StatusSessions.from_settings(TOKENS, settings)  # another replica, or a restart
    assert not caplog.records  # nothing to warn about
    viewer = other_proxy.verify(cookie, now=1300)
    assert viewer is not None
    assert viewer.name == "dash"
    assert other_proxy.verify(cookie, now=1601) is None  # the ttl still holds
    # A proxy whose clock runs a little behind the issuer's still takes a fresh cookie.
    assert other_proxy.verify(first.issue("ops", now=1030), now=1000) is not None


def test_without_a_key_each_process_signs_alone_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    settings = StatusPageSettings(session_ttl_s=600)
    with caplog.at_level(logging.WARNING, logger="cutover.status"):
        first = StatusSessions.from_settings(TOKENS, settings)
        second = StatusSessions.from_settings(TOKENS, settings)
    assert second.verify(first.issue("dash", now=1000), now=1000) is None
    assert first.verify(first.issue("dash", now=1000), now=1000) is not None
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2
    assert "session_key is not set" in warnings[0]


def test_the_session_key_is_checked_at_start() -> None:
    with pytest.raises(ValidationError, match="session_key"):
        StatusPageSettings(session_key=SecretStr("short"))
