"""Structured logs: one JSON object per line, with the request id and trace id of the request being
served, and no secret ever written.

Secrets are kept out twice. Nothing in cutover logs a header, a token or a body on purpose; and every
finished line passes a scrubber before it is written, which replaces (1) every secret value the
settings hold (`SecretStr`: admin tokens, backend credentials, header values set toward a backend,
collector headers, passwords inside URLs), (2) anything shaped like a credential (`Bearer …`,
`Basic …`, `user:password@` in a URL, `token=…`-style pairs), and (3) the value of any structured field
whose name says it is secret (authorization, cookie, password, secret, token, plus
`telemetry.redact_fields`). The scrubber runs per written line, never per request.

Request ids: the data plane puts each request's ASGI scope in `LOG_CONTEXT` (one context-variable set,
no allocation); a line logged while serving it takes the client's `X-Request-ID` when it sent a sane
one, else an id made on first use (`<process prefix>-<counter>`), stored in the scope so every line of
one request shows the same id.
"""

from __future__ import annotations

import itertools
import logging
import re
import secrets
import sys
import time
from collections.abc import Iterable, MutableMapping
from contextvars import ContextVar
from typing import Any

import orjson
from opentelemetry import trace
from pydantic import BaseModel, SecretStr

from config.settings import Settings

# The context of the request (ASGI scope) or job being handled by the current task, if any.
LOG_CONTEXT: ContextVar[MutableMapping[str, Any] | None] = ContextVar("cutover_log_context", default=None)
REQUEST_SCOPE = LOG_CONTEXT  # the data plane's name for it
REQUEST_ID_KEY = "cutover.request_id"
# (trace id, span id) of the request's server span, put in the scope by the data plane when the request
# has a trace context; the data plane attaches nothing to OpenTelemetry's context (see
# proxy.dataplane.request_telemetry). Other processes' spans are found as the current span.
TRACE_IDS_KEY = "cutover.trace_ids"
MASK = "***"

_PROCESS_PREFIX = secrets.token_hex(3)
_COUNTER = itertools.count(1)
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")
_SECRET_FIELD = re.compile(r"authorization|cookie|passw|secret|token|api[-_]?key|credential", re.I)
_CREDENTIAL_PATTERNS = (
    (re.compile(r"(?i)\b(bearer|basic|token)\s+[A-Za-z0-9._~+/=-]{4,}"), r"\1 " + MASK),
    (re.compile(r"(?i)([a-z][a-z0-9+.-]*://)[^/\s:@\"']*:[^/\s@\"']*@"), r"\1" + MASK + "@"),
    (
        re.compile(r"(?i)\b(access_token|token|password|passwd|secret|api[-_]?key)=[^\s&\"',;]+"),
        r"\1=" + MASK,
    ),
)
_AUTH_SCHEMES = frozenset({"bearer", "basic", "token", "apikey", "digest"})
# Attributes every LogRecord has; anything else on a record came from `extra=` and is logged as a field,
# except uvicorn's `color_message` (the message again, with ANSI colour codes for a terminal).
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "color_message",
}
# uvicorn's own start and stop lines. A proxy process runs two uvicorn servers (data plane and admin
# API), so each came twice, and neither names its address when handed a socket; cutover logs one line
# naming both addresses instead (proxy.server). Templates, not rendered text: the pid varies.
_UVICORN_LIFECYCLE = frozenset(
    {
        "Started server process [%d]",
        "Finished server process [%d]",
        "Waiting for application startup.",
        "Application startup complete.",
        "Waiting for application shutdown.",
        "Application shutdown complete.",
        "Shutting down",
    }
)


def request_id(context: MutableMapping[str, Any]) -> str:
    found = context.get(REQUEST_ID_KEY)
    if found is None:
        for name, value in context.get("headers", ()):
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                if _SANE_REQUEST_ID.fullmatch(candidate):
                    found = candidate
                break
        if found is None:
            found = f"{_PROCESS_PREFIX}-{next(_COUNTER):x}"
        context[REQUEST_ID_KEY] = found
    return str(found)


def _trace_ids(context: MutableMapping[str, Any] | None) -> tuple[int, int] | None:
    if context is not None:
        ids: tuple[int, int] | None = context.get(TRACE_IDS_KEY)
        if ids is not None:
            return ids
    span_context = trace.get_current_span().get_span_context()
    return (span_context.trace_id, span_context.span_id) if span_context.is_valid else None


class Scrubber:
    """Replaces secrets in a finished log line (see the module docstring)."""

    def __init__(self, secret_values: Iterable[str], redact_fields: Iterable[str] = ()) -> None:
        values: set[str] = set()
        for value in secret_values:
            # Very short values would mask ordinary words; none of cutover's secrets are that short.
            if len(value) >= 6:
                values.add(value)
                values.add(orjson.dumps(value).decode()[1:-1])  # as it appears inside a JSON line
        self._values = sorted(values, key=len, reverse=True)  # longest first: a secret may contain another
        extra = [re.escape(name) for name in redact_fields]
        pattern = _SECRET_FIELD.pattern + ("|" + "|".join(extra) if extra else "")
        self._field = re.compile(pattern, re.I)

    def secret_field(self, name: str) -> bool:
        return self._field.search(name) is not None

    def scrub(self, line: str) -> str:
        for value in self._values:
            if value in line:
                line = line.replace(value, MASK)
        for pattern, replacement in _CREDENTIAL_PATTERNS:
            line = pattern.sub(replacement, line)
        return line


class JsonFormatter(logging.Formatter):
    def __init__(self, scrubber: Scrubber, *, component: str) -> None:
        super().__init__()
        self._scrubber = scrubber
        self._component = component

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "component": self._component,
            "message": record.getMessage(),
        }
        context = LOG_CONTEXT.get()
        if context is not None:
            document["request_id"] = request_id(context)
        ids = _trace_ids(context)
        if ids is not None:
            document["trace_id"] = f"{ids[0]:032x}"
            document["span_id"] = f"{ids[1]:016x}"
        for name, value in record.__dict__.items():
            if name not in _RECORD_FIELDS and not name.startswith("_"):
                document[name] = MASK if self._scrubber.secret_field(name) else value
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        line = orjson.dumps(document, default=str).decode()
        return self._scrubber.scrub(line)


class ScrubbingTextFormatter(logging.Formatter):
    """The plain-text format (`telemetry.log_format: text`), scrubbed the same way."""

    def __init__(self, scrubber: Scrubber, *, component: str) -> None:
        super().__init__(f"%(asctime)s %(levelname)s %(name)s [{component}] %(message)s")
        self._scrubber = scrubber

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = LOG_CONTEXT.get()
        if context is not None:
            line += f" request_id={request_id(context)}"
        ids = _trace_ids(context)
        if ids is not None:
            line += f" trace_id={ids[0]:032x}"
        return self._scrubber.scrub(line)


def secret_values(model: BaseModel) -> list[str]:
    """Every `SecretStr` value in a settings tree, plus the password inside any URL-shaped one and the
    credential of an `Authorization`-style value."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, SecretStr):
            secret = value.get_secret_value()
            found.append(secret)
            password = re.match(r"^[a-z][a-z0-9+.-]*://[^/@:]*:([^/@]+)@", secret, re.I)
            if password:
                found.append(password.group(1))
            scheme, _, credential = secret.partition(" ")
            if credential and scheme.lower() in _AUTH_SCHEMES:  # "Bearer x": x alone is the secret
                found.append(credential.strip())
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name))
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)

    walk(model)
    return found


def _not_uvicorn_lifecycle(record: logging.LogRecord) -> bool:
    return not (record.name == "uvicorn.error" and record.msg in _UVICORN_LIFECYCLE)


def configure_logging(settings: Settings, *, component: str) -> logging.Handler:
    """Route every logger (cutover's, uvicorn's, libraries') through one scrubbing handler on stderr."""
    scrubber = Scrubber(secret_values(settings), settings.telemetry.redact_fields)
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_not_uvicorn_lifecycle)
    formatter: logging.Formatter
    if settings.telemetry.log_format == "json":
        formatter = JsonFormatter(scrubber, component=component)
    else:
        formatter = ScrubbingTextFormatter(scrubber, component=component)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    return handler


def _timestamp(created: float) -> str:
    seconds = int(created)
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int((created - seconds) * 1000):03d}Z"
    )
