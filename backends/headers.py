"""Header handling toward a backend (RFC 9110 §7.6.1), precomputed per backend so the hot path only filters.

Request headers arrive from the ASGI server as lower-cased `(bytes, bytes)` pairs; they leave as `str`
pairs for the upstream client. Response headers come back as raw pairs and are returned to the client
unchanged but for hop-by-hop fields.

Forwarding fields have one policy, nginx's with `realip`: a client's `Forwarded`, `X-Forwarded-*`,
`X-Real-IP`, `X-Original-URL` / `X-Rewrite-URL` / `X-Original-Host` are dropped, and cutover sets
`X-Forwarded-For` and `X-Real-IP` (the peer), `X-Forwarded-Proto` and `X-Forwarded-Host` itself, unless
the peer is one of `trusted_proxies`: then the fields pass, the peer is appended to `X-Forwarded-For`,
and the others are set only where the client did not. A backend that trusts these fields for access
control or audit must never see a client's own claim.

`Proxy-Authorization` passes: cutover asks for no proxy credentials, so they are meant for a proxy
further in (RFC 9110 §11.7.2), and `Proxy-Authenticate` is relayed back likewise.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache

from config.settings import HeaderRewrite

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_TrustCheck = Callable[[str], bool]

# Hop-by-hop fields (RFC 9110 §7.6.1): they describe one connection, never the message.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Fields that say who the client is, where it connected and what it asked for, as proxies in front tell
# it. Only a trusted proxy's word is kept.
FORWARDING = frozenset(
    {
        b"forwarded",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-port",
        b"x-forwarded-prefix",
        b"x-forwarded-server",
        b"x-real-ip",
        b"x-original-url",
        b"x-rewrite-url",
        b"x-original-host",
    }
)
# Never forwarded upstream: `host` is the backend's own, `content-length` is recomputed from the body
# we send, `expect` was answered by the server already.
_REQUEST_DROP = HOP_BY_HOP | {b"host", b"content-length", b"expect"}


def listed_fields(connection: bytes) -> set[bytes]:
    """Field names one `Connection` value lists (hop-by-hop for this message only), leaving out those
    dropped anyway and `close`; usually `keep-alive` or `close`, so usually nothing."""
    tokens = (token.strip().lower() for token in connection.split(b","))
    return {token for token in tokens if token and token not in HOP_BY_HOP and token != b"close"}


def _connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> set[bytes]:
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens |= listed_fields(value)
    return tokens


class RequestHeaderRewriter:
    """Builds the upstream header list for one backend: drop, rewrite, then add the forwarding fields."""

    def __init__(self, rewrite: HeaderRewrite, *, trusted_proxies: Sequence[IpNetwork] = ()) -> None:
        self._remove = frozenset(name.lower().encode("latin-1") for name in rewrite.remove)
        self._set = tuple((name, value.get_secret_value()) for name, value in rewrite.set.items())
        self._set_names = frozenset(name.lower().encode("latin-1") for name, _ in self._set)
        self._drop = _REQUEST_DROP | FORWARDING | self._remove | self._set_names
        # For a trusted peer the forwarding fields pass (those `headers.remove`/`set` name excepted).
        self._drop_trusted = self._drop - (FORWARDING - self._remove - self._set_names)
        self._trusted = _trust_check(tuple(trusted_proxies)) if trusted_proxies else None
        # An operator who sets or removes a forwarding field for this backend owns all of them.
        self._own_forwarding = not (FORWARDING & (self._remove | self._set_names))

    def build(
        self,
        headers: list[tuple[bytes, bytes]],
        *,
        client_host: str | None,
        scheme: str,
    ) -> list[tuple[str, str]]:
        trusted = self._trusted is not None and client_host is not None and self._trusted(client_host)
        drop = self._drop_trusted if trusted else self._drop
        out: list[tuple[str, str]] = []
        host: str | None = None
        connection_listed = False
        for name, value in headers:
            if name in drop:
                if name == b"host":
                    host = value.decode("latin-1")
                elif name == b"connection":
                    connection_listed = True
                continue
            out.append((name.decode("latin-1"), value.decode("latin-1")))
        if connection_listed:
            listed = _connection_tokens(headers)
            out = [(n, v) for n, v in out if n.encode("latin-1") not in listed]
        if trusted:
            return self._append_forwarding(out, client_host, scheme, host)
        if self._own_forwarding:
            if client_host is not None:
                out.append(("x-forwarded-for", client_host))
                out.append(("x-real-ip", client_host))
            out.append(("x-forwarded-proto", scheme))
            if host is not None:
                out.append(("x-forwarded-host", host))
        out.extend(self._set)
        return out

    def _append_forwarding(
        self, out: list[tuple[str, str]], client_host: str | None, scheme: str, host: str | None
    ) -> list[tuple[str, str]]:
        """A trusted proxy's forwarding fields stay; the peer joins X-Forwarded-For (several lines form
        one list, RFC 9110 §5.3, so they are joined into one) and the others are filled in if absent."""
        if not self._own_forwarding:
            out.extend(self._set)
            return out
        prior_for = [v for n, v in out if n == "x-forwarded-for"]
        out = [(n, v) for n, v in out if n != "x-forwarded-for"]
        present = {n for n, _ in out}
        out.append(("x-forwarded-for", ", ".join([*prior_for, client_host or "unknown"])))
        if "x-real-ip" not in present and client_host is not None:
            out.append(("x-real-ip", client_host))
        if "x-forwarded-proto" not in present:
            out.append(("x-forwarded-proto", scheme))
        if "x-forwarded-host" not in present and host is not None:
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


def _trust_check(networks: tuple[IpNetwork, ...]) -> _TrustCheck:
    @lru_cache(maxsize=4096)  # peers repeat: proxies in front hold a few long-lived connections
    def trusted(client_host: str) -> bool:
        try:
            address = ipaddress.ip_address(client_host)
        except ValueError:
            return False  # a unix socket path or similar: not an address anyone could be trusted by
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # a dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d
        return any(address in network for network in networks)

    return trusted


def response_headers(raw: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Upstream response headers minus hop-by-hop fields (and those its `Connection` names).

    One pass in the common case (no `Connection` header naming extra fields): this runs per response."""
    out: list[tuple[bytes, bytes]] = []
    listed: set[bytes] | None = None
    for name, value in raw:
        lowered = name.lower()
        if lowered in HOP_BY_HOP:
            if lowered == b"connection":
                listed = (listed or set()) | listed_fields(value)
            continue
        out.append((name, value))
    if listed:
        out = [(name, value) for name, value in out if name.lower() not in listed]
    return out
