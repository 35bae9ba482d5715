"""Header handling toward a backend (RFC 9110 §7.6.1), precomputed per backend so the hot path only filters.

Request headers arrive from the ASGI server as lower-cased `(bytes, bytes)` pairs; they leave as `str`
pairs for the upstream client. Response headers come back as raw pairs and are returned to the client
unchanged but for hop-by-hop fields.
"""

from __future__ import annotations

from collections.abc import Iterable

from config.settings import HeaderRewrite

# Hop-by-hop fields (RFC 9110 §7.6.1) plus the ones a proxy must own itself.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Never forwarded upstream: `host` is the backend's own, `content-length` is recomputed from the body
# we send, and the forwarded-* family is rewritten by us so a client cannot spoof it.
_REQUEST_DROP = HOP_BY_HOP | {
    b"host",
    b"content-length",
    b"expect",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-forwarded-host",
}


def _listed_fields(connection: bytes) -> set[bytes]:
    """Field names one `Connection` value lists (hop-by-hop for this message only), leaving out those
    dropped anyway and `close`; usually `keep-alive` or `close`, so usually nothing."""
    tokens = (token.strip().lower() for token in connection.split(b","))
    return {token for token in tokens if token and token not in HOP_BY_HOP and token != b"close"}


def _connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> set[bytes]:
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens |= _listed_fields(value)
    return tokens


class RequestHeaderRewriter:
    """Builds the upstream header list for one backend: drop, rewrite, then add the forwarded-* fields."""

    def __init__(self, rewrite: HeaderRewrite) -> None:
        self._remove = frozenset(name.lower().encode("latin-1") for name in rewrite.remove)
        self._set = tuple((name, value.get_secret_value()) for name, value in rewrite.set.items())
        self._set_names = frozenset(name.lower().encode("latin-1") for name, _ in self._set)
        self._drop = _REQUEST_DROP | self._remove | self._set_names

    def build(
        self,
        headers: list[tuple[bytes, bytes]],
        *,
        client_host: str | None,
        scheme: str,
    ) -> list[tuple[str, str]]:
        drop = self._drop
        out: list[tuple[str, str]] = []
        prior_for: list[str] = []
        host: str | None = None
        connection_listed = False
        for name, value in headers:
            if name in drop:
                if name == b"x-forwarded-for":
                    prior_for.append(value.decode("latin-1"))
                elif name == b"host":
                    host = value.decode("latin-1")
                elif name == b"connection":
                    connection_listed = True
                continue
            out.append((name.decode("latin-1"), value.decode("latin-1")))
        if connection_listed:
            listed = _connection_tokens(headers)
            out = [(n, v) for n, v in out if n.encode("latin-1") not in listed]
        if client_host is not None:
            # Several X-Forwarded-For lines form one list (RFC 9110 §5.3); the peer is appended last.
            out.append(("x-forwarded-for", ", ".join([*prior_for, client_host])))
        out.append(("x-forwarded-proto", scheme))
        if host is not None:
            out.append(("x-forwarded-host", host))
        out.extend(self._set)
        return out

    def internal(self, headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        """The header list of a request cutover sends on its own behalf (mirroring, state transfer,
        verification): the same drops and rewrites as a client's request, so `headers.set` wins over
        what the request carries and `headers.remove` removes it, but no forwarded-* fields (there is no
        client to speak of)."""
        drop = self._drop
        out = [(name, value) for name, value in headers if name.lower().encode("latin-1") not in drop]
        out.extend(self._set)
        return out


def response_headers(raw: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Upstream response headers minus hop-by-hop fields (and those its `Connection` names).

    One pass in the common case (no `Connection` header naming extra fields): this runs per response."""
    out: list[tuple[bytes, bytes]] = []
    listed: set[bytes] | None = None
    for name, value in raw:
        lowered = name.lower()
        if lowered in HOP_BY_HOP:
            if lowered == b"connection":
                listed = (listed or set()) | _listed_fields(value)
            continue
        out.append((name, value))
    if listed:
        out = [(name, value) for name, value in out if name.lower() not in listed]
    return out
