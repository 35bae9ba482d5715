"""`cutover phase get | set | rollback`: read or change tenants' phases through the admin API's one audited
path (`PUT /tenants/{tenant}/phase`). `phase set` with a selector (`--tenants`, `--match`, `--percent`)
or `--dry-run` is a fleet move (`proxy.cli.fleet`)."""

from __future__ import annotations

import argparse
from typing import Any

from proxy.cli.fleet import add_fleet_arguments, is_fleet_move, run_fleet_move
from proxy.cli.support import EXIT_OK, EXIT_REFUSED, CommandError, examples, format_table, print_json
from proxy.cli.target import add_admin_options, admin_client

# Every guard `force` lifts, as `PUT /tenants/{tenant}/phase` applies them (proxy.admin.app's set_phase,
# routing.phases.allowed_moves); what it never lifts is listed too, so nobody reaches for it in vain.
FORCE_HELP = (
    "override the guards an operator may take responsibility for: leaving complete (old has stopped"
    " receiving writes: copy what it missed before it serves again), the dead-letter guard (moving past"
    " dual_write while the tenant has dead letters), the verify gate (moving into complete without a"
    " passing, current verify report of every covered table), the copy gate (moving into live while a"
    " tenant's REST copy is unfinished); never lifted: one step forward at a time,"
    " a missing applier for the mirrored side, a version conflict, the authority barrier's drain"
)


def add_phase_commands(commands: Any) -> None:
    phase = commands.add_parser(
        "phase",
        help="read or change a tenant's phase",
        **examples("cutover phase get acme", 'cutover phase set acme dual_write --reason "start mirroring"'),
    )
    actions = phase.add_subparsers(title="phase commands", metavar="ACTION")
    get = actions.add_parser(
        "get", help="show a tenant's phase", **examples("cutover phase get acme", admin=True)
    )
    add_admin_options(get)
    get.add_argument("tenant")
    get.set_defaults(run=_get)
    set_ = actions.add_parser(
        "set",
        help="move a tenant, or many, to a phase (audited)",
        **examples(
            'cutover phase set acme dual_write --reason "start mirroring writes to new"',
            'cutover phase set acme shadow --reason "compare" --expected-version 3',
            'cutover phase set --tenants globex,initech dual_write --reason "wave 1" --dry-run',
            "cutover phase set --match 'eu-*' --percent 10 shadow --reason \"wave 2: 10 % of eu\"",
            'cutover phase set acme rampdown --force --reason "leave complete: new lost writes"',
            admin=True,
        ),
    )
    add_admin_options(set_)
    add_fleet_arguments(set_)
    set_.add_argument("--reason", required=True, help="why (kept in the audit log)")
    set_.add_argument("--force", action="store_true", help=FORCE_HELP)
    set_.add_argument("--expected-version", type=int, help="refuse if the tenant changed meanwhile")
    set_.set_defaults(run=_set)
    rollback = actions.add_parser(
        "rollback",
        help="undo a tenant's last phase change (audited)",
        **examples(
            'cutover phase rollback acme --reason "divergence on /orders"',
            'cutover phase rollback acme --force --reason "leave complete"',
            admin=True,
        ),
    )
    add_admin_options(rollback)
    rollback.add_argument("tenant")
    rollback.add_argument("--reason", required=True, help="why (kept in the audit log)")
    rollback.add_argument("--force", action="store_true", help=FORCE_HELP)
    rollback.set_defaults(run=_rollback)


def _get(args: argparse.Namespace) -> int:
    body = admin_client(args).get(f"/tenants/{args.tenant}")
    if args.json:
        return print_json(body)
    print(
        format_table(["TENANT", "PHASE", "VERSION"], [[body["tenant"], body["phase"], str(body["version"])]])
    )
    return EXIT_OK


def _set(args: argparse.Namespace) -> int:
    if is_fleet_move(args):
        return run_fleet_move(args, admin_client(args))
    body = admin_client(args).put(
        f"/tenants/{args.tenant}/phase",
        {
            "phase": args.phase,
            "reason": args.reason,
            "force": args.force,
            "expected_version": args.expected_version,
        },
    )
    if args.json:
        return print_json(body)
    print(f"{body['tenant']} is now {body['phase']} (version {body['version']})")
    return EXIT_OK


def _rollback(args: argparse.Namespace) -> int:
    client = admin_client(args)
    entries = client.get("/audit", tenant=args.tenant, limit=1)["entries"]
    if not entries:
        raise CommandError(
            "nothing_to_roll_back",
            f"tenant {args.tenant!r} has no phase change to roll back",
            exit_code=EXIT_REFUSED,
        )
    last = entries[0]
    body = client.put(
        f"/tenants/{args.tenant}/phase",
        {
            "phase": last["from"],
            "reason": f"rollback of change #{last['id']}: {args.reason}",
            "force": args.force,
            "expected_version": last["version"],
        },
    )
    if args.json:
        return print_json(body)
    print(f"{body['tenant']} rolled back {last['to']} -> {body['phase']} (version {body['version']})")
    return EXIT_OK
