"""Control-plane tables in PostgreSQL. Created idempotently at start by whichever process comes first."""

from __future__ import annotations

import asyncpg

from proxy.control.dead_letter_audit import DEAD_LETTER_AUDIT_SCHEMA
from proxy.control.tenant_archive import ARCHIVE_SCHEMA
from proxy.health.store import HEALTH_SCHEMA
from proxy.shadow.schema import DIVERGENCE_SCHEMA

PHASE_CHANNEL = "cutover_phase"
BARRIER_CHANNEL = "cutover_barrier"
# Any fixed 64-bit number: serialises concurrent schema creation by several proxies starting at once
# (CREATE TABLE IF NOT EXISTS alone races on pg_type's unique index).
_SCHEMA_LOCK = 0x6375_746F_7665_72

SCHEMA = """
CREATE TABLE IF NOT EXISTS cutover_tenant_phase (
    tenant      text PRIMARY KEY,
    phase       text NOT NULL,
    version     bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    updated_by  text NOT NULL
);
CREATE TABLE IF NOT EXISTS cutover_phase_audit (
    id          bigserial PRIMARY KEY,
    tenant      text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,
    from_phase  text NOT NULL,
    to_phase    text NOT NULL,
    version     bigint NOT NULL,
    forced      boolean NOT NULL DEFAULT false,
    reason      text NOT NULL
);
CREATE INDEX IF NOT EXISTS cutover_phase_audit_tenant ON cutover_phase_audit (tenant, id);
CREATE TABLE IF NOT EXISTS cutover_divergence (
    id              bigserial PRIMARY KEY,
    tenant          text NOT NULL,
    at              timestamptz NOT NULL DEFAULT now(),
    phase           text NOT NULL,
    method          text NOT NULL,
    path            text NOT NULL,
    query           text NOT NULL,
    serving_side    text NOT NULL,
    serving_status  integer,
    shadow_status   integer,
    serving_body    bytea,
    shadow_body     bytea,
    differences     jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS cutover_divergence_tenant ON cutover_divergence (tenant, id);
CREATE TABLE IF NOT EXISTS cutover_proxy (
    proxy_id      text PRIMARY KEY,
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now(),
    phases_loaded boolean NOT NULL DEFAULT false
);
CREATE TABLE IF NOT EXISTS cutover_barrier (
    id            bigserial PRIMARY KEY,
    tenant        text NOT NULL,
    from_phase    text NOT NULL,
    to_phase      text NOT NULL,
    from_version  bigint NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    outcome       text
);
CREATE TABLE IF NOT EXISTS cutover_barrier_ack (
    barrier_id  bigint NOT NULL REFERENCES cutover_barrier (id) ON DELETE CASCADE,
    proxy_id    text NOT NULL,
    acked_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (barrier_id, proxy_id)
);
"""


async def ensure_schema(conn: asyncpg.Connection) -> None:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
        await conn.execute(SCHEMA)
        await conn.execute(DIVERGENCE_SCHEMA)
        await conn.execute(DEAD_LETTER_AUDIT_SCHEMA)
        await conn.execute(HEALTH_SCHEMA)
        await conn.execute(ARCHIVE_SCHEMA)
