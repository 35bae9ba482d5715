"""Request classification (read/write, tenant) and the target check."""

from __future__ import annotations

import pytest

from routing.classify import (
    READ_METHODS,
    InvalidTargetError,
    RequestFacts,
    RequestKind,
    check_target,
    classify,
)
from routing.tenant import TENANT_HEADER_DEFAULT, InvalidTenantError, validate_tenant

# --- classify: methods --------------------------------------------------------------------------------

METHODS = [
    ("GET", RequestKind.READ),
    ("HEAD", RequestKind.READ),
    ("OPTIONS", RequestKind.READ),
    ("POST", RequestKind.WRITE),
    ("PUT", RequestKind.WRITE),
    ("PATCH", RequestKind.WRITE),
    ("DELETE", RequestKind.WRITE),
    ("CONNECT", RequestKind.WRITE),
    ("TRACE", RequestKind.WRITE),
    ("PROPFIND", RequestKind.WRITE),
    ("MKCOL", RequestKind.WRITE),
    ("QUERY", RequestKind.WRITE),
    ("PURGE", RequestKind.WRITE),
    # Methods are case-sensitive (RFC 9110 §9.1): an unknown spelling is treated as a write.
    ("get", RequestKind.WRITE),
    ("Get", RequestKind.WRITE),
    ("head", RequestKind.WRITE),
    ("", RequestKind.WRITE),
    ("GET ", RequestKind.WRITE),
]


def test_read_methods_constant() -> None:
    assert frozenset({"GET", "HEAD", "OPTIONS"}) == READ_METHODS


@pytest.mark.parametrize(("method", "kind"), METHODS, ids=[repr(m) for m, _ in METHODS])
def test_classify_kind(method: str, kind: RequestKind) -> None:
    facts = classify(method, "acme")
    assert facts == RequestFacts(tenant="acme", kind=kind, method=method)
    assert facts.kind is kind


def test_classify_without_tenant() -> None:
    facts = classify("GET", None)
    assert facts.tenant is None
    assert facts.kind is RequestKind.READ
    assert facts.method == "GET"


def test_classify_rejects_bad_tenant() -> None:
    with pytest.raises(InvalidTenantError):
        classify("GET", "bad tenant")
    with pytest.raises(InvalidTenantError):
        classify("POST", "")


def test_request_kind_values() -> None:
    assert RequestKind.READ.value == "read"
    assert RequestKind.WRITE.value == "write"


# --- tenants ------------------------------------------------------------------------------------------

VALID_TENANTS = [
    "a",
    "Z",
    "0",
    "acme",
    "ACME-corp_2.eu:west",
    "a" * 128,
    "x" * 127,
    "...",
    ".a",
    "a.",
    "..a",
    "a..",
    "." * 128,
    ":",
    "-",
    "_",
    "tenant:123",
    "0123456789",
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-",
]

INVALID_TENANTS = [
    "",
    # dot segments: in a URL path (`/tenants/..`) they would name another resource
    ".",
    "..",
    "." * 129,
    "a" * 129,
    "a" * 1000,
    "a b",
    " acme",
    "acme ",
    "acme\n",
    "\nacme",
    "acme\t",
    "acme\x00",
    "acme/1",
    "acme\\1",
    "acme@x",
    "acme+x",
    "acme,x",
    "acme;x",
    "acme%20",
    "acme?",
    "acme#",
    "acme*",
    "a=b",
    "'acme'",
    '"acme"',
    # unicode: letters and digits outside ASCII are refused
    "tenant-é",
    "тенант",
    "租户",
    "１２３",  # fullwidth digits
    "٣",  # Arabic-Indic digit
    "\u212a",  # Kelvin sign (case-folds to 'k')
    "acme\u200b",  # zero-width space
    "acme\u00a0",  # no-break space
    "😀",
]


@pytest.mark.parametrize("value", VALID_TENANTS, ids=lambda v: f"len{len(v)}:{v[:20]}")
def test_valid_tenant(value: str) -> None:
    assert validate_tenant(value) == value


@pytest.mark.parametrize("value", INVALID_TENANTS, ids=lambda v: f"len{len(v)}:{v[:20]!r}")
def test_invalid_tenant(value: str) -> None:
    with pytest.raises(InvalidTenantError) as info:
        validate_tenant(value)
    assert info.value.value == value
    assert isinstance(info.value, ValueError)
    assert "1-128 characters of [A-Za-z0-9._:-], other than '.' and '..'" in str(info.value)


@pytest.mark.parametrize(("length", "ok"), [(0, False), (1, True), (127, True), (128, True), (129, False)])
def test_tenant_length_bounds(length: int, ok: bool) -> None:
    value = "t" * length
    if ok:
        assert validate_tenant(value) == value
    else:
        with pytest.raises(InvalidTenantError):
            validate_tenant(value)


def test_invalid_tenant_message_truncates_long_values() -> None:
    value = "x" * 200 + "!"
    with pytest.raises(InvalidTenantError) as info:
        validate_tenant(value)
    message = str(info.value)
    assert repr("x" * 40 + "…") in message
    assert "x" * 41 not in message
    assert info.value.value == value  # the full value stays on the exception


def test_invalid_tenant_message_shows_short_values() -> None:
    with pytest.raises(InvalidTenantError, match="'bad tenant'"):
        validate_tenant("bad tenant")


def test_tenant_header_default() -> None:
    assert TENANT_HEADER_DEFAULT == "X-Tenant-ID"


# --- check_target ---------------------------------------------------------------------------------------

ABSOLUTE = "absolute-form"
NO_SLASH = "must start with '/'"
SLASH = "encoded slashes and backslashes"
DOTS = "dot segments"

ACCEPTED: list[tuple[bytes, bytes | None]] = [
    (b"/", None),
    (b"/", b"/"),
    (b"/a", None),
    (b"/a/b/c", b"/a/b/c"),
    (b"/a/b/", None),
    (b"/a.b/c..d", None),
    (b"/a.b/c..d", b"/a.b/c..d"),
    (b"/file.json", None),
    (b"/.well-known/openid-configuration", None),
    (b"/a/.hidden", None),
    (b"/a/b.", None),
    (b"/a/...", None),
    (b"/a/..../b", None),
    (b"/a/..b", None),
    (b"/a/b..", None),
    (b"/v1/tenants/acme:eu.west/items", None),
    (b"/a%20b", None),
    (b"/%41BC", None),
    (b"/a/%2e%2e%2e", None),  # decodes to "..." which is a name, not a dot segment
    (b"/a/%2ex", None),  # decodes to ".x"
    (b"/caf%C3%A9", None),
    (b"/100%25", None),
    (b"//double", None),
    # the query is not part of raw_path: whatever it holds is not checked here
    (b"/search", b"/search?next=../../etc/passwd"),
    (b"/search", b"/search?q=%2f%5c..%2e"),
    (b"/search", b"/search?u=http://evil/"),
]

REFUSED: list[tuple[bytes, bytes | None, str]] = [
    # absolute-form and authority-form request targets
    (b"/x", b"http://example.com/x", ABSOLUTE),
    (b"/x", b"https://example.com/x", ABSOLUTE),
    (b"/", b"example.com:443", ABSOLUTE),
    (b"/", b"*", ABSOLUTE),
    (b"/x", b"", ABSOLUTE),
    (b"/x", b"x", ABSOLUTE),
    (b"/x", b" /x", ABSOLUTE),
    # raw path not rooted
    (b"", None, NO_SLASH),
    (b"a/b", None, NO_SLASH),
    (b"http://example.com/x", None, NO_SLASH),
    (b"*", None, NO_SLASH),
    # literal dot segments
    (b"/..", None, DOTS),
    (b"/.", None, DOTS),
    (b"/../etc/passwd", None, DOTS),
    (b"/a/../b", None, DOTS),
    (b"/a/./b", None, DOTS),
    (b"/a/..", None, DOTS),
    (b"/a/.", None, DOTS),
    (b"/a/../", None, DOTS),
    (b"/a/./", None, DOTS),
    (b"/a/b/../../..", None, DOTS),
    (b"/a/..", b"/a/..", DOTS),
    # percent-encoded dots
    (b"/%2e%2e/x", None, DOTS),
    (b"/%2E%2E/x", None, DOTS),
    (b"/%2e%2E", None, DOTS),
    (b"/.%2e/x", None, DOTS),
    (b"/%2e./x", None, DOTS),
    (b"/%2e/x", None, DOTS),
    (b"/a/%2e", None, DOTS),
    (b"/a/%2E", None, DOTS),
    (b"/a/%2e%2e", None, DOTS),
    # encoded slashes and backslashes, any case
    (b"/a%2fb", None, SLASH),
    (b"/a%2Fb", None, SLASH),
    (b"/a%5cb", None, SLASH),
    (b"/a%5Cb", None, SLASH),
    (b"/%2e%2e%2fetc", None, SLASH),
    (b"/..%2f", None, SLASH),
    (b"/a\\b", None, SLASH),
    (b"/a\\..\\b", None, SLASH),
    (b"/\\", None, SLASH),
]


@pytest.mark.parametrize(("raw_path", "request_target"), ACCEPTED, ids=[f"{p!r}|{t!r}" for p, t in ACCEPTED])
def test_check_target_accepts(raw_path: bytes, request_target: bytes | None) -> None:
    check_target(raw_path, request_target)  # does not raise


@pytest.mark.parametrize(
    ("raw_path", "request_target", "reason"), REFUSED, ids=[f"{p!r}|{t!r}" for p, t, _ in REFUSED]
)
def test_check_target_refuses(raw_path: bytes, request_target: bytes | None, reason: str) -> None:
    with pytest.raises(InvalidTargetError) as info:
        check_target(raw_path, request_target)
    assert reason in str(info.value)
    assert isinstance(info.value, ValueError)


def test_check_target_request_target_defaults_to_none() -> None:
    check_target(b"/a/b")
    with pytest.raises(InvalidTargetError, match=DOTS):
        check_target(b"/a/../b")
