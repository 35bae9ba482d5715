"""Apply intents by replaying the write to the mirrored backend over HTTP, or, when the intent is in
doubt, by settling its record from the authoritative side.

Replay: every request carries `Idempotency-Key: <intent id>` (a backend that honours it applies a
re-sent intent once; most do not, hence the worker's ledger and settling). Creates converge on one
identity: when the authoritative side answered with a `Location` on the same service, the mirror gets a
`PUT` to that location; otherwise, when its JSON answer carried the id field, the id is put into the
replayed body. A `DELETE` the mirror answers 404 or 410 is already applied.

Settling (`resolve`): an intent whose fate is unknown (delivered before to a worker that died, re-read
after a Redis error, a previous attempt that failed or timed out, or a ledger that says "sending") is not
sent again. Its record (`buffer_worker.records`) is read on the authoritative side (the side the intent
does not target) and on the mirror: equal, nothing to do; otherwise the authoritative state is written
to the mirror, with a PUT when the mirror holds the record, in the resource's create style when it does
not (`put` to the record, or `post` to the collection with the id in the body), and with a DELETE when
the authoritative side has no record. This is right because every intent is appended after its write
committed on the authoritative side and a partition applies in order: setting the record to the
authoritative state satisfies this intent and every earlier one of that record, and later ones are
applied after it. A replay whose answer shows that the mirror diverged from what the intent assumed
(404 to a PUT or PATCH; 409, 422 or 5xx to a create) is settled the same way instead of being retried or
dead-lettered. Records written to paths listed in `worker.state_transfer` are always settled.
A write no resource describes has no record to read, so it can only be replayed, in doubt or not.

Every request goes through the shared backend client (`backends.BackendClient`), one per side, so a
mirrored write carries the same credentials and header rewrites as the client's own request to that
backend. Failures are `buffer_worker.apply_errors`: an answer of 408/425/429/5xx is transient, any other
4xx permanent, no answer at all (refused, reset, timed out) an outage; each carries the status and an
excerpt of the answer (decompressed and decoded: `backends.content`) for its dead letter.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import orjson
from opentelemetry import trace

from backends.client import Answer, BackendClient
from backends.content import excerpt
from backends.errors import BackendFailure
from buffer_worker.apply_errors import (
    PermanentApplyError,
    TransientApplyError,
    UnapplicableIntentError,
    UnreachableError,
)
from buffer_worker.copy_marks import Outcomes
from buffer_worker.intent import Intent
from buffer_worker.records import Record, RecordMap, json_field, json_object
from config.settings import Settings
from routing.phases import Side
from telemetry.tracing import traceparent_of

_TRANSIENT_STATUSES = frozenset({408, 425, 429})
_GONE = (404, 410)
# Answers to a settling write that mean the mirror changed between the read and the write: settled again.
_RACED = frozenset({404, 409, 410, 422})


# Headers that describe a representation: a settling write carries the authoritative answer's, never the
# intent's (whose body it does not send).
_REPRESENTATION = ("content-type", "content-encoding", "content-language")


@dataclass(frozen=True, slots=True)
class _State:
    """A record's representation on one side."""

    body: bytes
    headers: tuple[tuple[str, str], ...]  # its representation headers

    def document(self) -> Any:
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return self.body


class HttpApplier:
    def __init__(self, settings: Settings) -> None:
        self._records = RecordMap(settings)
        self._backends = {side: BackendClient.of(settings, side) for side in Side}
        self._tenant_header = settings.tenant.header
        self._id_field = settings.worker.id_field
        self._timeout_s = settings.worker.apply_timeout_s
        self._started = False
        # What was settled, or found absent, for records of REST resources: the copies' facts.
        self.outcomes = Outcomes()

    @property
    def records(self) -> RecordMap:
        return self._records

    async def start(self) -> None:
        for backend in self._backends.values():
            await backend.start()
        self._started = True

    async def close(self) -> None:
        for backend in self._backends.values():
            await backend.close()

    async def apply(self, intent: Intent) -> None:
        """Apply an intent delivered for the first time: replay it (or settle a state-transfer record)."""
        assert self._started, "HttpApplier.start() was not awaited"
        record = self._records.of(intent)
        if record is not None and record.state_transfer:
            await self.settle(intent, record)
            return
        method, path, body = self._replay_form(intent)
        answer = await self._call(
            intent, intent.target, method, path, intent.query, body, self._headers(intent)
        )
        if _applied(method, answer.status):
            if record is not None and method == "DELETE" and answer.status in _GONE:
                self._note(intent, record, "delete_absent")  # nothing to delete: new never held it
            return
        if record is not None and _diverged(intent.method, method, answer.status):
            await self.settle(intent, record)
            return
        raise _failure(intent, method, path, answer)

    async def resolve(self, intent: Intent) -> None:
        """Apply an intent whose fate is in doubt: settle its record; replay one no resource describes."""
        record = self._records.of(intent)
        if record is None:
            await self.apply(intent)
            return
        await self.settle(intent, record)

    async def resolve_dead_letter(self, intent: Intent) -> str:
        """An operator's resolution of a dead letter: its record set from the authoritative side, also for
        a path no resource describes (as `worker.state_transfer` would). Returns what was sent."""
        record = self._records.for_resolution(intent)
        if record is None:
            raise UnapplicableIntentError(
                intent, f"no resource describes the record {intent.method} {intent.path} created"
            )
        return await self.settle(intent, record)

    async def settle(self, intent: Intent, record: Record) -> str:
        """Set `record` on the mirror to its state on the authoritative side. Returns what was done:
        `equal` (nothing to do), or the method sent."""
        assert self._started, "HttpApplier.start() was not awaited"
        wanted = await self._read(intent, intent.target.other, record.path)
        held = await self._read(intent, intent.target, record.path)
        if wanted is None:
            if held is None:
                if intent.method == "DELETE":
                    self._note(intent, record, "delete_absent")  # nothing to delete: new never held it
                return "equal"
            method, path, body = "DELETE", record.path, b""
        elif held is not None and _same(wanted, held, record.ignore_fields):
            return "equal"
        elif held is not None:
            method, path, body = "PUT", record.path, wanted.body
        else:  # in the resource's create style: a POST carries the id in its body
            method, path = record.create
            body = _with_id(wanted.body, record) if method == "POST" else wanted.body
        # A fresh key: a backend that honours Idempotency-Key must not answer this write from its memory
        # of the intent's earlier replay (which carried another body).
        headers = self._headers(intent, key=f"{intent.intent_id}.{os.urandom(4).hex()}", own=False)
        if wanted is not None:
            headers.update(wanted.headers)
        answer = await self._call(intent, intent.target, method, path, "", body, headers, " to settle")
        if _applied(method, answer.status):
            self._note(intent, record, "transferred")
            return method
        failure = _failure(intent, method, path, answer)
        if answer.status in _RACED:  # the mirror changed since it was read: read both sides again
            raise TransientApplyError(intent, failure.detail)
        raise failure

    def _note(self, intent: Intent, record: Record, how: str) -> None:
        if record.resource and intent.target is Side.NEW:  # the copies go old -> new
            self.outcomes.note(intent.tenant, record.resource, how)

    async def transfer_state(self, intent: Intent, path: str) -> str:
        """Set the key at `path` on `intent.target` to its current state on the other (authoritative) side:
        a PUT of the representation it answers, or a DELETE when it has none. Returns the method sent.
        What `cutover verify --repair` sends for a differing REST record."""
        assert self._started, "HttpApplier.start() was not awaited"
        wanted = await self._read(intent, intent.target.other, path)
        headers = self._headers(intent, own=False)
        method, body = ("DELETE", b"") if wanted is None else ("PUT", wanted.body)
        if wanted is not None:
            headers.update(wanted.headers)
        answer = await self._call(intent, intent.target, method, path, "", body, headers)
        if not _applied(method, answer.status):
            raise _failure(intent, method, path, answer)
        return method

    async def _read(self, intent: Intent, side: Side, path: str) -> _State | None:
        """The record at `path` on `side`; None when that side has none (404/410)."""
        headers = self._headers(intent, own=False)
        headers.pop("idempotency-key", None)
        answer = await self._call(intent, side, "GET", path, "", b"", headers, " for a state read")
        if answer.status == 200:
            found = tuple((name, answer.headers[name]) for name in _REPRESENTATION if name in answer.headers)
            return _State(answer.body, found)
        if answer.status in _GONE:
            return None
        raise TransientApplyError(
            intent,
            f"{side} answered {answer.status} to the state read of {path}",
            status=str(answer.status),
            excerpt=excerpt(answer.body, answer.headers),
        )

    async def _call(
        self,
        intent: Intent,
        side: Side,
        method: str,
        path: str,
        query: str,
        body: bytes,
        headers: dict[str, str],
        purpose: str = "",
    ) -> Answer:
        try:
            return await self._backends[side].call(
                method, path, query=query, headers=headers.items(), body=body, timeout_s=self._timeout_s
            )
        except BackendFailure as exc:
            if exc.kind == "invalid_request":  # the same request would be refused again: never retry it
                raise UnapplicableIntentError(intent, exc.detail, status=exc.kind) from exc
            if exc.kind == "bad_response":  # the mirror answers, but not in HTTP: counted like a 5xx
                raise TransientApplyError(intent, exc.detail, status=exc.kind) from exc
            raise UnreachableError(
                intent, f"{side} unreachable{purpose}: {exc.kind}", status=exc.kind
            ) from exc

    def _replay_form(self, intent: Intent) -> tuple[str, str, bytes]:
        if intent.method != "POST" or not 200 <= intent.status < 300:
            return intent.method, intent.path, intent.body
        location = self._records.created_location(intent)
        if location is not None:
            return "PUT", location, intent.body
        created_id = json_field(intent.response_body, self._id_field)
        if created_id is not None:
            document = json_object(intent.body)
            if document is not None:
                document[self._id_field] = created_id
                return "POST", intent.path, orjson.dumps(document)
        return intent.method, intent.path, intent.body

    def _headers(self, intent: Intent, *, key: str | None = None, own: bool = True) -> dict[str, str]:
        """The apply's own headers; the backend client then applies the side's rewrites and credentials,
        as it does to a client's request. With `own`, the intent's request headers too (a replay); never
        for a state read or a settling write, which must not be conditional (If-Match) nor describe a
        body they do not send (Content-Encoding)."""
        headers = {name.lower(): value for name, value in intent.headers} if own else {}
        if intent.tenant:
            headers[self._tenant_header.lower()] = intent.tenant
        headers["idempotency-key"] = key or intent.intent_id
        # The worker's span for this apply, when tracing: the mirror continues the write's trace.
        traceparent = traceparent_of(trace.get_current_span())
        if traceparent is not None:
            headers["traceparent"] = traceparent
        return headers


def _applied(method: str, status: int) -> bool:
    return 200 <= status < 300 or (method == "DELETE" and status in _GONE)


def _diverged(intent_method: str, sent_method: str, status: int) -> bool:
    """The answer says the mirror is not in the state the intent assumed: the record it updates is not
    there, or the record it creates is there already (answered as a conflict, or as json-server does,
    500 "duplicate id"). Settling tells that apart from a failing mirror, which fails the settle too."""
    if sent_method in ("PUT", "PATCH") and status in _GONE:
        return True
    return intent_method == "POST" and (status in (409, 422) or status >= 500)


def _failure(
    intent: Intent, method: str, path: str, answer: Answer
) -> PermanentApplyError | TransientApplyError:
    detail = f"{intent.target} answered {answer.status} to {method} {path}"
    said = {"status": str(answer.status), "excerpt": excerpt(answer.body, answer.headers)}
    if answer.status >= 500 or answer.status in _TRANSIENT_STATUSES:
        return TransientApplyError(intent, detail, **said)
    return PermanentApplyError(intent, detail, **said)


def _same(wanted: _State, held: _State, ignore_fields: tuple[str, ...]) -> bool:
    if wanted.body == held.body:
        return True
    left, right = wanted.document(), held.document()
    if ignore_fields and isinstance(left, dict) and isinstance(right, dict):
        left = {k: v for k, v in left.items() if k not in ignore_fields}
        right = {k: v for k, v in right.items() if k not in ignore_fields}
    return bool(left == right)


def _with_id(body: bytes, record: Record) -> bytes:
    """The representation to POST as a create: with the record's id, which the collection must keep."""
    document = json_object(body)
    if document is None or record.id_field in document:
        return body
    document[record.id_field] = unquote(record.key)
    return orjson.dumps(document)
