"""`cutover tenant archive | unarchive TENANT --reason` and `cutover tenants --archived` (through the admin
API: `proxy.admin.archive`). Registered by `proxy.cli.health` under `cutover tenant`."""

from __future__ import annotations

import argparse
from typing import Any

from proxy.cli.support import EXIT_OK, examples, format_table, print_json
from proxy.cli.target import add_admin_options, admin_client


def add_archive_commands(actions: Any) -> None:
    for name, archive in (("archive", True), ("unarchive", False)):
        sub = actions.add_parser(
            name,
            help="hide a tenant from listings, fleet moves and the status page, and freeze its phase"
            if archive
            else "list a tenant again and let its phase change",
            **examples(
                f'cutover tenant {name} lt-3f2a-live --reason "load test over"',
                f'cutover tenant {name} acme --reason "customer {"left" if archive else "back"}" --json',
                admin=True,
            ),
        )
        add_admin_options(sub)
        sub.add_argument("tenant")
        sub.add_argument("--reason", required=True, help="why (kept in the archive's audit log)")
        sub.set_defaults(run=_archive if archive else _unarchive)


def _archive(args: argparse.Namespace) -> int:
    body = admin_client(args).post(f"/tenants/{args.tenant}/archive", {"reason": args.reason})
    if args.json:
        return print_json(body)
    entry = body["archived"]
    state = "archived" if body["changed"] else "was already archived"
    print(
        f"{body['tenant']} {state} (by {entry['archived_by']} at {entry['archived_at']}: {entry['reason']})"
    )
    return EXIT_OK


def _unarchive(args: argparse.Namespace) -> int:
    body = admin_client(args).post(f"/tenants/{args.tenant}/unarchive", {"reason": args.reason})
    if args.json:
        return print_json(body)
    print(f"{body['tenant']} {'unarchived' if body['changed'] else 'was not archived'}")
    return EXIT_OK


def print_archived(args: argparse.Namespace) -> int:
    """`cutover tenants --archived`."""
    tenants = admin_client(args).take("/archive", "tenants", limit=args.limit)
    if args.json:
        return print_json({"tenants": tenants})
    rows = [[t["tenant"], t["archived_at"], t["archived_by"], t["reason"]] for t in tenants]
    print(format_table(["TENANT", "ARCHIVED", "BY", "REASON"], rows))
    return EXIT_OK
