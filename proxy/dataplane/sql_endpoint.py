"""SQL endpoints on the data plane: read the SQL out of a JSON body, route by it, rewrite it for `new`.

The facts and the plan come from `routing.sql` / `routing.sql_scope` (pure); this module only reads and
rebuilds JSON bodies and maps SQL errors to client errors:

- text that cannot be routed (syntax, limits, parameters, tenant) → 400, nothing forwarded;
- a statement that cannot be routed safely in the tenant's phase (DDL during a migration, covered and
  uncovered tables together, no safe rewrite for a phase that sends it to `new`) → 422.

A read in the shadow phase whose statement cannot be rewritten is served by `old` unshadowed: the shadow
is an observation, and what it cannot observe must not change the client's answer.

A mirrored write that calls `now()`, `random()`, `UUID()`, … is pinned here (`routing.sql_volatile`):
its values are computed once, from this router's `Entropy` (the system clock and random sources), and
both bodies, the authoritative side's and the one the intent carries, are regenerated with the same
literals. Only such requests are regenerated for `old`; every other body reaches it byte for byte.
"""

from __future__ import annotations

import datetime
import logging
import random
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from config.settings import Settings
from config.sql import SqlEndpoint
from proxy.dataplane.errors import BadRequest, ProxyError, Unprocessable
from routing.classify import RequestKind
from routing.decide import Plan
from routing.phases import Phase, Side
from routing.sql import Params, Pinned, SqlRequest
from routing.sql_body import dump_document, read_body
from routing.sql_errors import SqlError, SqlRefusedError, SqlTenantError
from routing.sql_scope import needs_new, route_sql, without_shadow
from routing.sql_transpile import Transpiled
from routing.sql_volatile import Entropy

log = logging.getLogger("cutover.sql")

SYSTEM_ENTROPY = Entropy(
    now=lambda: datetime.datetime.now(datetime.UTC), random=random.random, uuid4=uuid.uuid4
)


@dataclass(frozen=True, slots=True)
class SqlRouted:
    """One request's SQL, classified: routing facts plus what is needed to rewrite its body."""

    endpoint: SqlEndpoint
    document: dict[str, Any]
    as_list: bool  # the SQL field held a list of texts
    params: tuple[Params, ...]
    sql: SqlRequest
    tenant: str | None

    @property
    def kind(self) -> RequestKind:
        return self.sql.kind


@dataclass(frozen=True, slots=True)
class SqlPlan:
    """The plan, and the bodies to send when they differ from the client's (None: the client's body)."""

    plan: Plan
    old_body: bytes | None = None  # pinned values written into the client's own dialect
    new_body: bytes | None = None  # rewritten for new's dialect (and pinned)


class SqlRouter:
    def __init__(self, settings: Settings, *, entropy: Entropy = SYSTEM_ENTROPY) -> None:
        config = settings.sql
        self._entropy = entropy
        self._endpoints = {(endpoint.method, endpoint.path): endpoint for endpoint in config.endpoints}
        self._covered = frozenset(config.covered_tables)
        self.source = settings.backends.old.sql_dialect or "postgres"
        self.target = settings.backends.new.sql_dialect or self.source
        self.analyzer = config.analyzer()
        # sqlglot logs a warning for every statement it keeps only as a command; clients control that text.
        logging.getLogger("sqlglot").setLevel(logging.ERROR)

    def endpoint(self, method: str, raw_path: bytes) -> SqlEndpoint | None:
        if not self._endpoints:
            return None
        return self._endpoints.get((method, raw_path.decode("latin-1")))

    def classify(self, endpoint: SqlEndpoint, body: bytes, header_tenant: str | None) -> SqlRouted:
        """Raises `BadRequest` (400) for a body or SQL that cannot be routed."""
        try:
            body_sql = read_body(body, endpoint.sql_field, endpoint.params_field)
            sql = self.analyzer.request(self.source, body_sql.texts, body_sql.params)
        except SqlError as exc:
            raise _client_error(exc) from None
        except Exception:  # noqa: BLE001 - a bug must not become a 5xx for a request nothing was sent for
            log.exception("SQL classification failed")
            raise BadRequest("the SQL could not be classified", code="sql_invalid") from None
        tenant = header_tenant
        if sql.tenant is not None:
            if header_tenant is not None and sql.tenant != header_tenant:
                raise _client_error(
                    SqlTenantError(
                        f"the statements pin tenant {sql.tenant!r} but the request is for {header_tenant!r}",
                        code="sql_tenant_mismatch",
                    )
                )
            tenant = sql.tenant
        return SqlRouted(endpoint, body_sql.document, body_sql.as_list, tuple(body_sql.params), sql, tenant)

    def plan(self, phase: Phase, routed: SqlRouted) -> SqlPlan:
        """The plan and the bodies it sends. Raises `Unprocessable`."""
        try:
            plan = route_sql(phase, routed.sql, self._covered)
        except SqlRefusedError as exc:
            raise _client_error(exc) from None
        if plan.mirror is not None and routed.sql.volatile:
            return self._pinned(plan, routed)
        if not needs_new(plan) or self.source == self.target:
            return SqlPlan(plan)
        try:
            rewritten = [self.analyzer.transpile(analysis, self.target) for analysis in routed.sql.analyses]
        except SqlRefusedError as exc:
            if plan.serving is Side.OLD and plan.mirror is not Side.NEW:
                log.debug("not shadowing a statement with no safe rewrite: %s", exc.detail)
                return SqlPlan(without_shadow(plan))
            raise _client_error(exc) from None
        return SqlPlan(plan, new_body=_rewrite(routed, rewritten))

    def _pinned(self, plan: Plan, routed: SqlRouted) -> SqlPlan:
        """A mirrored write's values fixed once, the same literals written into both sides' bodies."""
        pinned = self.analyzer.pin(routed.sql, self._entropy)
        try:
            old = self._rewritten(routed, pinned, self.source, keep_style=True)
            new = None if self.target == self.source else self._rewritten(routed, pinned, self.target)
        except SqlRefusedError as exc:
            raise _client_error(exc) from None
        return SqlPlan(plan, _rewrite(routed, old), None if new is None else _rewrite(routed, new))

    def _rewritten(
        self, routed: SqlRouted, pinned: Pinned, target: str, *, keep_style: bool = False
    ) -> list[Transpiled | None]:
        """Each text for `target` (None: the client's text, unchanged, for the client's own dialect)."""
        out: list[Transpiled | None] = []
        for analysis, parsed in zip(routed.sql.analyses, pinned.parsed, strict=True):
            if parsed is not None:
                out.append(
                    self.analyzer.transpile_pinned(
                        parsed, self.source, target, pinned.pins, keep_style=keep_style
                    )
                )
            elif target == self.source:
                out.append(None)
            else:
                out.append(self.analyzer.transpile(analysis, target))
        return out


def _client_error(exc: SqlError) -> ProxyError:
    fields = {key: value for key, value in exc.fields.items() if value is not None}
    if isinstance(exc, SqlRefusedError):
        return Unprocessable(exc.detail, code=exc.code, **fields)
    return BadRequest(exc.detail, code=exc.code, **fields)


def _rewrite(routed: SqlRouted, rewritten: Sequence[Transpiled | None]) -> bytes:
    """The same document with the SQL (and parameter order) rewritten; None keeps a text as sent."""
    endpoint = routed.endpoint
    document = dict(routed.document)
    sent = document[endpoint.sql_field]
    texts = sent if routed.as_list else [sent]
    params = [_reordered(values, result) for values, result in zip(routed.params, rewritten, strict=True)]
    new_texts = [
        text if result is None else result.text for text, result in zip(texts, rewritten, strict=True)
    ]
    if routed.as_list:
        document[endpoint.sql_field] = new_texts
        if endpoint.params_field in document:
            document[endpoint.params_field] = params
    else:
        document[endpoint.sql_field] = new_texts[0]
        if endpoint.params_field in document:
            document[endpoint.params_field] = params[0]
    return dump_document(document)


def _reordered(values: Params, result: Transpiled | None) -> Params:
    if result is None or result.param_order is None:
        return values
    if not isinstance(values, Sequence) or isinstance(values, Mapping):
        return values
    return [values[i] for i in result.param_order]
