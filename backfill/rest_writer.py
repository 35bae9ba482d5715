"""The copy's write of one record to new, in the resource's create style (`data.rest.resources[].create`):
a `PUT` to its record path (an upsert), a `POST` to the collection with the id in the body (json-server),
or a method and path of the resource's own.

A create that refuses a record already there (a POST answered 409, 422 or 5xx: json-server answers 500
"duplicate id") is followed by a `PUT` of the same representation to the record's path, which replaces
it. That happens when a run resumes a page it had partly written before it was killed: the copy holds
its claim on the record (`buffer_worker.copy_marks`), so no mirrored write is replaced, only the copy's
own earlier one. Each write carries its own `Idempotency-Key`, through the backend client every other
write to new uses.
"""

from __future__ import annotations

import asyncio
import time

from backends.client import Answer, BackendClient
from backends.errors import BackendFailure
from backfill.errors import DataError
from config.data import RestResource

_TRANSIENT = frozenset({408, 425, 429})
_ATTEMPTS = 4
_BACKOFF_S = 0.2
CREATED, REPLACED = "created", "replaced"


class CopyWriteError(DataError):
    def __init__(self, resource: str, key: str, detail: str) -> None:
        self.resource = resource
        self.key = key
        super().__init__(f"{resource}: record {key} could not be written to new: {detail}")


class ClaimLapsing(Exception):
    """The copy's claim on the record would lapse before a write sent now is answered: claim it again
    first (`backfill.rest_copy`)."""


class RecordWriter:
    def __init__(
        self,
        client: BackendClient,
        resource: RestResource,
        *,
        tenant: str,
        tenant_header: str,
        timeout_s: float,
        run_id: str,
    ) -> None:
        self._client = client
        self._resource = resource
        self._create = resource.create_call("{key}")  # filled per record: one string replace
        self._headers = [("content-type", "application/json"), (tenant_header, tenant)]
        self._timeout_s = timeout_s
        self._key_prefix = f"copy-{run_id}-"

    async def write(self, key: str, body: bytes, deadline: float) -> str:
        """Write the record `key` (one percent-encoded path segment) to new: `created` (or upserted), or
        `replaced` when the create found it there already. No request is sent that could be answered
        after `deadline` (`time.monotonic()`, the claim's): `ClaimLapsing` instead."""
        method, path = self._create[0], self._create[1].replace("{key}", key)
        answer: Answer | None = None
        if time.monotonic() + self._timeout_s < deadline:
            # The first attempt without the retry loop (a copy sends thousands a second); an outage or a
            # transient answer goes through the loop.
            try:
                answer = await self._client.call(
                    method, path, headers=self._with_key(key, method), body=body, timeout_s=self._timeout_s
                )
            except BackendFailure:
                answer = None
            if answer is not None and _transient(answer):
                answer = None
        if answer is None:
            answer = await self._send(key, method, path, body, deadline)
        if 200 <= answer.status < 300:
            return CREATED
        if method == "POST" and (answer.status in (409, 422) or answer.status >= 500):
            record_path = self._resource.record_path.replace("{key}", key)
            replaced = await self._send(key, "PUT", record_path, body, deadline)
            if 200 <= replaced.status < 300:
                return REPLACED
            raise CopyWriteError(
                self._resource.name,
                key,
                f"POST {path} answered {answer.status} ({_text(answer)}), then PUT {record_path} answered"
                f" {replaced.status} ({_text(replaced)})",
            )
        raise CopyWriteError(
            self._resource.name, key, f"{method} {path} answered {answer.status} ({_text(answer)})"
        )

    def _with_key(self, key: str, method: str) -> list[tuple[str, str]]:
        return [*self._headers, ("idempotency-key", f"{self._key_prefix}{key}-{method}")]

    async def _send(self, key: str, method: str, path: str, body: bytes, deadline: float) -> Answer:
        """One request, retried (with backoff) while new is unreachable or answers 408/425/429/502-504;
        what it answers then, or an error after the last attempt."""
        headers = self._with_key(key, method)
        delay_s = _BACKOFF_S
        for attempt in range(1, _ATTEMPTS + 1):
            if time.monotonic() + self._timeout_s >= deadline:
                raise ClaimLapsing(key)
            try:
                answer = await self._client.call(
                    method, path, headers=headers, body=body, timeout_s=self._timeout_s
                )
            except BackendFailure as exc:
                if attempt == _ATTEMPTS or exc.kind == "invalid_request":
                    raise CopyWriteError(self._resource.name, key, exc.detail) from None
            else:
                if not _transient(answer) or attempt == _ATTEMPTS:
                    return answer
            await asyncio.sleep(delay_s)
            delay_s *= 2
        raise AssertionError("unreachable")  # pragma: no cover


def _transient(answer: Answer) -> bool:
    return answer.status in _TRANSIENT or answer.status in (502, 503, 504)


def _text(answer: Answer) -> str:
    return answer.body[:200].decode(errors="replace").strip() or "no body"
