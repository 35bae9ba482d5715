"""Routing one request: its facts, then its plan and the bodies to send, the same two steps for a plain
request and for one to a SQL endpoint (whose statements decide read or write, may name the tenant, and
may need a body rewritten for `new`: `proxy.dataplane.sql_endpoint`)."""

from __future__ import annotations

from typing import NamedTuple

from proxy.dataplane.sql_endpoint import SqlRouted, SqlRouter
from routing.classify import RequestFacts, RequestKind
from routing.decide import Plan, decide
from routing.phases import Phase


class Routed(NamedTuple):
    plan: Plan
    body: bytes  # what the serving side (and old, when mirrored to) is sent
    new_body: bytes | None = None  # rewritten for new's dialect; None: `body`
    sql_read: bool = False  # a SQL endpoint request whose statements only read: safe to shadow


class Classified(NamedTuple):
    facts: RequestFacts
    sql: SqlRouted | None = None


class RequestRouter:
    def __init__(self, sql: SqlRouter | None = None) -> None:
        self._sql = sql

    def classify(self, facts: RequestFacts, raw_path: bytes, body: bytes) -> Classified:
        """The facts the request is routed by: those of its method and tenant header, or, for a SQL
        endpoint, what its statements do and the tenant they name. Raises `BadRequest`."""
        sql = self._sql
        if sql is None or (endpoint := sql.endpoint(facts.method, raw_path)) is None:
            return Classified(facts)
        routed = sql.classify(endpoint, body, facts.tenant)
        return Classified(RequestFacts(tenant=routed.tenant, kind=routed.kind, method=facts.method), routed)

    def route(self, classified: Classified, phase: Phase, body: bytes) -> Routed:
        """The plan in `phase` and the bodies it sends. Raises `Unprocessable` for SQL that cannot be
        routed safely in that phase."""
        routed = classified.sql
        if routed is None:
            return Routed(decide(phase, classified.facts.kind), body)
        assert self._sql is not None  # a SQL classification came from it
        sql_plan = self._sql.plan(phase, routed)
        return Routed(
            sql_plan.plan,
            body if sql_plan.old_body is None else sql_plan.old_body,
            sql_plan.new_body,
            sql_read=routed.kind is RequestKind.READ,
        )
