"""What `cutover backfill` prints: a run's report (tables, then REST resources), and `cutover backfill
status [TENANT]`, the copies as the admin API reports them (`GET /tenants/{tenant}/copy`, `GET /copy`)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from proxy.admin.limits import COPIES_PAGE_MAX
from proxy.cli.support import EXIT_OK, format_table, print_json
from proxy.cli.target import admin_client

if TYPE_CHECKING:
    from backfill.runner import BackfillReport


def print_report(report: BackfillReport) -> None:
    if report.tables:
        if report.dry_run:
            rows = [
                [t.name, t.transform or "-", f"{t.total_rows_copied:,}", f"{t.rows_pending or 0:,}"]
                for t in report.tables
            ]
            print(format_table(["TABLE", "TRANSFORM", "COPIED BEFORE", "TO COPY"], rows))
        else:
            rows = [
                [
                    t.name,
                    t.transform or "-",
                    "resumed" if t.resumed else "new",
                    f"{t.rows_copied:,}",
                    f"{t.rows_written:,}",
                    str(t.chunks),
                    f"{t.total_rows_copied:,}",
                ]
                for t in report.tables
            ]
            header = ["TABLE", "TRANSFORM", "RUN", "COPIED", "WRITTEN", "CHUNKS", "TOTAL COPIED"]
            print(format_table(header, rows))
    if report.resources:
        rows = [
            [
                r.name,
                r.run,
                str(r.pages),
                f"{r.items_listed:,}",
                "-" if report.dry_run else f"{r.items_copied:,}",
                "-" if report.dry_run else f"{r.items_skipped:,}",
                "-" if r.total is None else f"{r.total:,}",
                f"{r.total_items_copied:,}",
            ]
            for r in report.resources
        ]
        header = ["RESOURCE", "RUN", "PAGES", "LISTED", "COPIED", "LEFT TO MIRRORING", "TOTAL"]
        header.append("TOTAL COPIED")
        print(format_table(header, rows))
    what = "dry run, nothing copied" if report.dry_run else "done"
    print(f"tenant {report.tenant} ({report.phase}): {what} in {report.seconds:.1f} s")


def show_copies(args: argparse.Namespace, tenant: str | None) -> int:
    client = admin_client(args)  # closed by `proxy.cli.main.main`
    if tenant is not None:
        tenants = [client.get(f"/tenants/{tenant}/copy")]
    else:
        tenants = client.take("/copy", "copies", limit=None, page_size=COPIES_PAGE_MAX)
    if args.json:
        body: Any = tenants[0] if tenant is not None else {"copies": tenants}
        return print_json(body)
    rows = [[t["tenant"], *_columns(r)] for t in tenants for r in t["resources"]]
    header = ["TENANT", "RESOURCE", "STATUS", "LISTED", "COPIED", "LEFT TO MIRRORING", "PROGRESS"]
    header += ["RATE/S", "ETA", "MIRRORED", "TRANSFERRED", "DELETES ABSENT"]
    print(format_table(header, rows))
    return EXIT_OK


def _columns(row: dict[str, Any]) -> list[str]:
    listed = f"{row.get('items_listed', 0):,}"
    if row.get("total"):
        listed += f"/{row['total']:,}"
    progress = row.get("progress")
    rate, eta = row.get("rate_per_s"), row.get("eta_s")
    status = row["status"] + (" (stale)" if row.get("stale") else "")
    return [
        row["resource"],
        status,
        listed,
        f"{row.get('items_copied', 0):,}",
        f"{row.get('items_skipped', 0):,}",
        "-" if progress is None else f"{100 * progress:.0f}%",
        "-" if rate is None else f"{rate:,.0f}",
        "-" if eta is None else f"{eta:,.0f} s",
        f"{row['items_mirrored']:,}",
        f"{row['intents_transferred']:,}",
        f"{row['deletes_absent']:,}",
    ]
