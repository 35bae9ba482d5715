"""CLI commands of the divergence engine (registered by `proxy.cli.main`):

cutover report [TENANT] [--top N]        counts per tenant and resource, top fields with example ids
cutover show-divergence TENANT ID        one divergence: request, differences, bodies side by side
cutover reset-counters TENANT            forget a tenant's counters (samples stay)
cutover reload-policy                    re-read divergence.policy_file in the admin API's process
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Callable
from typing import Any

from proxy.cli.support import EXIT_OK, format_table, print_json
from proxy.cli.target import admin_client

AdminCommand = Callable[..., argparse.ArgumentParser]  # (name, help, *example lines)


def add_divergence_commands(admin_command: AdminCommand) -> None:
    report = admin_command(
        "report",
        "shadow comparisons per tenant and resource, top divergent fields",
        "cutover report",
        "cutover report acme --top 10",
    )
    report.add_argument("tenant", nargs="?", help="only this tenant (default: every tenant compared)")
    report.add_argument("--top", type=int, default=5, help="fields listed per tenant")
    report.set_defaults(run=_report)
    show = admin_command(
        "show-divergence",
        "one stored divergence with both bodies side by side",
        "cutover show-divergence acme 42",
        "cutover show-divergence acme 42 --width 200",
    )
    show.add_argument("tenant")
    show.add_argument("id", type=int)
    show.add_argument("--width", type=int, default=0, help="total width (default: the terminal's)")
    show.set_defaults(run=_show)
    reset = admin_command(
        "reset-counters",
        "forget a tenant's comparison counters (stored samples stay)",
        "cutover reset-counters acme",
    )
    reset.add_argument("tenant")
    reset.set_defaults(run=_reset)
    reload = admin_command(
        "reload-policy", "re-read divergence.policy_file (as SIGHUP does)", "cutover reload-policy"
    )
    reload.set_defaults(run=_reload)


def _call(args: argparse.Namespace, method: str, path: str, **params: Any) -> dict[str, Any]:
    client = admin_client(args)  # closed by proxy.cli.main.main
    if method == "GET":
        return client.get(path, **params)
    if method == "POST":
        return client.post(path)
    return client.delete(path)


_table = format_table
_json = print_json


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _report(args: argparse.Namespace) -> int:
    body = _call(args, "GET", "/divergence/report", tenant=args.tenant, top=args.top)
    if args.json:
        return _json(body)
    if not body["tenants"]:
        print("no shadow comparisons recorded" + (f" for {args.tenant}" if args.tenant else ""))
    columns = ["compared", "equal", "noise", "divergent", "failed", "new_errors", "skipped"]
    for entry in body["tenants"]:
        totals = entry["totals"]
        print(
            f"{entry['tenant']}: divergence rate {_rate(totals['divergence_rate'])}, "
            f"new-side error rate {_rate(totals['new_error_rate'])}"
        )
        rows = [
            [r["resource"], *(str(r[c]) for c in columns), _rate(r["divergence_rate"])]
            for r in entry["resources"]
        ]
        rows.append(["(all)", *(str(totals[c]) for c in columns), _rate(totals["divergence_rate"])])
        print(_table(["RESOURCE", *(c.upper() for c in columns), "DIV RATE"], rows))
        if entry["top_fields"]:
            print("top divergent fields:")
            print(
                _table(
                    ["RESOURCE", "FIELD", "DIVERGENT", "NOISE", "EXAMPLES"],
                    [
                        [
                            f["resource"],
                            f["field"],
                            str(f["divergent"]),
                            str(f["noise"]),
                            ", ".join(str(i) for i in f["example_ids"]) or "-",
                        ]
                        for f in entry["top_fields"]
                    ],
                )
            )
        if entry["noise_fields"]:
            print("noise (differs between two answers of the same side too):")
            print(
                _table(
                    ["RESOURCE", "FIELD", "NOISE", "DIVERGENT"],
                    [
                        [f["resource"], f["field"], str(f["noise"]), str(f["divergent"])]
                        for f in entry["noise_fields"]
                    ],
                )
            )
        print()
    return EXIT_OK


def _show(args: argparse.Namespace) -> int:
    body = _call(args, "GET", f"/tenants/{args.tenant}/divergences/{args.id}")
    if args.json:
        return _json(body)
    query = f"?{body['query']}" if body["query"] else ""
    print(f"#{body['id']} {body['at']}  tenant {body['tenant']}  phase {body['phase']}  {body['verdict']}")
    where = f"resource {body['resource']}, served by {body['serving_side']}"
    print(f"{body['method']} {body['path']}{query}  ({where})")
    for name, value in body["request_headers"]:
        print(f"  {name}: {value}")
    print(f"status: serving {body['serving_status']}, shadow {body['shadow_status']}")
    print(
        _table(
            ["PATH", "KIND", "SERVING", "SHADOW", "NOISE"],
            [
                [
                    d["path"],
                    d["kind"],
                    _short(d.get("serving", "")),
                    _short(d.get("shadow", "")),
                    "noise" if d.get("noise") else "",
                ]
                for d in body["differences"]
            ],
        )
    )
    for note in body["notes"]:
        print(f"note: {note}")
    width = args.width or shutil.get_terminal_size((160, 40)).columns
    column = max(20, (width - 3) // 2)
    serving_label = f"serving ({body['serving_side']})"
    print(f"{serving_label:<{column}} | shadow")
    print(f"{'-' * column}-+-{'-' * column}")
    for row in body["side_by_side"]:
        mark = "|" if row["op"] == "equal" else "*"
        left = _fit(row["serving"], column)
        right = _fit(row["shadow"], column)
        print(f"{left:<{column}} {mark} {right}".rstrip())
    return EXIT_OK


def _short(value: Any, width: int = 40) -> str:
    import json

    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _fit(line: str | None, width: int) -> str:
    if line is None:
        return ""
    return line if len(line) <= width else line[: width - 1] + "…"


def _reset(args: argparse.Namespace) -> int:
    body = _call(args, "DELETE", f"/tenants/{args.tenant}/divergence-counters")
    if args.json:
        return _json(body)
    print(f"counters of {body['tenant']} reset ({body['resources_reset']} resources)")
    return EXIT_OK


def _reload(args: argparse.Namespace) -> int:
    body = _call(args, "POST", "/divergence/reload")
    if args.json:
        return _json(body)
    print(f"divergence policy reloaded from {body['policy_file']} ({body['resources']} resource rules)")
    return EXIT_OK
