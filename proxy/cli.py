"""`cutover` command line: run the proxy, the worker and the demo; operate tenants through the admin API.

Operator commands talk to the admin API (`--admin-url`, `CUTOVER_ADMIN_URL`; `--token`,
`CUTOVER_ADMIN_TOKEN`), so they work against any running proxy without database credentials.
Exit codes: 0 done, 1 refused or failed (the API said no), 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from buffer_worker.spool_check import SpoolUnusableError
from config.loader import ConfigError, load_settings
from proxy.admin_client import AdminClient, AdminClientError
from proxy.data_cli import add_data_commands
from proxy.divergence.cli import add_divergence_commands
from proxy.fleet_cli import add_fleet_arguments, is_fleet_move, run_fleet_move
from routing.phases import Phase

EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return EXIT_USAGE
    try:
        code: int = args.run(args)
        return code
    except (ConfigError, SpoolUnusableError) as exc:
        print(f"cutover: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except AdminClientError as exc:
        print(f"cutover: {exc.code}: {exc.detail}", file=sys.stderr)
        if "allowed" in exc.body:
            print(f"  allowed moves: {', '.join(exc.body['allowed']) or 'none'}", file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt:
        return 130
    finally:
        if getattr(args, "admin_client", None) is not None:
            args.admin_client.close()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cutover", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the proxy (data plane + admin API)")
    serve.add_argument("--config", help="YAML settings file (default: $CUTOVER_CONFIG)")
    serve.add_argument("--workers", type=int, help="data-plane processes (overrides the `workers` key)")
    serve.set_defaults(run=_serve)

    worker = commands.add_parser("worker", help="run a buffer worker (applies intents to the mirrored side)")
    worker.add_argument("--config", help="YAML settings file (default: $CUTOVER_CONFIG)")
    worker.add_argument(
        "--check",
        action="store_true",
        help="run nothing: exit 0 if a worker of this host beat within worker.lease_ttl_s, else 1 "
        "(a container health check)",
    )
    worker.set_defaults(run=_worker)

    backend = commands.add_parser("demo-backend", help="serve one demo data service (the demo's old or new)")
    backend.add_argument("name", help="the name it reports (old, new)")
    backend.add_argument("--host", default="127.0.0.1", help="address to listen on")
    backend.add_argument("--port", type=int, default=8000)
    backend.set_defaults(run=_demo_backend)

    demo = commands.add_parser("demo", help="run the end-to-end demo against local PostgreSQL and Redis")
    demo.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    demo.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    demo.add_argument("--serve", action="store_true", help="start the set-up and keep it running, no script")
    demo.add_argument("--env-file", help="with --serve: write the URLs and tokens here as NAME=value lines")
    demo.set_defaults(run=_demo)

    def admin_command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        _admin_options(sub)
        return sub

    tenants = admin_command("tenants", "list tenants (phase rows, then tenants only seen in traffic)")
    tenants.add_argument("--limit", type=int, help="at most this many, in tenant order (default: all)")
    tenants.set_defaults(run=_tenants)
    admin_command("status", "proxy readiness, phase counts and data-plane counters").set_defaults(run=_status)
    audit = admin_command("audit", "phase change history")
    audit.add_argument("tenant", nargs="?")
    audit.add_argument("--limit", type=int, default=20)
    audit.set_defaults(run=_audit)
    divergences = admin_command("divergences", "recent shadow divergences of a tenant")
    divergences.add_argument("tenant")
    divergences.add_argument("--limit", type=int, default=10)
    divergences.set_defaults(run=_divergences)

    admin_command("buffer", "intent buffer: partitions, lag, owners, per-tenant pending").set_defaults(
        run=_buffer
    )
    dead = admin_command(
        "dead-letters",
        "intents that could not be applied: [TENANT] lists them; `resolve TENANT` sets their records from"
        " the authoritative side; `discard TENANT --intent ID` drops one; `audit [TENANT]`: who did what",
    )
    dead.add_argument("words", nargs="*", metavar="[ACTION] TENANT")
    dead.add_argument("--limit", type=int, default=50)
    dead.add_argument("--intent", help="discard: the dead-lettered intent's id")
    dead.add_argument("--reason", help="resolve, discard: why (kept in the audit log)")
    dead.set_defaults(run=_dead_letters)
    redrive = admin_command("redrive", "re-apply a tenant's dead-lettered intents, in order")
    redrive.add_argument("tenant")
    redrive.add_argument("--reason", default="re-drive", help="why (kept in the audit log)")
    redrive.set_defaults(run=_redrive)
    add_data_commands(commands, admin_command)
    add_divergence_commands(admin_command)

    phase = commands.add_parser("phase", help="read or change a tenant's phase")
    phase_commands = phase.add_subparsers(title="phase commands", metavar="ACTION")
    get = phase_commands.add_parser("get", help="show a tenant's phase")
    _admin_options(get)
    get.add_argument("tenant")
    get.set_defaults(run=_phase_get)
    set_ = phase_commands.add_parser("set", help="move a tenant, or many, to a phase (audited)")
    _admin_options(set_)
    add_fleet_arguments(set_)
    set_.add_argument("--reason", required=True, help="why (kept in the audit log)")
    set_.add_argument(
        "--force",
        action="store_true",
        help="allow leaving complete; move despite dead letters, missing verification or an unfinished copy",
    )
    set_.add_argument("--expected-version", type=int, help="refuse if the tenant changed meanwhile")
    set_.set_defaults(run=_phase_set)
    rollback = phase_commands.add_parser("rollback", help="undo a tenant's last phase change (audited)")
    _admin_options(rollback)
    rollback.add_argument("tenant")
    rollback.add_argument("--reason", required=True)
    rollback.add_argument("--force", action="store_true", help="allow rolling back out of complete")
    rollback.set_defaults(run=_phase_rollback)
    return parser


def _admin_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--admin-url",
        default=os.environ.get("CUTOVER_ADMIN_URL", "http://127.0.0.1:8081"),
        help="admin API base URL",
    )
    parser.add_argument("--token", default=os.environ.get("CUTOVER_ADMIN_TOKEN"), help="admin bearer token")
    parser.add_argument("--json", action="store_true", help="print the API's JSON instead of a table")


def _client(args: argparse.Namespace) -> AdminClient:
    """The command's one client of the admin API (closed by `main`)."""
    client: AdminClient | None = getattr(args, "admin_client", None)
    if client is None:
        client = args.admin_client = AdminClient(args.admin_url, args.token)
    return client


def _serve(args: argparse.Namespace) -> int:
    from proxy.server import serve

    settings = load_settings(args.config)
    if args.workers is not None:
        settings = settings.model_copy(update={"workers": args.workers})
    return serve(settings)


def _worker(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    if args.check:
        from buffer_worker.liveness import check_worker

        alive, why = check_worker(settings)
        print(why, file=sys.stdout if alive else sys.stderr)
        return EXIT_OK if alive else EXIT_REFUSED
    from buffer_worker.runner import run_worker

    return run_worker(settings)


def _demo_backend(args: argparse.Namespace) -> int:
    from proxy.demo.backend import serve_backend

    serve_backend(args.name, host=args.host, port=args.port)
    return EXIT_OK


def _demo(args: argparse.Namespace) -> int:
    if args.serve:
        from proxy.demo.serve import serve_demo

        return serve_demo(postgres_url=args.postgres_url, redis_url=args.redis_url, env_file=args.env_file)
    from proxy.demo.runner import run_demo

    return run_demo(postgres_url=args.postgres_url, redis_url=args.redis_url)


def _tenants(args: argparse.Namespace) -> int:
    body = _client(args).tenants(limit=args.limit)
    if args.json:
        return _print_json(body)
    print(f"default phase (tenants without a row): {body['default_phase']}")
    rows = [
        [t["tenant"], t["phase"], str(t["version"]), t["updated_at"] or "-", t["updated_by"] or "-"]
        for t in body["tenants"]
    ]
    rows += [
        [t["tenant"], body["default_phase"], "0", "-", f"(seen in traffic {t['last_seen']})"]
        for t in body["seen_in_traffic"]
    ]
    print(format_table(["TENANT", "PHASE", "VERSION", "UPDATED", "BY"], rows))
    return EXIT_OK


def _status(args: argparse.Namespace) -> int:
    client = _client(args)
    try:
        ready = client.get("/readyz")
    except AdminClientError as exc:
        if exc.status != 503:
            raise
        ready = exc.body
    tenants = client.tenants()
    stats = client.get("/stats")
    if args.json:
        return _print_json({"ready": ready, "tenants": tenants, "stats": stats})
    print(
        f"proxy: {ready.get('status')}  (phase store connected: {ready.get('phase_store_connected')}, "
        f"cache stale: {ready.get('phase_cache_stale_s')} s)"
    )
    counts: dict[str, int] = {p.value: 0 for p in Phase}
    for tenant in tenants["tenants"]:
        counts[tenant["phase"]] += 1
    counts[tenants["default_phase"]] += len(tenants["seen_in_traffic"])  # no row: default phase
    print(format_table(["PHASE", "TENANTS"], [[phase, str(n)] for phase, n in counts.items()]))
    shadow = stats["shadow"]
    print(
        f"shadow: compared {shadow['compared']}, equal {shadow['equal']}, divergent {shadow['divergent']}, "
        f"skipped {shadow['skipped']}; fallbacks {sum(stats['fallbacks'].values())}, "
        f"refused {stats['fallback_refused']}; intents appended {stats['intents']['appended']}"
    )
    return EXIT_OK


def _audit(args: argparse.Namespace) -> int:
    body = {"entries": _client(args).take("/audit", "entries", limit=args.limit, tenant=args.tenant)}
    if args.json:
        return _print_json(body)
    rows = [
        [str(e["id"]), e["at"], e["tenant"], f"{e['from']} -> {e['to']}", e["actor"], e["reason"]]
        for e in body["entries"]
    ]
    print(format_table(["ID", "AT", "TENANT", "MOVE", "BY", "REASON"], rows))
    return EXIT_OK


def _divergences(args: argparse.Namespace) -> int:
    path = f"/tenants/{args.tenant}/divergences"
    body = {
        "tenant": args.tenant,
        "divergences": _client(args).take(path, "divergences", limit=args.limit, page_size=100),
    }
    if args.json:
        return _print_json(body)
    rows = []
    for d in body["divergences"]:
        paths = ", ".join(diff["path"] for diff in d["differences"][:4])
        rows.append(
            [
                str(d["id"]),
                d["at"],
                f"{d['method']} {d['path']}",
                f"{d['serving_status']}/{d['shadow_status']}",
                paths,
            ]
        )
    print(format_table(["ID", "AT", "REQUEST", "STATUS serving/shadow", "DIFFERENT"], rows))
    return EXIT_OK


def _buffer(args: argparse.Namespace) -> int:
    body = _client(args).get("/buffer")
    if args.json:
        return _print_json(body)
    rows = [
        [str(p["partition"]), str(p["length"]), str(p["pending"]), f"{p['lag_s']:.1f}", p["owner"] or "-"]
        for p in body["partitions"]
    ]
    print(format_table(["PARTITION", "LENGTH", "PENDING", "LAG_S", "OWNER"], rows))
    tenants = [
        [
            t["tenant"],
            ", ".join(f"{side} {n}" for side, n in t["pending"].items()) or "-",
            str(t["dead_letters"]),
            t.get("blocked_behind") or "-",
        ]
        for t in body["tenants"]
    ]
    print(format_table(["TENANT", "PENDING", "DEAD", "BLOCKED BEHIND"], tenants))
    spool = body["spool"]
    print(f"spool: {spool['spooled']} intents, {spool['spool_bytes']} bytes, accepting: {spool['accepting']}")
    return EXIT_OK


def _dead_letters(args: argparse.Namespace) -> int:
    from proxy.dead_letter_cli import run_dead_letters

    client = _client(args)
    try:
        return run_dead_letters(args, client)
    finally:
        client.close()


def _redrive(args: argparse.Namespace) -> int:
    client = _client(args)
    try:
        body = client.post(f"/buffer/dead-letters/{args.tenant}/redrive", {"reason": args.reason})
    finally:
        client.close()
    if args.json:
        return _print_json(body)
    print(
        f"re-drive of {body['requested']} dead-lettered intents of {body['tenant']} requested; "
        "the partition's worker applies them in order"
    )
    return EXIT_OK


def _phase_get(args: argparse.Namespace) -> int:
    body = _client(args).get(f"/tenants/{args.tenant}")
    if args.json:
        return _print_json(body)
    print(
        format_table(["TENANT", "PHASE", "VERSION"], [[body["tenant"], body["phase"], str(body["version"])]])
    )
    return EXIT_OK


def _phase_set(args: argparse.Namespace) -> int:
    if is_fleet_move(args):
        return run_fleet_move(args, _client(args))
    body = _client(args).put(
        f"/tenants/{args.tenant}/phase",
        {
            "phase": args.phase,
            "reason": args.reason,
            "force": args.force,
            "expected_version": args.expected_version,
        },
    )
    if args.json:
        return _print_json(body)
    print(f"{body['tenant']} is now {body['phase']} (version {body['version']})")
    return EXIT_OK


def _phase_rollback(args: argparse.Namespace) -> int:
    client = _client(args)
    entries = client.get("/audit", tenant=args.tenant, limit=1)["entries"]
    if not entries:
        print(f"cutover: tenant {args.tenant!r} has no phase change to roll back", file=sys.stderr)
        return EXIT_REFUSED
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
        return _print_json(body)
    print(f"{body['tenant']} rolled back {last['to']} -> {body['phase']} (version {body['version']})")
    return EXIT_OK


def _print_json(body: Any) -> int:
    print(json.dumps(body, indent=2, sort_keys=True))
    return EXIT_OK


def format_table(header: list[str], rows: list[list[str]]) -> str:
    if not rows:
        return "  ".join(header) + "\n(none)"
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
