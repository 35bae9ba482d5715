"""`cutover phase set` for many tenants: `--tenants a,b,c`, `--match 'eu-*'`, `--percent 10`, `--dry-run`.

Every tenant goes through the admin API's own phase change (`PUT /tenants/{tenant}/phase`), exactly as a
single `phase set` does: same rules, same guards (dead letters, the authority barrier), same audit, with
the version read for the plan as `expected_version` so a tenant changed meanwhile is refused, not
overwritten. The first refusal stops the run; what moved stays moved and is reported.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from proxy.admin_client import AdminClient, AdminClientError
from proxy.fleet import Selector, Step, StepKind, TenantState, parse_tenant_list, plan, select
from routing.phases import Phase
from routing.tenant import InvalidTenantError

EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2
_PHASES = [p.value for p in Phase]


class _TenantAndPhase(argparse.Action):
    """Positional `[TENANT] PHASE`: one value is the phase (a selector names the tenants), two are
    tenant and phase."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        items = list(values or [])
        if len(items) > 2:
            parser.error("expected [TENANT] PHASE")
        if items[-1] not in _PHASES:
            parser.error(f"invalid phase {items[-1]!r} (choose from {', '.join(_PHASES)})")
        namespace.tenant = items[0] if len(items) == 2 else None
        namespace.phase = items[-1]


def add_fleet_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", nargs="+", metavar="[TENANT] PHASE", action=_TenantAndPhase)
    group = parser.add_argument_group(
        "fleet moves",
        "move many tenants, one at a time through the same audited path; stop at the first"
        " refusal. Selectors combine (each narrows the one before)",
    )
    group.add_argument("--tenants", type=parse_tenant_list, metavar="A,B,C", help="these tenants, in order")
    group.add_argument("--match", metavar="PATTERN", help="known tenants matching a shell pattern ('eu-*')")
    group.add_argument(
        "--percent", type=float, metavar="P", help="known tenants whose stable hash bucket is below P (0-100]"
    )
    group.add_argument("--dry-run", action="store_true", help="show the plan, change nothing")


def is_fleet_move(args: argparse.Namespace) -> bool:
    """Anything but `phase set TENANT PHASE` (which keeps the single-tenant output and options)."""
    return (
        args.tenant is None
        or args.dry_run
        or args.tenants is not None
        or args.match is not None
        or args.percent is not None
    )


def run_fleet_move(args: argparse.Namespace, client: AdminClient) -> int:
    """Plan, and unless `--dry-run`, move; closes `client`."""
    try:
        return _run(args, client)
    finally:
        client.close()


def _run(args: argparse.Namespace, client: AdminClient) -> int:
    selector = _selector(args)
    if selector is None:
        return EXIT_USAGE
    target = Phase(args.phase)
    listing = client.tenants()
    default_phase = Phase(listing["default_phase"])
    states = {
        row["tenant"]: TenantState(Phase(row["phase"]), int(row["version"])) for row in listing["tenants"]
    }
    for row in listing["seen_in_traffic"]:
        states.setdefault(row["tenant"], TenantState(default_phase, 0))
    steps = plan(select(selector, states), states, target, default_phase=default_phase, force=args.force)
    report: dict[str, Any] = {
        "phase": target.value,
        "selector": selector.describe(),
        "known_tenants": len(states),
        "dry_run": args.dry_run,
        "plan": [step.as_json() for step in steps],
    }
    if not args.json:
        _print_plan(
            steps, target, selector, known=len(states), unknown=[s for s in steps if s.tenant not in states]
        )
    if args.dry_run:
        if args.json:
            return _print_json(report)
        print("dry run: nothing was changed")
        return EXIT_OK
    moved, refused = _execute(client, steps, args, selector, quiet=args.json)
    attempted = len(moved) + (refused is not None)
    to_move = [s for s in steps if s.kind is not StepKind.ALREADY_THERE]
    report.update(
        moved=moved,
        refused=refused,
        not_attempted=[s.tenant for s in to_move[attempted:]],
    )
    if args.json:
        _print_json(report)
    else:
        _print_summary(report, to_move)
    return EXIT_REFUSED if refused is not None else EXIT_OK


def _selector(args: argparse.Namespace) -> Selector | None:
    if args.tenant is not None and args.tenants is not None:
        _usage("give either TENANT or --tenants, not both")
        return None
    if args.expected_version is not None and (
        args.tenant is None or args.match is not None or args.percent is not None
    ):
        _usage("--expected-version applies to one tenant; fleet moves use the version they read")
        return None
    tenants = (args.tenant,) if args.tenant is not None else args.tenants
    try:
        selector = Selector(tenants=tenants, match=args.match, percent=args.percent)
    except (ValueError, InvalidTenantError) as exc:
        _usage(str(exc))
        return None
    if selector.empty:
        _usage("name a TENANT, or select tenants with --tenants, --match or --percent")
        return None
    return selector


def _usage(message: str) -> None:
    print(f"cutover: {message}", file=sys.stderr)


def _execute(
    client: AdminClient, steps: list[Step], args: argparse.Namespace, selector: Selector, *, quiet: bool
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    to_move = [s for s in steps if s.kind is not StepKind.ALREADY_THERE]
    moved: list[dict[str, Any]] = []
    for index, step in enumerate(to_move, start=1):
        reason = f"{args.reason} [fleet move {index}/{len(to_move)}: {selector.describe()}]"
        try:
            body = client.put(
                f"/tenants/{step.tenant}/phase",
                {
                    "phase": step.target.value,
                    "reason": reason,
                    "force": args.force,
                    "expected_version": step.version,
                },
            )
        except AdminClientError as exc:
            refused: dict[str, Any] = {
                "tenant": step.tenant,
                "status": exc.status,
                "error": exc.code,
                "detail": exc.detail,
            }
            if "allowed" in exc.body:
                refused["allowed"] = exc.body["allowed"]
            if not quiet:
                print(f"REFUSED {step.tenant}: {exc.code}: {exc.detail}")
            return moved, refused
        moved.append(
            {
                "tenant": step.tenant,
                "from": step.current.value,
                "to": body["phase"],
                "version": body["version"],
            }
        )
        if not quiet:
            print(
                f"moved   {step.tenant}: {step.current.value} -> {body['phase']} (version {body['version']})"
            )
    return moved, None


def _print_plan(
    steps: list[Step], target: Phase, selector: Selector, *, known: int, unknown: list[Step]
) -> None:
    counts = {kind: sum(1 for s in steps if s.kind is kind) for kind in StepKind}
    print(
        f"plan: {len(steps)} tenants selected by {selector.describe()} (of {known} known) -> {target.value}:"
        f" {counts[StepKind.MOVE]} to move, {counts[StepKind.ALREADY_THERE]} already there,"
        f" {counts[StepKind.NOT_ALLOWED]} not allowed"
    )
    unknown_names = {s.tenant for s in unknown}
    for number, step in enumerate(steps, start=1):
        note = {
            StepKind.MOVE: "",
            StepKind.ALREADY_THERE: "  (already there: skipped)",
            StepKind.NOT_ALLOWED: "  (NOT ALLOWED by the phase rules: a run stops here)",
        }[step.kind]
        if step.tenant in unknown_names:
            note += "  (unknown: no phase row, not seen in traffic)"
        print(f"  {number:>3}. {step.tenant}  {step.current.value} -> {step.target.value}{note}")


def _print_summary(report: dict[str, Any], to_move: list[Step]) -> None:
    moved = report["moved"]
    line = f"moved {len(moved)} of {len(to_move)}"
    if report["refused"] is not None:
        refused = report["refused"]
        line += f"; stopped at {refused['tenant']} ({refused['error']})"
        if "allowed" in refused:
            line += f"; its allowed moves: {', '.join(refused['allowed']) or 'none'}"
        if report["not_attempted"]:
            line += f"; not attempted: {', '.join(report['not_attempted'])}"
    print(line)


def _print_json(body: Any) -> int:
    print(json.dumps(body, indent=2, sort_keys=True))
    return EXIT_OK
