"""Which admin API an operator command talks to, and with which token.

Each is taken from the first of these that gives it (flag > environment > configuration file):

    admin URL   --admin-url   CUTOVER_ADMIN_URL     admin.listen of the settings file
    token       --token       CUTOVER_ADMIN_TOKEN   admin.tokens of the settings file: the one named by
                                                    --token-name, else its only write-scope token

The settings file is the one `cutover serve` reads (`--config`, else `CUTOVER_CONFIG`), loaded only when
a flag and the environment leave something unset, and with the same rules (environment overrides,
`<key>_file` secrets). With neither a URL nor a file the URL is http://127.0.0.1:8081, the default of
`admin.listen`; with no token the command stops before calling the API and says which to set.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from config.loader import load_settings
from proxy.cli.admin_client import AdminClient
from proxy.cli.support import CONFIG_ENV, EXIT_USAGE, TOKEN_ENV, URL_ENV, CommandError, UsageError

if TYPE_CHECKING:
    from config.settings import Settings

DEFAULT_ADMIN_URL = "http://127.0.0.1:8081"


def add_admin_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("admin API (flag > environment > settings file)")
    group.add_argument(
        "--admin-url",
        metavar="URL",
        help=f"admin API base URL (env {URL_ENV}; else admin.listen of --config;"
        f" default {DEFAULT_ADMIN_URL})",
    )
    group.add_argument("--token", help=f"admin bearer token (env {TOKEN_ENV}; else a token of --config)")
    group.add_argument(
        "--config",
        metavar="FILE",
        help=f"settings file `cutover serve` reads, for what the above leave unset (env {CONFIG_ENV})",
    )
    group.add_argument(
        "--token-name",
        metavar="NAME",
        help="with --config: the admin.tokens entry to use (default: the file's only write-scope token)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the API's JSON (errors too, on stdout) instead of tables"
    )


@dataclass(frozen=True, slots=True)
class AdminTarget:
    url: str
    token: str | None
    token_source: str  # where the token came from, to name in an error


def resolve_target(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> AdminTarget:
    env = os.environ if environ is None else environ
    url: str | None = args.admin_url or env.get(URL_ENV) or None
    token: str | None = args.token or env.get(TOKEN_ENV) or None
    source = "--token" if args.token else TOKEN_ENV if token else ""
    config = args.config or env.get(CONFIG_ENV) or None
    if (url is None or token is None) and config is not None:
        settings = _load(config)
        if url is None:
            url = _url_of(settings)
        if token is None:
            name, token = _token_of(settings, args.token_name, config)
            source = f"admin.tokens.{name} of {config}"
    elif args.token_name is not None and config is None:
        raise UsageError(f"--token-name picks a token of a settings file: give --config or {CONFIG_ENV} too")
    return AdminTarget(url or DEFAULT_ADMIN_URL, token, source)


def admin_client(args: argparse.Namespace) -> AdminClient:
    """The command's one client of the admin API, made on first use and closed by `proxy.cli.main.main`.
    Raises `CommandError` (exit 2) when no token can be found: every operator route needs one."""
    client: AdminClient | None = getattr(args, "admin_client", None)
    if client is None:
        target = resolve_target(args)
        if target.token is None:
            raise CommandError(
                "no_token",
                f"no admin token: pass --token, set {TOKEN_ENV}, or point --config (or {CONFIG_ENV}) at the"
                " settings file that holds admin.tokens",
                exit_code=EXIT_USAGE,
            )
        client = args.admin_client = AdminClient(target.url, target.token, token_source=target.token_source)
    return client


def _load(path: str) -> Settings:
    return load_settings(path)


def _url_of(settings: Settings) -> str:
    listen = settings.admin.listen
    # A server listening on every address is reached on loopback from its own host.
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(listen.host, listen.host)
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{listen.port}"


def _token_of(settings: Settings, name: str | None, path: str) -> tuple[str, str]:
    from config.settings import TokenScope  # lazy: pydantic and PyYAML, for a settings file only

    tokens = settings.admin.tokens
    if name is not None:
        if name not in tokens:
            raise UsageError(
                f"--token-name {name!r}: {path} has no such token ({', '.join(tokens) or 'none'})"
            )
        return name, tokens[name].token.get_secret_value()
    writers = [n for n, t in tokens.items() if t.scope is TokenScope.WRITE]
    if len(writers) != 1:
        found = (
            "no write-scope token" if not writers else f"several write-scope tokens ({', '.join(writers)})"
        )
        raise UsageError(f"{path} has {found} in admin.tokens: pick one with --token-name, or pass --token")
    return writers[0], tokens[writers[0]].token.get_secret_value()
