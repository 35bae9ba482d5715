"""Known tenants, one page at a time: those with a phase row and those only seen in traffic, archived
ones left out, in one order (tenant id, as PostgreSQL collates it), so that `after=<last tenant of a
page>` continues exactly where the page ended.

Each side is read as an index range (`tenant > $after ORDER BY tenant LIMIT n`) and the union is cut to
the page in the same statement: a page costs `limit` rows of each table whatever the tables hold, and
no comparison happens in Python, where strings would not sort as the database's collation does.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from proxy.admin.pages import page_of
from proxy.control.tenant_archive import not_archived

_PHASE_ROWS = """
SELECT tenant, phase, version, updated_at, updated_by, NULL::timestamptz AS first_seen,
       NULL::timestamptz AS last_seen
  FROM cutover_tenant_phase t WHERE {visible} {also} ORDER BY tenant LIMIT $1
"""
_SEEN_ONLY = """
SELECT s.tenant, NULL, NULL, NULL, NULL, s.first_seen, s.last_seen
  FROM cutover_seen_tenant s
 WHERE NOT EXISTS (SELECT 1 FROM cutover_tenant_phase p WHERE p.tenant = s.tenant) AND {visible} {also}
 ORDER BY s.tenant LIMIT $1
"""
# Archived tenants are left out (proxy.control.tenant_archive): a probe of the archive's key per row.
_ROWS = _PHASE_ROWS.format(visible=not_archived("t.tenant"), also="{also}")
_SEEN = _SEEN_ONLY.format(visible=not_archived("s.tenant"), also="{also}")
# With and without a cursor: one statement each, so that both plans walk the primary keys.
_FIRST = {
    "both": f"SELECT * FROM (({_ROWS.format(also='')}) UNION ALL ({_SEEN.format(also='')}))"
    " AS known ORDER BY tenant LIMIT $1",
    "phase_rows": _ROWS.format(also=""),
}
_AFTER = {
    "both": f"SELECT * FROM (({_ROWS.format(also='AND t.tenant > $2')})"
    f" UNION ALL ({_SEEN.format(also='AND s.tenant > $2')})) AS known ORDER BY tenant LIMIT $1",
    "phase_rows": _ROWS.format(also="AND t.tenant > $2"),
}


async def list_tenants(pool: asyncpg.Pool, *, after: str | None, limit: int) -> dict[str, Any]:
    """`{"tenants": [phase rows], "seen_in_traffic": [seen only], "next": cursor}` for the `limit`
    tenants after `after`; rows as `TenantPhase.as_json()` shows them, but with datetime values."""
    statements, args = (_FIRST, ()) if after is None else (_AFTER, (after,))
    try:
        rows = await pool.fetch(statements["both"], limit + 1, *args)
    except asyncpg.UndefinedTableError:  # no proxy has recorded a tenant from traffic yet
        rows = await pool.fetch(statements["phase_rows"], limit + 1, *args)
    page, next_tenant = page_of(rows, limit, key=lambda row: str(row["tenant"]))
    tenants: list[dict[str, Any]] = []
    seen: list[dict[str, Any]] = []
    for row in page:
        # Datetimes stay datetimes: the page is encoded by orjson (`PageResponse`), ~30 times faster
        # than `isoformat()` per value, with the same text.
        if row["phase"] is not None:
            tenants.append(
                {
                    "tenant": row["tenant"],
                    "phase": row["phase"],
                    "version": row["version"],
                    "updated_at": row["updated_at"],
                    "updated_by": row["updated_by"],
                }
            )
        else:
            seen.append(
                {"tenant": row["tenant"], "first_seen": row["first_seen"], "last_seen": row["last_seen"]}
            )
    return {"tenants": tenants, "seen_in_traffic": seen, "next": next_tenant}
