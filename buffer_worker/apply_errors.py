"""How an apply fails, decided by class so the worker's retry policy never parses text.

ApplyError
├── TransientApplyError   408/425/429/5xx, or an unexpected error: retried with backoff, up to
│   │                     `worker.max_attempts`, then dead-lettered with its reason
│   └── UnreachableError  connection failure or timeout: an outage, retried without limit
└── PermanentApplyError   any other 4xx: retrying cannot help; dead-letter and stop the tenant
    └── UnapplicableIntentError   a property of the intent itself (a write no resource maps, a request
                                  that cannot be built, a body the applier cannot use): a re-drive would
                                  fail the same way, so it is refused; resolve or discard the dead letter

After any failed attempt the intent is in doubt (the mirror may have applied it, or part of it): the
worker's next attempt settles it from the authoritative side where the applier can (`resolve`).
"""

from __future__ import annotations

from buffer_worker.intent import Intent


class ApplyError(Exception):
    """`status` is what failed, as a dead letter records it: the mirror's HTTP status ("422"), or the
    kind of a failure without one ("sqlstate 23505", "bad_response", "unreachable"); `excerpt` is the
    printable start of the answer (`backends.content.excerpt`) or of the server's message."""

    kind = "error"  # the status of an error that names none

    def __init__(
        self, intent: Intent, detail: str, *, status: str | None = None, excerpt: str | None = None
    ) -> None:
        self.intent = intent
        self.detail = detail
        self.status = status or self.kind
        self.excerpt = excerpt
        said = f": {excerpt}" if excerpt else ""
        super().__init__(f"intent {intent.intent_id} of tenant {intent.tenant!r}: {detail}{said}")


class TransientApplyError(ApplyError):
    pass


class UnreachableError(TransientApplyError):
    kind = "unreachable"


class PermanentApplyError(ApplyError):
    kind = "refused"


class UnapplicableIntentError(PermanentApplyError):
    kind = "unapplicable"
