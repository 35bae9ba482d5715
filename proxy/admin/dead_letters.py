"""Admin API for dead letters: list them, and ask the partition's worker to re-drive, resolve or discard
them. Imported by `create_admin_app` once `proxy.admin.app` is loaded (it reuses its dependencies).

Every action needs write scope and is audited (`proxy.control.dead_letter_audit`) in the transaction that
queues it for the worker, which carries it out in the partition's own loop (`buffer_worker.dead_letters`).
Refused, with the reason, before anything is queued:
- a re-drive that would fail the same way: a dead letter whose cause is a property of the intent itself
  (a request that cannot be built, a write no resource maps);
- a resolution the worker cannot carry out: a dead letter whose record cannot be named (a create no
  resource describes), or a worker applying intents to PostgreSQL, which has no state transfer.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, Query
from pydantic import BaseModel, Field

from buffer_worker.dead_letters import CAUSE_INTENT
from buffer_worker.inspect import DeadLetter
from buffer_worker.records import RecordMap
from proxy.admin.errors import AdminError
from proxy.admin.guard import Reader, Writer
from proxy.admin.limits import DEAD_LETTERS_PAGE_MAX
from proxy.admin.pages import LIMIT_HELP, PageResponse, page_of, page_schema
from proxy.admin.params import DeadLetterCursor, PgText, Tenant, TenantFilter
from proxy.control.dead_letter_audit import list_actions, record_action
from proxy.runtime import Runtime
from routing.phases import Side


class RedriveRequest(BaseModel):
    reason: PgText = Field(default="re-drive", min_length=1, max_length=2000)


class ResolveRequest(BaseModel):
    reason: PgText = Field(min_length=1, max_length=2000)


class DiscardRequest(BaseModel):
    intent_id: PgText = Field(min_length=1, max_length=200)
    reason: PgText = Field(min_length=1, max_length=2000)


def _named(letter: DeadLetter) -> str:
    intent = letter.intent
    return f"intent {intent.intent_id} ({intent.method} {intent.path})"


def register_dead_letter_routes(app: FastAPI, runtime: Runtime) -> None:
    records = RecordMap(runtime.settings)
    inspector = runtime.inspector

    async def queue(
        tenant: str,
        who: Writer,
        action: str,
        intent_ids: list[str],
        reason: str,
        intent_id: str | None = None,
    ) -> int:
        async with runtime.pool.acquire() as conn, conn.transaction():
            audit_id = await record_action(
                conn, tenant, actor=who.name, action=action, intent_ids=intent_ids, reason=reason
            )
            if action == "redrive":
                await inspector.request_redrive(tenant)
            else:
                await inspector.request(action, tenant, intent_id)
        return audit_id

    async def letters_or_404(tenant: str) -> list[DeadLetter]:
        letters = await inspector.letters_of(tenant)
        if not letters:
            raise AdminError(404, "no_dead_letters", f"tenant {tenant!r} has no dead-lettered intents")
        return letters

    @app.get("/buffer/dead-letters", responses=page_schema("dead_letters"))
    async def dead_letters(
        _who: Reader,
        tenant: TenantFilter,
        limit: Annotated[int, Query(ge=1, le=DEAD_LETTERS_PAGE_MAX, description=LIMIT_HELP)] = 100,
        after: DeadLetterCursor = None,
    ) -> PageResponse:
        """Dead-lettered intents, oldest first."""
        rows = await inspector.dead_letters(tenant, limit=limit + 1, after=after)
        letters, next_cursor = page_of(rows, limit, key=lambda letter: str(letter["cursor"]))
        return PageResponse({"dead_letters": letters, "next": next_cursor})

    @app.get("/buffer/dead-letters/audit")
    async def dead_letter_audit(
        _who: Reader, tenant: TenantFilter, limit: Annotated[int, Query(ge=1, le=1000)] = 100
    ) -> dict[str, Any]:
        return {"entries": [a.as_json() for a in await list_actions(runtime.pool, tenant, limit=limit)]}

    @app.post(
        "/buffer/dead-letters/{tenant}/redrive",
        responses={422: {"description": "`redrive_refused`: a dead letter would fail the same way"}},
    )
    async def redrive(tenant: Tenant, who: Writer, body: RedriveRequest | None = None) -> dict[str, Any]:
        letters = await inspector.letters_of(tenant)
        for letter in letters:
            if letter.cause == CAUSE_INTENT:
                intent_id = letter.intent.intent_id
                raise AdminError(
                    422,
                    "redrive_refused",
                    f"{_named(letter)} cannot be applied as it is ({letter.reason}); a re-drive would fail"
                    f" the same way. Resolve it from the authoritative side (cutover dead-letters resolve"
                    f" {tenant}) or discard it (cutover dead-letters discard {tenant} --intent {intent_id}"
                    " --reason ...)",
                    intent_id=intent_id,
                    cause=letter.cause,
                )
        if not letters:
            return {"tenant": tenant, "requested": 0}
        reason = (body or RedriveRequest()).reason
        ids = [letter.intent.intent_id for letter in letters]
        audit_id = await queue(tenant, who, "redrive", ids, reason)
        return {"tenant": tenant, "requested": len(letters), "audit_id": audit_id}

    @app.post(
        "/buffer/dead-letters/{tenant}/resolve",
        responses={
            404: {"description": "`no_dead_letters`"},
            422: {"description": "`resolve_refused`: a record that cannot be named or read over HTTP"},
        },
    )
    async def resolve(tenant: Tenant, who: Writer, body: ResolveRequest) -> dict[str, Any]:
        letters = await letters_or_404(tenant)
        for letter in letters:
            side: Side = letter.intent.target
            if runtime.settings.worker.applier_toward(side) != "http":
                raise AdminError(
                    422,
                    "resolve_refused",
                    f"{_named(letter)} goes to {side}, which the PostgreSQL applier writes; resolving by"
                    " state transfer over HTTP needs the HTTP applier toward it: re-drive or discard it",
                    intent_id=letter.intent.intent_id,
                )
            if records.for_resolution(letter.intent) is None:
                raise AdminError(
                    422,
                    "resolve_refused",
                    f"{_named(letter)} created a record no resource names (data.rest.resources: its"
                    " list_path and id_field), so it cannot be read on either side; discard it, or describe"
                    " the resource and restart the workers",
                    intent_id=letter.intent.intent_id,
                )
        ids = [letter.intent.intent_id for letter in letters]
        audit_id = await queue(tenant, who, "resolve", ids, body.reason)
        return {"tenant": tenant, "requested": len(letters), "intent_ids": ids, "audit_id": audit_id}

    @app.post(
        "/buffer/dead-letters/{tenant}/discard",
        responses={404: {"description": "`no_dead_letters` or `dead_letter_not_found`"}},
    )
    async def discard(tenant: Tenant, who: Writer, body: DiscardRequest) -> dict[str, Any]:
        letters = await letters_or_404(tenant)
        if not any(letter.intent.intent_id == body.intent_id for letter in letters):
            raise AdminError(
                404,
                "dead_letter_not_found",
                f"tenant {tenant!r} has no dead-lettered intent {body.intent_id!r}",
                dead_letters=[letter.intent.intent_id for letter in letters[:20]],
            )
        audit_id = await queue(tenant, who, "discard", [body.intent_id], body.reason, body.intent_id)
        return {"tenant": tenant, "requested": 1, "intent_ids": [body.intent_id], "audit_id": audit_id}
