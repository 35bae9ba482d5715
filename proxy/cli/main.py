"""`cutover` command line: run the proxy, the worker and the demo; operate tenants through the admin API.

Operator commands talk to the admin API, found as `proxy.cli.target` says (flag > environment >
settings file), so they work against any running proxy without database credentials. Exit codes and
output conventions: `proxy.cli.support`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from buffer_worker.spool_check import SpoolUnusableError
from config.loader import ConfigError, load_settings
from proxy.cli.admin_client import AdminClientError
from proxy.cli.archive import print_archived
from proxy.cli.data import add_data_commands
from proxy.cli.dead_letters import run_dead_letters
from proxy.cli.divergence import add_divergence_commands
from proxy.cli.health import add_tenant_commands
from proxy.cli.phase import add_phase_commands
from proxy.cli.support import (
    ADMIN_ENVIRONMENT_HELP,
    EXIT_BROKEN_PIPE,
    EXIT_CODES_HELP,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_USAGE,
    CommandError,
    UsageError,
    examples,
    exit_code_of,
    format_table,
    print_json,
    report_error,
)
from proxy.cli.target import add_admin_options, admin_client
from routing.phases import Phase

__all__ = ["format_table", "main", "print_json"]


class CutoverParser(argparse.ArgumentParser):
    """argparse's parser, whose errors are raised (and printed by `main`, as JSON under `--json`) rather
    than printed here and ended with SystemExit. Subcommand parsers inherit the class."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, usage=self.format_usage())


class _Version(argparse.Action):
    """`--version`: read from the installed distribution only when asked (importlib.metadata is slow)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print cutover's version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *_args: Any, **_kwargs: Any) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("cutover")
        except PackageNotFoundError:  # run from a checkout that was never installed
            found = "unknown (not installed)"
        print(f"cutover {found}")
        parser.exit()


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    try:
        try:
            code = _main(words)
        except SystemExit as exc:  # argparse's --help and --version end this way, their text buffered
            code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else EXIT_USAGE
        sys.stdout.flush()  # inside the try: a closed pipe shows here for output still buffered
        return code
    except BrokenPipeError:
        # As the signal module's documentation advises: nothing more can be written, and Python's own
        # flush at exit would fail again with a traceback; point stdout at /dev/null and end quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def _main(words: list[str]) -> int:
    as_json = "--json" in words[: words.index("--")] if "--" in words else "--json" in words
    parser = _parser()
    args: argparse.Namespace | None = None
    try:
        args = parser.parse_args(words)
        if not hasattr(args, "run"):
            raise UsageError("name a command", usage=_help_of(parser, words))
        code: int = args.run(args)
        return code
    except CommandError as exc:
        return report_error(exc, as_json=as_json)
    except (ConfigError, SpoolUnusableError) as exc:
        return report_error(CommandError("config", str(exc), exit_code=EXIT_USAGE), as_json=as_json)
    except AdminClientError as exc:
        extra = {k: v for k, v in exc.body.items() if k not in ("error", "detail")}
        error = CommandError(exc.code, exc.detail, exit_code=exit_code_of(exc.status), **extra)
        if exc.status is not None:
            error.fields.setdefault("status", exc.status)
        return report_error(error, as_json=as_json)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    finally:
        if args is not None and getattr(args, "admin_client", None) is not None:
            args.admin_client.close()


def _help_of(parser: argparse.ArgumentParser, words: list[str]) -> str:
    """The usage of the deepest command named in `words` (`cutover phase` → phase's own usage)."""
    current = parser
    for word in words:
        sub = next(
            (a for a in current._actions if isinstance(a, argparse._SubParsersAction)),  # noqa: SLF001
            None,
        )
        if sub is None or word not in sub.choices:
            break
        current = sub.choices[word]
    return current.format_help()


def _parser() -> argparse.ArgumentParser:
    parser = CutoverParser(
        prog="cutover",
        description=__doc__.split("\n")[0],
        epilog=f"{ADMIN_ENVIRONMENT_HELP}\n\n{EXIT_CODES_HELP}\n\n`cutover COMMAND --help` shows each"
        " command's options and examples.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=_Version)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the proxy (data plane + admin API)",
        **examples("cutover serve --config cutover.yaml", "cutover serve --config cutover.yaml --workers 2"),
    )
    serve.add_argument("--config", help="YAML settings file (default: $CUTOVER_CONFIG)")
    serve.add_argument("--workers", type=int, help="data-plane processes (overrides the `workers` key)")
    serve.set_defaults(run=_serve)

    worker = commands.add_parser(
        "worker",
        help="run a buffer worker (applies intents to the mirrored side)",
        **examples("cutover worker --config cutover.yaml", "cutover worker --config cutover.yaml --check"),
    )
    worker.add_argument("--config", help="YAML settings file (default: $CUTOVER_CONFIG)")
    worker.add_argument(
        "--check",
        action="store_true",
        help="run nothing: exit 0 if a worker of this host beat within worker.lease_ttl_s, else 1 "
        "(a container health check)",
    )
    worker.set_defaults(run=_worker)

    backend = commands.add_parser(
        "demo-backend",
        help="serve one demo data service (the demo's old or new)",
        **examples("cutover demo-backend old --host 0.0.0.0 --port 8000"),
    )
    backend.add_argument("name", help="the name it reports (old, new)")
    backend.add_argument("--host", default="127.0.0.1", help="address to listen on")
    backend.add_argument("--port", type=int, default=8000)
    backend.set_defaults(run=_demo_backend)

    demo = commands.add_parser(
        "demo",
        help="run the end-to-end demo against local PostgreSQL and Redis",
        **examples("cutover demo", "cutover demo --serve --env-file demo.env"),
    )
    demo.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    demo.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    demo.add_argument("--serve", action="store_true", help="start the set-up and keep it running, no script")
    demo.add_argument("--env-file", help="with --serve: write the URLs and tokens here as NAME=value lines")
    demo.set_defaults(run=_demo)

    def admin_command(name: str, help_text: str, *example_lines: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, **examples(*example_lines, admin=True))
        add_admin_options(sub)
        return sub

    tenants = admin_command(
        "tenants",
        "list tenants (phase rows, then tenants only seen in traffic; archived ones are left out)",
        "cutover tenants",
        "cutover tenants --limit 50 --json",
        "cutover tenants --archived",
    )
    tenants.add_argument("--limit", type=int, help="at most this many, in tenant order (default: all)")
    tenants.add_argument("--archived", action="store_true", help="list the archived tenants instead")
    tenants.set_defaults(run=_tenants)
    admin_command(
        "status",
        "proxy readiness, phase counts and data-plane counters",
        "cutover status",
        "cutover status --json",
    ).set_defaults(run=_status)
    audit = admin_command(
        "audit",
        "phase change history",
        "cutover audit acme",
        "cutover audit --limit 100 --json | jq '.entries[0]'",
    )
    audit.add_argument("tenant", nargs="?")
    audit.add_argument("--limit", type=int, default=20)
    audit.set_defaults(run=_audit)
    divergences = admin_command(
        "divergences", "recent shadow divergences of a tenant", "cutover divergences acme --limit 5"
    )
    divergences.add_argument("tenant")
    divergences.add_argument("--limit", type=int, default=10)
    divergences.set_defaults(run=_divergences)

    admin_command(
        "buffer", "intent buffer: partitions, lag, owners, per-tenant pending", "cutover buffer"
    ).set_defaults(run=_buffer)
    dead = admin_command(
        "dead-letters",
        "intents that could not be applied: [TENANT] lists them (ID, what failed, what the mirror answered);"
        " `resolve TENANT` sets their records from the authoritative side; `discard TENANT ID` drops one;"
        " `audit [TENANT]`: who did what",
        "cutover dead-letters acme",
        'cutover dead-letters resolve acme --reason "new rejected the old schema"',
        'cutover dead-letters discard acme 3f2a... --reason "test write"',
        "cutover dead-letters audit acme",
    )
    dead.add_argument("words", nargs="*", metavar="[ACTION] TENANT")
    dead.add_argument("--limit", type=int, default=50)
    dead.add_argument("--intent", help="discard: the dead letter's ID (as listed; or give it after TENANT)")
    dead.add_argument("--reason", help="resolve, discard: why (kept in the audit log)")
    dead.set_defaults(run=_dead_letters)
    redrive = admin_command(
        "redrive",
        "re-apply a tenant's dead-lettered intents, in order",
        'cutover redrive acme --reason "new is back"',
    )
    redrive.add_argument("tenant")
    redrive.add_argument("--reason", default="re-drive", help="why (kept in the audit log)")
    redrive.set_defaults(run=_redrive)
    add_data_commands(commands, admin_command)
    add_divergence_commands(admin_command)
    add_tenant_commands(commands)
    add_phase_commands(commands)
    return parser


def _serve(args: argparse.Namespace) -> int:
    from proxy.server import serve  # lazy: uvicorn, FastAPI, asyncpg, Redis; only `serve` needs them

    settings = load_settings(args.config)
    if args.workers is not None:
        settings = settings.model_copy(update={"workers": args.workers})
    return serve(settings)


def _worker(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    if args.check:
        from buffer_worker.liveness import check_worker  # lazy: Redis, OpenTelemetry

        alive, why = check_worker(settings)
        print(why, file=sys.stdout if alive else sys.stderr)
        return EXIT_OK if alive else EXIT_REFUSED
    from buffer_worker.runner import run_worker  # lazy: Redis, asyncpg, aiohttp, OpenTelemetry

    return run_worker(settings)


def _demo_backend(args: argparse.Namespace) -> int:
    from proxy.demo.backend import serve_backend  # lazy: FastAPI

    serve_backend(args.name, host=args.host, port=args.port)
    return EXIT_OK


def _demo(args: argparse.Namespace) -> int:
    if args.serve:
        from proxy.demo.serve import serve_demo  # lazy: asyncpg, Redis, httpx

        return serve_demo(postgres_url=args.postgres_url, redis_url=args.redis_url, env_file=args.env_file)
    from proxy.demo.runner import run_demo  # lazy: asyncpg, Redis, httpx

    return run_demo(postgres_url=args.postgres_url, redis_url=args.redis_url)


def _tenants(args: argparse.Namespace) -> int:
    if args.archived:
        return print_archived(args)
    body = admin_client(args).tenants(limit=args.limit)
    if args.json:
        return print_json(body)
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
    client = admin_client(args)
    try:
        ready = client.get("/readyz")
    except AdminClientError as exc:
        if exc.status != 503:
            raise
        ready = exc.body
    tenants = client.tenants()
    stats = client.get("/stats")
    if args.json:
        return print_json({"ready": ready, "tenants": tenants, "stats": stats})
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
    rate = shadow["divergence_rate"]  # divergent / answered, as `cutover report` (proxy.shadow.rates)
    print(
        f"shadow: compared {shadow['compared']}, equal {shadow['equal']}, divergent {shadow['divergent']}, "
        f"failed {shadow['failed']}, divergence rate {'-' if rate is None else f'{rate:.2%}'}, "
        f"skipped {shadow['skipped']}; fallbacks {sum(stats['fallbacks'].values())}, "
        f"refused {stats['fallback_refused']}; intents appended {stats['intents']['appended']}"
    )
    return EXIT_OK


def _audit(args: argparse.Namespace) -> int:
    body = {"entries": admin_client(args).take("/audit", "entries", limit=args.limit, tenant=args.tenant)}
    if args.json:
        return print_json(body)
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
        "divergences": admin_client(args).take(path, "divergences", limit=args.limit, page_size=100),
    }
    if args.json:
        return print_json(body)
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
    body = admin_client(args).get("/buffer")
    if args.json:
        return print_json(body)
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
    return run_dead_letters(args, admin_client(args))


def _redrive(args: argparse.Namespace) -> int:
    body = admin_client(args).post(f"/buffer/dead-letters/{args.tenant}/redrive", {"reason": args.reason})
    if args.json:
        return print_json(body)
    print(
        f"re-drive of {body['requested']} dead-lettered intents of {body['tenant']} requested; "
        "the partition's worker applies them in order"
    )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
