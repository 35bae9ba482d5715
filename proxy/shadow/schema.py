"""Tables of the divergence engine (created with the rest by `proxy.control.schema.ensure_schema`).

- `cutover_divergence` (created there) gains the resource, kept request headers, compared response
  headers, the divergent fields of the sample (for "example ids" of a field) and its verdict.
- `cutover_shadow_count`: per tenant and resource, cumulative counts of comparisons by outcome.
- `cutover_shadow_field`: per tenant, resource and field, how often it diverged and how often it was noise.
- `cutover_shadow_window`: per tenant and phase, counts per second, read by the automatic rollback over its
  sliding window and pruned beyond it.
Counters are written as increments (`x = x + EXCLUDED.x`) by every shadow process, so any number of
proxies add up in one place.
"""

from __future__ import annotations

# The ALTERs run only when a column is missing: ALTER TABLE takes an exclusive lock even when it has
# nothing to do, and this runs whenever a proxy (re)connects to the store.
DIVERGENCE_SCHEMA = """
DO $$ BEGIN
IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()
               AND table_name = 'cutover_divergence' AND column_name = 'notes') THEN
    ALTER TABLE cutover_divergence ADD COLUMN IF NOT EXISTS resource text NOT NULL DEFAULT '';
    ALTER TABLE cutover_divergence ADD COLUMN IF NOT EXISTS verdict text NOT NULL DEFAULT 'divergent';
    ALTER TABLE cutover_divergence ADD COLUMN IF NOT EXISTS request_headers jsonb NOT NULL DEFAULT '[]';
    ALTER TABLE cutover_divergence ADD COLUMN IF NOT EXISTS response_headers jsonb NOT NULL DEFAULT '{}';
    ALTER TABLE cutover_divergence ADD COLUMN IF NOT EXISTS fields text[] NOT NULL DEFAULT '{}';
    ALTER TABLE cutover_divergence ADD COLUMN IF NOT EXISTS notes jsonb NOT NULL DEFAULT '[]';
END IF;
END $$;
CREATE INDEX IF NOT EXISTS cutover_divergence_at ON cutover_divergence (at);
CREATE INDEX IF NOT EXISTS cutover_divergence_fields ON cutover_divergence USING gin (fields);
CREATE TABLE IF NOT EXISTS cutover_shadow_count (
    tenant      text NOT NULL,
    resource    text NOT NULL,
    compared    bigint NOT NULL DEFAULT 0,
    equal       bigint NOT NULL DEFAULT 0,
    noise       bigint NOT NULL DEFAULT 0,
    divergent   bigint NOT NULL DEFAULT 0,
    failed      bigint NOT NULL DEFAULT 0,
    new_errors  bigint NOT NULL DEFAULT 0,
    skipped     bigint NOT NULL DEFAULT 0,
    first_at    timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, resource)
);
CREATE TABLE IF NOT EXISTS cutover_shadow_field (
    tenant      text NOT NULL,
    resource    text NOT NULL,
    field       text NOT NULL,
    divergent   bigint NOT NULL DEFAULT 0,
    noise       bigint NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, resource, field)
);
CREATE TABLE IF NOT EXISTS cutover_shadow_window (
    tenant      text NOT NULL,
    phase       text NOT NULL,
    at          timestamptz NOT NULL,
    compared    bigint NOT NULL DEFAULT 0,
    answered    bigint NOT NULL DEFAULT 0,
    divergent   bigint NOT NULL DEFAULT 0,
    new_errors  bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, phase, at)
);
CREATE INDEX IF NOT EXISTS cutover_shadow_window_at ON cutover_shadow_window (at);
"""
