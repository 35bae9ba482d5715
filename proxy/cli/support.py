"""What every `cutover` command shares: its exit codes, its output (tables, JSON, errors) and a quiet end
when its reader goes away. Imports nothing heavy: every command loads this module.

Exit codes, the same for every command:

    0    done
    1    refused: the admin API answered 4xx (a move the rules refuse, a version conflict, an unknown id,
         a token without the scope), or a check that ran and did not pass (`verify`, `worker --check`)
    2    usage: bad arguments, a bad configuration file, no token to send
    3    unavailable: the admin API or a database could not be reached, timed out or answered 5xx
    130  interrupted (Ctrl-C)
    141  the output was closed early (`cutover audit acme | head -1`): as a program killed by SIGPIPE,
         without a traceback

Errors go to stderr as `cutover: <code>: <detail>`; with `--json`, to stdout as the API's error shape
`{"error": code, "detail": text, ...}`, so a script reads one JSON document whatever happened.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from common.coded_error import CodedError

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a program SIGPIPE ended

URL_ENV = "CUTOVER_ADMIN_URL"
TOKEN_ENV = "CUTOVER_ADMIN_TOKEN"
CONFIG_ENV = "CUTOVER_CONFIG"
ADMIN_ENVIRONMENT_HELP = f"""\
environment:
  {URL_ENV}    admin API base URL (when --admin-url is not given)
  {TOKEN_ENV}  admin token (when --token is not given)
  {CONFIG_ENV}       settings file read for either when neither flag nor variable sets it
precedence: flag > environment > settings file (admin.listen; admin.tokens: --token-name, else the
only write-scope token)"""
EXIT_CODES_HELP = """\
exit codes:
  0    done
  1    refused: the admin API answered 4xx, or a check did not pass (verify, worker --check)
  2    usage: bad arguments or configuration, no token
  3    unavailable: the admin API or a database unreachable, timed out, or answering 5xx
  130  interrupted
  141  output closed early (a pipe such as `| head`)"""
# Every command's help ends with it: a script's author reads one command's help, not the top one's.
EXIT_CODES_LINE = "exit codes: 0 done, 1 refused or check failed, 2 usage, 3 unavailable (`cutover --help`)"


def examples(*lines: str, admin: bool = False) -> dict[str, Any]:
    """`add_parser` keywords giving a command its examples (and, for admin API commands, where the URL
    and token come from) below its options in `--help`."""
    text = "examples:\n" + "\n".join(f"  {line}" for line in lines) if lines else ""
    if admin:
        text += f"\n\n{ADMIN_ENVIRONMENT_HELP}"
    text += f"\n\n{EXIT_CODES_LINE}"
    return {"epilog": text.strip(), "formatter_class": argparse.RawDescriptionHelpFormatter}


class CommandError(CodedError):
    """A command that cannot go on: printed as an error (JSON with `--json`), exit with `exit_code`."""

    def __init__(self, code: str, detail: str, *, exit_code: int, **fields: Any) -> None:
        super().__init__(detail, code=code, **fields)
        self.exit_code = exit_code


class UsageError(CommandError):
    """Bad arguments (argparse's own errors too, see `proxy.cli.main`): exit code 2."""

    def __init__(self, detail: str, *, usage: str | None = None) -> None:
        super().__init__("usage", detail, exit_code=EXIT_USAGE)
        self.usage = usage


def exit_code_of(status: int | None) -> int:
    """An admin API answer's status → exit code: no answer or 5xx is unavailable, 4xx refused."""
    return EXIT_UNAVAILABLE if status is None or status >= 500 else EXIT_REFUSED


def print_json(body: Any) -> int:
    print(json.dumps(body, indent=2, sort_keys=True))
    return EXIT_OK


def report_error(error: CommandError, *, as_json: bool) -> int:
    """Print `error` the way the command's output is read, and give its exit code."""
    if as_json:
        print(json.dumps(error.to_dict(), sort_keys=True))
        return error.exit_code
    if isinstance(error, UsageError):
        if error.usage:
            print(error.usage.rstrip(), file=sys.stderr)
        print(f"cutover: error: {error.detail}", file=sys.stderr)
        return error.exit_code
    # A configuration problem names its key already; a code in front of it would only be noise.
    prefix = "" if error.code == "config" else f"{error.code}: "
    print(f"cutover: {prefix}{error.detail}", file=sys.stderr)
    allowed = error.fields.get("allowed")
    if isinstance(allowed, list):
        print(f"  allowed moves: {', '.join(map(str, allowed)) or 'none'}", file=sys.stderr)
    hint = error.fields.get("hint")
    if isinstance(hint, str):
        print(f"  {hint}", file=sys.stderr)
    return error.exit_code


def format_table(header: list[str], rows: list[list[str]]) -> str:
    """Columns left-aligned, two spaces apart, no borders: easy to read and to cut with awk.

    tabulate, not rich: its "plain" output is the same on a terminal and in a pipe (rich sizes tables to
    the terminal, 80 columns in a pipe, and wraps or cuts long cells), it is a single pure-Python module,
    and it is imported only when a table is printed."""
    if not rows:
        return "  ".join(header) + "\n(none)"
    from tabulate import tabulate

    text = tabulate(
        rows, headers=header, tablefmt="plain", disable_numparse=True, stralign="left", numalign="left"
    )
    return "\n".join(line.rstrip() for line in text.splitlines())
