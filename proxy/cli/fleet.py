"""`cutover phase set` for many tenants: `--tenants a,b,c`, `--match 'eu-*'`, `--percent 10`, `--dry-run`.

A fleet move runs in three stages, and the first two change nothing:

1. **Names.** Tenants named explicitly (`--tenants`) that are neither in the phase table nor seen in
   traffic are most often typos, which a move would turn into phase rows of their own: the run is
   refused, naming them, unless `--create`.
2. **Check.** Every step is sent to the admin API's own phase change with `dry_run`: the same guards as
   a single `phase set` (the phase rules, the dead-letter guard, the verify gate, the mirror's applier,
   the version read for the plan, an archived tenant), nothing moved. If any step would be refused,
   nothing moves: the output lists each refusal. `--continue-on-refusal` moves the others instead.
3. **Move.** Each checked step goes through `PUT /tenants/{tenant}/phase` exactly as a single
   `phase set` does (audit, the authority barrier), with the version read for the plan as
   `expected_version`, so a tenant changed meanwhile is refused, not overwritten. What only a real move
   finds (a barrier that does not drain in time, a concurrent change) stops the run there, unless
   `--continue-on-refusal`; what moved stays moved and is reported.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from proxy.cli.admin_client import AdminClient, AdminClientError
from proxy.cli.support import EXIT_OK, EXIT_REFUSED, UsageError, exit_code_of, print_json
from proxy.control.fleet import (
    Selector,
    Step,
    StepKind,
    TenantState,
    parse_tenant_list,
    plan,
    select,
    unknown_named,
)
from routing.phases import Phase
from routing.tenant import InvalidTenantError

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
        "move many tenants through the same audited path, one at a time; every move is checked with\n"
        "the admin API first, and nothing moves if any would be refused. Selectors combine (each\n"
        "narrows the one before); archived tenants are never selected",
    )
    group.add_argument("--tenants", type=parse_tenant_list, metavar="A,B,C", help="these tenants, in order")
    group.add_argument("--match", metavar="PATTERN", help="known tenants matching a shell pattern ('eu-*')")
    group.add_argument(
        "--percent", type=float, metavar="P", help="known tenants whose stable hash bucket is below P (0-100]"
    )
    group.add_argument("--dry-run", action="store_true", help="show the plan and each check, change nothing")
    group.add_argument(
        "--create",
        action="store_true",
        help="move tenants named in --tenants that no phase row or traffic knows (refused by default: a typo"
        " would create a tenant)",
    )
    group.add_argument(
        "--continue-on-refusal",
        action="store_true",
        help="move the tenants whose checks pass, and go on past a refused move, instead of moving nothing",
    )


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
    selector = _selector(args)
    target = Phase(args.phase)
    listing = client.tenants()  # archived tenants are not listed, so never selected
    default_phase = Phase(listing["default_phase"])
    states = {
        row["tenant"]: TenantState(Phase(row["phase"]), int(row["version"])) for row in listing["tenants"]
    }
    for row in listing["seen_in_traffic"]:
        states.setdefault(row["tenant"], TenantState(default_phase, 0))
    steps = plan(select(selector, states), states, target, default_phase=default_phase, force=args.force)
    unknown = unknown_named(selector, states)
    report: dict[str, Any] = {
        "phase": target.value,
        "selector": selector.describe(),
        "known_tenants": len(states),
        "dry_run": args.dry_run,
        "continue_on_refusal": args.continue_on_refusal,
        "unknown": unknown,
        "plan": [step.as_json() for step in steps],
        "refusals": [],
        "refused": None,
        "moved": [],
        "not_attempted": [],
    }
    if unknown and not args.create:
        names = ", ".join(unknown)
        report["error"] = "unknown_tenants"
        report["detail"] = (
            f"neither in the phase table nor seen in traffic: {names} (a typo?); nothing was changed;"
            " pass --create to move them anyway"
        )
        return _finish(report, steps, target, selector, args, stage="names")
    to_move = [s for s in steps if s.kind is not StepKind.ALREADY_THERE]
    checked = _check(client, to_move, args, report)
    if args.dry_run or (report["refusals"] and not args.continue_on_refusal):
        report["not_attempted"] = [s.tenant for s in to_move]
        return _finish(report, steps, target, selector, args, stage="check")
    if not args.json:
        _print_plan(report, steps, target, selector)
    _move(client, checked, args, selector, report)
    return _finish(report, steps, target, selector, args, stage="move")


def _selector(args: argparse.Namespace) -> Selector:
    if args.tenant is not None and args.tenants is not None:
        raise UsageError("give either TENANT or --tenants, not both")
    if args.expected_version is not None and (
        args.tenant is None or args.match is not None or args.percent is not None
    ):
        raise UsageError("--expected-version applies to one tenant; fleet moves use the version they read")
    tenants = (args.tenant,) if args.tenant is not None else args.tenants
    try:
        selector = Selector(tenants=tenants, match=args.match, percent=args.percent)
    except (ValueError, InvalidTenantError) as exc:
        raise UsageError(str(exc)) from None
    if selector.empty:
        raise UsageError("name a TENANT, or select tenants with --tenants, --match or --percent")
    return selector


def _body(step: Step, args: argparse.Namespace, reason: str, *, dry_run: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "phase": step.target.value,
        "reason": reason,
        "force": args.force,
        "expected_version": step.version,
    }
    if dry_run:
        body["dry_run"] = True
    return body


def _refusal(step: Step, exc: AdminClientError, stage: str) -> dict[str, Any]:
    refusal: dict[str, Any] = {
        "tenant": step.tenant,
        "stage": stage,
        "status": exc.status,
        "error": exc.code,
        "detail": exc.detail,
    }
    if "allowed" in exc.body:
        refusal["allowed"] = exc.body["allowed"]
    return refusal


def _check(
    client: AdminClient, to_move: list[Step], args: argparse.Namespace, report: dict[str, Any]
) -> list[Step]:
    """Each step through the API's guards without moving; the steps that pass. An API that cannot answer
    (unreachable, 5xx) ends the run: a check it could not make is not a pass."""
    passed = []
    for step in to_move:
        try:
            client.put(f"/tenants/{step.tenant}/phase", _body(step, args, args.reason, dry_run=True))
        except AdminClientError as exc:
            if exit_code_of(exc.status) != EXIT_REFUSED:
                raise
            report["refusals"].append(_refusal(step, exc, "check"))
            continue
        passed.append(step)
    if report["refusals"]:
        report["refused"] = report["refusals"][0]
    return passed


def _move(
    client: AdminClient,
    steps: list[Step],
    args: argparse.Namespace,
    selector: Selector,
    report: dict[str, Any],
) -> None:
    quiet = args.json
    for index, step in enumerate(steps, start=1):
        reason = f"{args.reason} [fleet move {index}/{len(steps)}: {selector.describe()}]"
        try:
            body = client.put(f"/tenants/{step.tenant}/phase", _body(step, args, reason, dry_run=False))
        except AdminClientError as exc:
            if exit_code_of(exc.status) != EXIT_REFUSED:
                raise
            refusal = _refusal(step, exc, "move")
            report["refusals"].append(refusal)
            report["refused"] = report["refused"] or refusal
            if not quiet:
                print(f"REFUSED {step.tenant}: {exc.code}: {exc.detail}")
            if not args.continue_on_refusal:
                report["not_attempted"] = [s.tenant for s in steps[index:]]
                return
            continue
        report["moved"].append(
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


def _finish(
    report: dict[str, Any],
    steps: list[Step],
    target: Phase,
    selector: Selector,
    args: argparse.Namespace,
    *,
    stage: str,
) -> int:
    code = EXIT_REFUSED if report["refusals"] or "error" in report else EXIT_OK
    if args.json:
        print_json(report)
        return code
    if stage != "move":
        _print_plan(report, steps, target, selector)
    if "error" in report:
        print(f"REFUSED: {report['error']}: {report['detail']}")
        return code
    if stage == "check":
        _print_check_summary(report, len([s for s in steps if s.kind is not StepKind.ALREADY_THERE]), args)
        return code
    _print_summary(report, steps)
    return code


def _print_plan(report: dict[str, Any], steps: list[Step], target: Phase, selector: Selector) -> None:
    counts = {kind: sum(1 for s in steps if s.kind is kind) for kind in StepKind}
    print(
        f"plan: {len(steps)} tenants selected by {selector.describe()} (of {report['known_tenants']} known)"
        f" -> {target.value}: {counts[StepKind.MOVE]} to move, {counts[StepKind.ALREADY_THERE]} already"
        f" there, {counts[StepKind.NOT_ALLOWED]} not allowed"
    )
    refusals = {r["tenant"]: r for r in report["refusals"]}
    unknown = set(report["unknown"])
    for number, step in enumerate(steps, start=1):
        note = "  (already there: skipped)" if step.kind is StepKind.ALREADY_THERE else ""
        if step.tenant in unknown:
            note += "  (UNKNOWN: no phase row, not seen in traffic)"
        if step.tenant in refusals:
            refusal = refusals[step.tenant]
            note += f"  (REFUSED: {refusal['error']}: {refusal['detail']})"
        print(f"  {number:>3}. {step.tenant}  {step.current.value} -> {step.target.value}{note}")


def _print_check_summary(report: dict[str, Any], to_move: int, args: argparse.Namespace) -> None:
    refused = len(report["refusals"])
    line = f"checked {to_move} moves with the admin API: {refused} would be refused"
    if args.dry_run:
        print(f"{line}; dry run: nothing was changed")
    else:
        print(f"{line}; nothing was moved (--continue-on-refusal moves the others)")
    for refusal in report["refusals"]:
        allowed = f" (allowed: {', '.join(refusal['allowed']) or 'none'})" if "allowed" in refusal else ""
        print(f"REFUSED {refusal['tenant']}: {refusal['error']}: {refusal['detail']}{allowed}")


def _print_summary(report: dict[str, Any], steps: list[Step]) -> None:
    to_move = [s for s in steps if s.kind is not StepKind.ALREADY_THERE]
    line = f"moved {len(report['moved'])} of {len(to_move)}"
    for refusal in report["refusals"]:
        line += f"; {'refused' if refusal['stage'] == 'check' else 'stopped at'} {refusal['tenant']}"
        line += f" ({refusal['error']})"
        if "allowed" in refusal:
            line += f", its allowed moves: {', '.join(refusal['allowed']) or 'none'}"
    if report["not_attempted"]:
        line += f"; not attempted: {', '.join(report['not_attempted'])}"
    print(line)
