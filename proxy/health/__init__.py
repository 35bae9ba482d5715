"""Tenant health: per-tenant, per-side request counts and latencies recorded by each data-plane
process, flushed to PostgreSQL in fixed-width buckets, and read back as figures (one window's
traffic and shadow rates per side) for `proxy.admin.tenant_health` and the status page."""
