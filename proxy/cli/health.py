"""`cutover tenant show TENANT`: one tenant's health (`GET /tenants/{tenant}/health`) as tables, or the
API's body as it is with `--json`. Registered by `proxy.cli.main`; imports nothing heavy (every `cutover`
command builds this parser)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from proxy.cli.archive import add_archive_commands
from proxy.cli.support import EXIT_OK, examples, format_table, print_json
from proxy.cli.target import add_admin_options, admin_client


def add_tenant_commands(commands: Any) -> None:
    tenant = commands.add_parser(
        "tenant",
        help="one tenant: its health; archive or unarchive it",
        **examples(
            "cutover tenant show acme", 'cutover tenant archive lt-3f2a-live --reason "load test done"'
        ),
    )
    actions = tenant.add_subparsers(title="tenant commands", metavar="ACTION")
    show = actions.add_parser(
        "show",
        help="phase, next moves and what blocks them, traffic per side, divergences, buffer, verify",
        **examples("cutover tenant show acme", "cutover tenant show acme --window-s 60 --json", admin=True),
    )
    add_admin_options(show)
    show.add_argument("tenant")
    show.add_argument("--window-s", type=int, help="seconds of the traffic figures (default: the API's, 300)")
    show.set_defaults(run=_show)
    add_archive_commands(actions)


def _show(args: argparse.Namespace) -> int:
    body = admin_client(args).get(f"/tenants/{args.tenant}/health", window_s=args.window_s)
    if args.json:
        return print_json(body)
    for line in render(body, format_table):
        print(line)
    return EXIT_OK


def render(body: dict[str, Any], table: Callable[[list[str], list[list[str]]], str]) -> list[str]:
    phase = body["phase"]
    head = f"tenant {body['tenant']}: {phase['phase']} (version {phase['version']})"
    if phase["default"]:
        head += ", no phase row: it follows the default phase"
    else:
        head += f" for {_duration(phase['in_phase_s'])}, since {phase['since']} by {phase['changed_by']}"
        if phase["from"]:
            head += f", from {phase['from']}: {phase['reason']!r}"
    lines = [head, ""]
    rows = []
    for move in body["moves"]:
        arrow = "->" if move["direction"] == "forward" else "<-"
        why = [f"{b['blocker']}: {b['detail']}" for b in move["blockers"]]
        why += [f"{u['check']} unknown" for u in move["unknown"]]
        why += move["notes"]
        rows.append([f"{arrow} {move['to']}", "yes" if move["blocked"] else "no", "; ".join(why) or "-"])
    lines += [table(["NEXT MOVE", "BLOCKED", "WHY"], rows), ""]
    traffic = body["traffic"]
    if "error" in traffic:
        lines.append(f"traffic: {traffic['error']}")
    else:
        lines.append(f"traffic over the last {traffic['window_s']:g} s (all proxies):")
        lines.append(
            table(
                ["SIDE", "REQ/S", "REQUESTS", "ERRORS", "ERROR RATE", "FALLBACKS", "P50 MS", "P99 MS"],
                [
                    [
                        side,
                        _number(s["rate_per_s"]),
                        str(s["requests"]),
                        str(s["errors"]),
                        _rate(s["error_rate"]),
                        str(s["fallbacks"]),
                        _number(s["p50_ms"]),
                        _number(s["p99_ms"]),
                    ]
                    for side, s in traffic["sides"].items()
                ],
            )
        )
        if "note" in traffic:
            lines.append(f"note: {traffic['note']}")
    shadow = body["shadow"]
    if "error" in shadow:
        lines.append(f"shadow: {shadow['error']}")
    else:
        lines.append(
            f"shadow: compared {shadow['compared']}, divergent {shadow['divergent']} of {shadow['answered']}"
            f" answered (divergence rate {_rate(shadow['divergence_rate'])}), failed {shadow['failed']},"
            f" new-side errors {shadow['new_errors']} (new-side error rate {_rate(shadow['new_error_rate'])})"
        )
    lines.append(_buffer_line(body["buffer"]))
    lines.append(_verify_line(body["verify"]))
    lines.append(f"copy: {body['copy']['state']} ({body['copy']['detail']})")
    return lines


def _buffer_line(buffer: dict[str, Any]) -> str:
    if "error" in buffer:
        return f"buffer: {buffer['error']}"
    parts = []
    for side, entry in buffer["toward"].items():
        part = f"toward {side} {entry['pending']} pending"
        if entry["oldest_s"] is not None:
            part += f", oldest {'' if entry['exact'] else 'at most '}{entry['oldest_s']:.1f} s"
        parts.append(part)
    parts.append(f"dead letters {buffer['dead_letters']}")
    if buffer["blocked_behind"]:
        parts.append(f"blocked behind {buffer['blocked_behind']}")
    return "buffer: " + "; ".join(parts)


def _verify_line(verify: dict[str, Any]) -> str:
    if "error" in verify:
        return f"verify: {verify['error']}"
    gate = verify["gate"]
    if not verify["required"]:
        text = "verify: not required for complete (no covered tables, or data.gate.require_verify is off)"
    elif gate["passed"]:
        text = "verify: the complete gate passes"
    else:
        problems = ", ".join(f"{p['table']} {p['problem']}" for p in gate["problems"])
        text = f"verify: the complete gate is blocked ({problems})"
    last = verify["last"]
    if last is not None:
        verdict = "passed" if last["passed"] else "FAILED"
        text += f"; last report #{last['id']} ({last['table']}) {verdict} at {last['finished_at']}"
    return text


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    whole = int(seconds)
    if whole < 90:
        return f"{whole} s"
    if whole < 5400:
        return f"{whole // 60} min"
    if whole < 172_800:
        return f"{whole // 3600} h {whole % 3600 // 60} min"
    return f"{whole // 86400} d {whole % 86400 // 3600} h"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"
