"""The HTTP/1.1 edge: uvicorn's httptools protocol, held against hostile clients.

uvicorn parses each request with httptools (llhttp) and hands the app a scope whose header list it goes
on filling while the body arrives. `EdgeProtocol` changes what a client can do with that, each rule where
uvicorn does the work it bounds (`limits.*` in the settings, named after nginx's directives):

- **Header fields are fixed when the head ends.** httptools reports a chunked body's trailer fields
  through the same `on_header` callback as header fields, and uvicorn appended them to the scope's list,
  which the data plane reads after the body: a trailer could add a tenant or a second `Host`. Trailer
  fields are dropped (RFC 9110 §6.5.1 lets a recipient that removes the chunked coding discard them);
  they are never forwarded, as headers or otherwise.
- **Field names with `_` are dropped**, as nginx's default `underscores_in_headers off`: CGI and WSGI
  backends fold `X_Tenant_ID` and `X-Tenant-ID` into one `HTTP_X_TENANT_ID`, so a backend could read a
  tenant (or a forwarding field) that cutover did not route by.
- **Size.** The request line and header fields together may take `max_header_bytes`, and a chunked
  body's stretches that are not data (chunk framing, the trailer section) as much each; the head holds at
  most `max_header_fields` fields. Over either: 431 and close. httptools builds a field by concatenation,
  so one endless field used to cost the whole process quadratic CPU (a 64 MiB header stalled every other
  client for 6 s).
- **Time.** The head must arrive within `client_header_timeout_s` of the connection (or of its first byte
  on a kept-alive connection), and each body read within `client_body_timeout_s` of the previous one:
  408 and close. A connection that never starts a request is closed without an answer, like an idle
  kept-alive one (an answer could cross a request the client is just sending).
- **Host.** An HTTP/1.1 request without `Host`, or any request with two, is 400 (RFC 9112 §3.2).
- **A response sent before its request's body was read to the end** (413, an early 400) ends the
  connection; uvicorn would read and discard the rest, however long.
- Errors found here are answered in cutover's JSON shape, not uvicorn's plain text.

Every close after an answer lingers as nginx's `lingering_close`: the proxy half-closes and discards what
the client still sends for up to `LINGER_S`, because closing a socket with unread input sends a reset,
which can destroy the answer before the client has read it.

Errors are raised from parser callbacks as `ProxyError`s: httptools turns a callback's exception into an
`HttpParserCallbackError` whose `__context__` is that exception, and `data_received` answers it.
uvicorn internals this relies on (callback names, `self.headers`, `self.cycle`, `self.pipeline`,
`on_response_complete`) are pinned by `tests/proxy/test_http_edge.py`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, ClassVar, cast

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from config.settings import ClientLimits
from proxy.dataplane.app import REQUEST_TARGET_EXTENSION
from proxy.dataplane.errors import BadRequest, HeaderFieldsTooLarge, ProxyError, RequestTimeout
from proxy.dataplane.unexpected import internal_error

log = logging.getLogger("cutover.edge")

LINGER_S = 5.0  # in all; nginx allows `lingering_timeout` (5 s) between reads, up to 30 s
_UNDERSCORE = ord("_")  # `int in bytes` is a memchr; `b"_" in bytes` costs ten times as much


class EdgeProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the bounds above; `edge_protocol(limits)` makes the class a
    server uses (uvicorn builds its protocols itself, from the class alone)."""

    limits: ClassVar[ClientLimits] = ClientLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # the next bytes belong to a request head (or start one)
        self._head_begun = False  # ...and its first byte has arrived
        self._in_body = False  # the head is complete, the body is not
        # Bytes fed now are not body data (head, chunk framing, trailers): counted against
        # max_header_bytes, from zero again after each stretch of data.
        self._bounded = True
        self._bounded_bytes = 0
        self._hosts = 0
        self._timer: asyncio.TimerHandle | None = None  # the head, body or lingering deadline
        self._last_read = 0.0
        self._draining = False  # answered and half-closed: input is discarded unparsed

    # -- connection ---------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._arm(self.limits.client_header_timeout_s, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        if self._draining:
            return
        if self._bounded and self._bounded_bytes + len(data) >= self.limits.max_header_bytes:
            ended = self._feed_bounded(data)
        else:
            if self._bounded:
                self._bounded_bytes += len(data)
            ended = self._feed(data)
        if ended:
            return
        if self._in_body:
            self._last_read = self.loop.time()
            if self._timer is None:
                self._arm(self.limits.client_body_timeout_s, self._body_timed_out)
        elif self._head_begun and self._timer is None:
            self._arm(self.limits.client_header_timeout_s, self._head_timed_out)

    def _feed_bounded(self, data: bytes) -> bool:
        """Feed `data` no further than the bound allows (past it, the parser would build the field
        anyway); refuse the request if the bound is reached. True if the connection is done.

        Bytes after a boundary found inside one piece are not counted: a head that follows a pipelined
        request in one read, or a trailer section in the read that ends a body, may pass the bound by up
        to one read before it is refused."""
        limit = self.limits.max_header_bytes
        while data:
            if self._bounded:
                room = limit - self._bounded_bytes
                piece, data = data[:room], data[room:]
                self._bounded_bytes += len(piece)
            else:
                piece, data = data, b""
            if self._feed(piece):
                return True
            if self._bounded and self._bounded_bytes >= limit:
                where = "request head" if self._in_head else "chunk framing or trailer fields"
                self._refuse(HeaderFieldsTooLarge(f"{where} exceed max_header_bytes ({limit})", limit=limit))
                return True
        return False

    def _feed(self, data: bytes) -> bool:
        """Parse `data`; True if that ended the connection (refused, or handed to another protocol)."""
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._cancel_timer()
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()  # as uvicorn: the rest of this read is not parsed
            return True
        except httptools.HttpParserError as exc:
            self._refuse(self._parse_failure(exc))
            return True
        return False

    def on_response_complete(self) -> None:
        # Answered before the body was read to its end (413, an early 400): reading on would take
        # whatever the client sends, for as long as it likes. With a pipeline queued, the body being
        # read is a later request's (asked before uvicorn starts that one).
        unread = self._in_body and not self.pipeline
        super().on_response_complete()
        if unread and not self.transport.is_closing():
            self._linger()

    # -- parser callbacks ---------------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        HttpToolsProtocol.on_message_begin(self)
        self._head_begun = True
        self._hosts = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_head:
            return  # a trailer field: never a header
        name = name.lower()
        if _UNDERSCORE in name:
            return
        # llhttp keeps trailing whitespace, which is not part of the value (RFC 9110 §5.5).
        value = value.rstrip(b" \t")
        if name == b"host":
            self._hosts += 1
        elif name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self._hosts != 1 and (self._hosts or self.parser.get_http_version() == "1.1"):
            hosts = self._hosts
            raise BadRequest(f"{hosts} Host header fields" if hosts else "an HTTP/1.1 request without Host")
        fields = self.limits.max_header_fields
        if len(self.headers) > fields:
            raise HeaderFieldsTooLarge(
                f"{len(self.headers)} header fields exceed max_header_fields ({fields})", limit=fields
            )
        self._in_head = self._head_begun = False
        self._in_body = True
        self._bounded_bytes = 0
        if self._timer is not None:
            self._cancel_timer()
        if not self.url.startswith(b"/"):
            # The target as sent, so the data plane can refuse an absolute-form one that uvicorn would
            # silently reduce to its path.
            extensions = cast(dict[str, Any], self.scope).setdefault("extensions", {})
            extensions[REQUEST_TARGET_EXTENSION] = bytes(self.url)
        HttpToolsProtocol.on_headers_complete(self)

    def on_body(self, body: bytes) -> None:
        self._bounded = False
        HttpToolsProtocol.on_body(self, body)

    def on_chunk_complete(self) -> None:
        self._bounded = True
        self._bounded_bytes = 0

    def on_message_complete(self) -> None:
        HttpToolsProtocol.on_message_complete(self)
        self._in_body = False
        self._in_head = self._bounded = True
        self._bounded_bytes = 0
        if self._timer is not None:
            self._cancel_timer()

    # -- deadlines ----------------------------------------------------------------------------------------
    def _arm(self, delay_s: float, callback: Callable[[], None]) -> None:
        self._timer = self.loop.call_later(delay_s, callback)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _head_timed_out(self) -> None:
        self._timer = None
        if not self._in_head or self._draining:
            return
        if not self._head_begun:
            self.transport.close()  # nothing asked, nothing to answer (as an idle kept-alive connection)
            return
        timeout = self.limits.client_header_timeout_s
        self._refuse(RequestTimeout(f"request head incomplete after client_header_timeout_s ({timeout} s)"))

    def _body_timed_out(self) -> None:
        self._timer = None
        if not self._in_body or self._draining:
            return
        now = self.loop.time()
        timeout = self.limits.client_body_timeout_s
        cycle = self.cycle
        if self.flow.read_paused or (cycle is not None and cycle.waiting_for_100_continue):
            # The proxy is not reading (the app has not taken what came, or not asked for the body
            # yet): the client is not the one late.
            self._last_read = now
        idle_s = now - self._last_read
        if idle_s < timeout:
            self._arm(timeout - idle_s, self._body_timed_out)
            return
        self._refuse(RequestTimeout(f"request body read waited over client_body_timeout_s ({timeout} s)"))

    # -- answers ------------------------------------------------------------------------------------------
    def _parse_failure(self, exc: httptools.HttpParserError) -> ProxyError:
        cause = exc.__context__  # a callback's own exception (see the module docstring)
        if isinstance(cause, ProxyError):
            return cause
        if cause is not None:  # a bug in a callback
            return internal_error(cast(dict[str, Any], self.scope) or {}, cause)
        return BadRequest(f"malformed HTTP request: {exc}")

    def _refuse(self, error: ProxyError) -> None:
        """Answer `error` for the request being read, and end the connection."""
        self._cancel_timer()
        log.info("refused a request from %s: %s %s", self.client, error.status, error.detail)
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if self._in_head:
                # An earlier request's response is still to be sent: answering now would cut into it.
                # It ends the connection when done; this request goes unanswered.
                cycle.keep_alive = False
                self._draining = True
                return
            if cycle.response_started or self.pipeline:
                self.transport.close()  # this request's answer has begun, or waits behind another
                return
            # The app is reading this body: it now sees a disconnect, and what it sends is dropped.
            cycle.disconnected = True
            cycle.message_event.set()
        self._write(error)
        self._linger()

    def _write(self, error: ProxyError) -> None:
        body = error.body()
        content = [STATUS_LINE[error.status]]
        for name, value in [*self.server_state.default_headers, *error.headers()]:
            content.extend([name, b": ", value, b"\r\n"])
        content.append(
            b"content-type: application/json\r\ncontent-length: %d\r\n"
            b"x-cutover-served-by: proxy\r\nconnection: close\r\n\r\n" % len(body)
        )
        content.append(body)
        self.transport.write(b"".join(content))

    def _linger(self) -> None:
        """Half-close, then discard input until the client closes too, for at most LINGER_S."""
        self._draining = True
        self._cancel_timer()
        self._unset_keepalive_if_required()
        if not self.transport.can_write_eof():  # TLS cannot half-close
            self.transport.close()
            return
        self.transport.write_eof()
        self.flow.resume_reading()
        self._arm(LINGER_S, self.transport.close)


def edge_protocol(limits: ClientLimits) -> type[EdgeProtocol]:
    """The protocol class for a server bound by `limits`."""
    return type("EdgeProtocol", (EdgeProtocol,), {"limits": limits})
