"""`cutover backfill` and `cutover verify` (run here, against both databases and backends, with
`--config`), and `cutover verify-reports` and `cutover backfill status` (through the admin API).

Each command imports what it runs when it runs (asyncpg, the backfill, the verifier): building the
parser, as every `cutover` command does, must not load them."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from backfill.errors import DataError
from backfill.progress import NoProgress, Progress, progress_for
from config.limits import CHUNK_ROWS_MAX, CHUNK_ROWS_MIN
from config.loader import load_settings
from proxy.cli.copy import print_report, show_copies
from proxy.cli.support import (
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNAVAILABLE,
    CommandError,
    UsageError,
    examples,
    format_table,
    print_json,
)
from proxy.cli.target import admin_client

AdminCommand = Callable[..., argparse.ArgumentParser]  # (name, help, *example lines)


def add_data_commands(commands: Any, admin_command: AdminCommand) -> None:
    backfill = commands.add_parser(
        "backfill",
        help="copy a tenant's rows and REST records old -> new (resumable); `status [TENANT]`: the copies"
        " and what mirroring did meanwhile (admin API)",
        **examples(
            "cutover backfill --config cutover.yaml --tenant acme",
            "cutover backfill --config cutover.yaml --tenant acme --table orders --rows-per-s 20000",
            "cutover backfill --config cutover.yaml --tenant acme --resource items --dry-run",
            "cutover backfill status acme --config cutover.yaml",
            admin=True,  # `backfill status` asks the admin API
        ),
    )
    backfill.add_argument("words", nargs="*", metavar="status [TENANT]")
    backfill.add_argument("--config", help="YAML settings file (default: $CUTOVER_CONFIG)")
    backfill.add_argument("--tenant")
    backfill.add_argument("--table", action="append", default=[], help="only this table (repeatable)")
    backfill.add_argument(
        "--resource", action="append", default=[], help="only this REST resource (repeatable)"
    )
    backfill.add_argument(
        "--chunk-rows",
        type=_chunk_rows,
        help=f"rows per chunk, {CHUNK_ROWS_MIN}-{CHUNK_ROWS_MAX} (default: config)",
    )
    backfill.add_argument(
        "--rows-per-s",
        type=float,
        help="throttle: rows (REST: records) copied per second (default: no limit)",
    )
    backfill.add_argument(
        "--parallel",
        type=_parallel,
        help="tables and key ranges copied at once (default 1); REST record writes in flight"
        " (default: data.rest.copy.concurrency)",
    )
    backfill.add_argument(
        "--restart", action="store_true", help="ignore the checkpoints and copy from the start"
    )
    backfill.add_argument(
        "--dry-run",
        action="store_true",
        help="say what a run would copy (from the checkpoints); copy nothing",
    )
    backfill.add_argument("--json", action="store_true", help="print the run's report as JSON")
    # `backfill status` asks the admin API: where it is and which token (flag > env > --config's file).
    backfill.add_argument("--admin-url", metavar="URL", help="status: admin API base URL")
    backfill.add_argument("--token", help="status: admin bearer token")
    backfill.add_argument("--token-name", metavar="NAME", help="status: the --config token to use")
    backfill.set_defaults(run=_backfill)
    add_verify_commands(commands, admin_command)


def _chunk_rows(text: str) -> int:
    value = int(text)
    if not CHUNK_ROWS_MIN <= value <= CHUNK_ROWS_MAX:
        raise argparse.ArgumentTypeError(f"must be {CHUNK_ROWS_MIN}-{CHUNK_ROWS_MAX}")
    return value


def _parallel(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 64:
        raise argparse.ArgumentTypeError("must be 1-64")
    return value


def _database_errors() -> tuple[type[BaseException], ...]:
    import asyncpg

    return (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)


def _backfill(args: argparse.Namespace) -> int:
    # lazy: the copy brings asyncpg, Redis, aiohttp, pydantic, OpenTelemetry; asyncio with them
    from backfill.runner import BackfillOptions, run_backfill
    from telemetry.process import run_async, settle_heap

    if args.words:
        if args.words[0] != "status" or len(args.words) > 2:
            raise UsageError(f"backfill takes `status [TENANT]`, not {' '.join(args.words)!r}")
        return show_copies(args, args.words[1] if len(args.words) == 2 else None)
    if not args.tenant:
        raise UsageError("backfill needs --tenant (or `backfill status [TENANT]`)")
    settings = load_settings(args.config)
    options = BackfillOptions(
        tenant=args.tenant,
        tables=tuple(args.table),
        chunk_rows=args.chunk_rows,
        rows_per_s=args.rows_per_s,
        parallel=args.parallel or 1,
        restart=args.restart,
        resources=tuple(args.resource),
        concurrency=args.parallel,
        dry_run=args.dry_run,
    )
    progress: Progress = NoProgress() if args.json else progress_for(sys.stderr)
    settle_heap()  # and uvloop: a REST copy is a loop of HTTP requests, as the worker's is
    try:
        report = run_async(run_backfill(settings, options, progress))
    except DataError as exc:
        raise CommandError("refused", str(exc), exit_code=EXIT_REFUSED) from None
    except _database_errors() as exc:
        raise CommandError(
            "database_unavailable",
            f"backfill stopped by a database error ({type(exc).__name__}: {exc});"
            " a rerun resumes from the last checkpoint",
            exit_code=EXIT_UNAVAILABLE,
        ) from None
    except _redis_errors() as exc:
        raise CommandError(
            "redis_unavailable",
            f"backfill stopped: Redis is unavailable ({type(exc).__name__}: {exc}); the copy coordinates"
            " with the worker there. A rerun resumes from the last checkpoint",
            exit_code=EXIT_UNAVAILABLE,
        ) from None
    if args.json:
        return print_json(report.as_json())
    print_report(report)
    return EXIT_OK


def _redis_errors() -> tuple[type[BaseException], ...]:
    from redis.exceptions import RedisError

    return (RedisError,)


def add_verify_commands(commands: Any, admin_command: AdminCommand) -> None:
    verify = commands.add_parser(
        "verify",
        help="reconcile a tenant's rows between old and new",
        **examples(
            "cutover verify --config cutover.yaml --tenant acme",
            "cutover verify --config cutover.yaml --tenant acme --table orders --repair",
        ),
    )
    verify.add_argument("--config", help="YAML settings file (default: $CUTOVER_CONFIG)")
    verify.add_argument("--tenant", required=True)
    verify.add_argument(
        "--table", action="append", default=[], help="only this table or resource (repeatable)"
    )
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.add_argument(
        "--repair",
        action="store_true",
        help=(
            "re-copy differing keys (table rows, REST records) from the authoritative side to the other:"
            " old -> new up to shadow, new -> old in live and rampdown (refused in complete); then verify"
            " again"
        ),
    )
    verify.add_argument("--no-store", action="store_true", help="do not store the report")
    verify.set_defaults(run=_verify)

    reports = admin_command(
        "verify-reports",
        "stored verification reports of a tenant (admin API)",
        "cutover verify-reports acme",
        "cutover verify-reports acme --table orders --id 17",
    )
    reports.add_argument("tenant")
    reports.add_argument("--table")
    reports.add_argument("--limit", type=int, default=20)
    reports.add_argument("--id", type=int, help="show this report in full")
    reports.set_defaults(run=_verify_reports)


def _verify(args: argparse.Namespace) -> int:
    import asyncio

    # lazy: the verifier brings asyncpg, pydantic and PyYAML
    from backfill.report import render
    from backfill.verify_run import VerifyOptions, run_verify

    settings = load_settings(args.config)
    options = VerifyOptions(args.tenant, tuple(args.table), repair=args.repair, store=not args.no_store)
    try:
        run = asyncio.run(run_verify(settings, options))
    except DataError as exc:
        raise CommandError("refused", str(exc), exit_code=EXIT_REFUSED) from None
    except _database_errors() as exc:
        raise CommandError(
            "database_unavailable",
            f"verification stopped by a database error ({type(exc).__name__}: {exc})",
            exit_code=EXIT_UNAVAILABLE,
        ) from None
    body = run.as_json()
    if args.json:
        print_json(body)
    else:
        print(render(body, format_table))
    return EXIT_OK if run.passed else EXIT_REFUSED


def _verify_reports(args: argparse.Namespace) -> int:
    client = admin_client(args)
    if args.id is not None:
        return _show_report(client.get(f"/verify-reports/{args.id}"), as_json=args.json)
    body = client.get(f"/tenants/{args.tenant}/verify-reports", table=args.table, limit=args.limit)
    if args.json:
        return print_json(body)
    rows = [
        [
            str(r["id"]),
            r["finished_at"],
            r["table"],
            r["phase"],
            "pass" if r["passed"] else "FAIL",
            ", ".join(f"{k} {v}" for k, v in r["counts"].items() if v) or "-",
        ]
        for r in body["reports"]
    ]
    print(format_table(["ID", "FINISHED", "TABLE", "PHASE", "RESULT", "DIFFERENCES"], rows))
    return EXIT_OK


def _show_report(body: dict[str, Any], *, as_json: bool) -> int:
    from backfill.report import render  # lazy: asyncpg, asyncio

    if as_json:
        return print_json(body)
    run = {
        "tenant": body["tenant"],
        "phase": body["phase"],
        "passed": body["passed"],
        "tables": [body["report"]],
    }
    print(f"report {body['id']} ({body['finished_at']}, run {body['run_id']})")
    print(render(run, format_table))
    return EXIT_OK
