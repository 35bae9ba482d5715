"""The command line's conventions, against a small stand-in for the admin API (a thread, no database):
exit codes, errors as JSON under --json, the admin URL and token from flag > environment > settings
file, --version, examples in every command's help, and a quiet end when the reader closes the pipe."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

from proxy.cli.main import _parser, main

CUTOVER = str(Path(sys.executable).with_name("cutover"))
TOKEN = "w" * 24


class FakeAdmin:
    """Answers a few admin routes; remembers the Authorization header of each request."""

    def __init__(self) -> None:
        self.authorizations: list[str | None] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                fake.authorizations.append(self.headers.get("Authorization"))
                path = self.path.split("?")[0]
                if path == "/audit":
                    entries = [
                        {
                            "id": n,
                            "at": "2024-01-01T00:00:00+00:00",
                            "tenant": "acme",
                            "from": "legacy",
                            "to": "dual_write",
                            "actor": "ops",
                            "version": n,
                            "forced": False,
                            "reason": "r" * 80,
                        }
                        for n in range(5000, 0, -1)
                    ]
                    self._send(200, {"entries": entries, "next": None})
                elif path == "/tenants":
                    self._send(
                        200, {"default_phase": "legacy", "tenants": [], "seen_in_traffic": [], "next": None}
                    )
                elif path == "/tenants/nobody":
                    self._send(404, {"error": "not_found", "detail": "no such thing"})
                elif path == "/divergence/report":
                    self._send(503, {"error": "store_unavailable", "detail": "the phase store is down"})
                else:
                    self._send(404, {"error": "not_found", "detail": path})

            def do_PUT(self) -> None:  # noqa: N802
                fake.authorizations.append(self.headers.get("Authorization"))
                self._send(
                    422,
                    {
                        "error": "phase_move_not_allowed",
                        "detail": "one step at a time",
                        "allowed": ["dual_write"],
                    },
                )

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)


@pytest.fixture
def admin() -> Iterator[FakeAdmin]:
    fake = FakeAdmin()
    fake.thread.start()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("CUTOVER_"):
            monkeypatch.delenv(name)


def clean_env(**extra: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("CUTOVER_")}, **extra}


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def settings_file(tmp_path: Path, admin: FakeAdmin, tokens: dict[str, dict[str, str]]) -> Path:
    host, port = admin.url.removeprefix("http://").split(":")
    path = tmp_path / "cutover.yaml"
    path.write_text(
        json.dumps(
            {
                "backends": {"old": {"url": "http://127.0.0.1:9"}, "new": {"url": "http://127.0.0.1:9"}},
                "admin": {"listen": f"{host}:{port}", "tokens": tokens},
            }
        )
    )
    return path


# -- exit codes and errors ------------------------------------------------------------------------------
def test_exit_codes_say_refused_usage_and_unavailable(
    admin: FakeAdmin, capsys: pytest.CaptureFixture[str]
) -> None:
    target = ["--admin-url", admin.url, "--token", TOKEN]
    code, _, err = cli(capsys, "phase", "get", "nobody", *target)
    assert code == 1
    assert "cutover: not_found: no such thing" in err
    code, _, err = cli(capsys, "phase", "set", "acme", "shadow", "--reason", "x", *target)
    assert code == 1
    assert "allowed moves: dual_write" in err
    code, _, err = cli(capsys, "phase", "get", "x", "--admin-url", "http://127.0.0.1:1", "--token", TOKEN)
    assert code == 3
    assert "cannot reach the admin API" in err
    code, _, err = cli(capsys, "phase", "set", "acme", "nowhere", "--reason", "x", *target)
    assert code == 2
    assert "invalid phase 'nowhere'" in err
    assert err.startswith("usage: cutover phase set")
    code, _, err = cli(capsys, "no-such-command")
    assert code == 2
    assert "invalid choice" in err


def test_5xx_is_unavailable(admin: FakeAdmin, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "report", "--admin-url", admin.url, "--token", TOKEN, "--json")
    assert code == 3
    assert not err
    assert json.loads(out) == {
        "error": "store_unavailable",
        "detail": "the phase store is down",
        "status": 503,
    }


def test_errors_are_json_on_stdout_under_json(admin: FakeAdmin, capsys: pytest.CaptureFixture[str]) -> None:
    target = ["--admin-url", admin.url, "--token", TOKEN, "--json"]
    code, out, err = cli(capsys, "phase", "set", "acme", "shadow", "--reason", "x", *target)
    assert code == 1
    assert not err
    assert json.loads(out) == {
        "error": "phase_move_not_allowed",
        "detail": "one step at a time",
        "allowed": ["dual_write"],
        "status": 422,
    }
    code, out, err = cli(
        capsys, "phase", "get", "x", "--admin-url", "http://127.0.0.1:1", "--token", "t", "--json"
    )
    assert code == 3
    assert json.loads(out)["error"] == "unreachable"
    assert not err
    code, out, err = cli(capsys, "phase", "set", "acme", "nowhere", "--reason", "x", "--json")
    assert code == 2
    assert json.loads(out)["error"] == "usage"
    assert not err
    code, out, _ = cli(capsys, "tenants", "--admin-url", admin.url, "--json")  # no token anywhere
    assert code == 2
    assert json.loads(out)["error"] == "no_token"


# -- where the URL and the token come from ----------------------------------------------------------------
def test_without_a_token_the_command_says_which_to_set(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "tenants")
    assert code == 2
    for hint in ("--token", "CUTOVER_ADMIN_TOKEN", "--config", "admin.tokens"):
        assert hint in err


def test_flag_beats_environment_beats_settings_file(
    admin: FakeAdmin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = settings_file(
        tmp_path,
        admin,
        {"ops": {"token": "f" * 20, "scope": "write"}, "dash": {"token": "r" * 20, "scope": "read"}},
    )
    # The file alone gives both the URL (admin.listen) and its only write token.
    assert cli(capsys, "tenants", "--config", str(config))[0] == 0
    monkeypatch.setenv("CUTOVER_CONFIG", str(config))  # the variable serve reads names the file too
    assert cli(capsys, "tenants")[0] == 0
    monkeypatch.setenv("CUTOVER_ADMIN_TOKEN", "e" * 20)
    assert cli(capsys, "tenants")[0] == 0
    assert cli(capsys, "tenants", "--token", "t" * 20)[0] == 0
    assert cli(capsys, "tenants", "--token-name", "dash")[0] == 0  # the environment's token still wins
    monkeypatch.delenv("CUTOVER_ADMIN_TOKEN")
    assert cli(capsys, "tenants", "--token-name", "dash")[0] == 0
    assert admin.authorizations == [f"Bearer {t * 20}" for t in "ffeter"]
    # The environment's URL beats the file's: nothing listens there.
    monkeypatch.setenv("CUTOVER_ADMIN_URL", "http://127.0.0.1:1")
    assert cli(capsys, "tenants")[0] == 3
    assert cli(capsys, "tenants", "--admin-url", admin.url)[0] == 0


def test_an_ambiguous_or_missing_token_in_the_file_is_a_usage_error(
    admin: FakeAdmin, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    two = settings_file(
        tmp_path,
        admin,
        {"a": {"token": "a" * 20, "scope": "write"}, "b": {"token": "b" * 20, "scope": "write"}},
    )
    code, _, err = cli(capsys, "tenants", "--config", str(two))
    assert code == 2
    assert "several write-scope tokens (a, b)" in err
    assert "--token-name" in err
    assert cli(capsys, "tenants", "--config", str(two), "--token-name", "b")[0] == 0
    code, _, err = cli(capsys, "tenants", "--config", str(two), "--token-name", "c")
    assert code == 2
    assert "no such token" in err
    assert admin.authorizations == [f"Bearer {'b' * 20}"]
    code, _, err = cli(capsys, "tenants", "--config", str(tmp_path / "missing.yaml"))
    assert code == 2
    assert "missing.yaml" in err


# -- help and version -----------------------------------------------------------------------------------
def _commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from _commands(sub, (*path, name))


def test_every_command_shows_examples_and_admin_commands_their_environment() -> None:
    found = list(_commands(_parser()))
    assert len(found) > 20, "the test proved nothing"
    for path, parser in found:
        text = parser.format_help()
        command = "cutover " + " ".join(path)
        assert "examples:\n" in text, f"`{command} --help` has no examples"
        examples = text.split("examples:\n", 1)[1].split("\n\n", 1)[0]
        assert all(line.startswith("  cutover ") for line in examples.splitlines()), (command, examples)
        if any(a.dest == "admin_url" for a in parser._actions):
            assert "CUTOVER_ADMIN_URL" in text, command
            assert "CUTOVER_ADMIN_TOKEN" in text, command
            # Each example is a command line this parser accepts.
            for line in examples.splitlines():
                words = line.split()[1 : 1 + len(path)]
                assert tuple(words) == path, (command, line)


def test_force_help_lists_what_it_overrides() -> None:
    parsers = dict(_commands(_parser()))
    for path in (("phase", "set"), ("phase", "rollback")):
        text = "".join(parsers[path].format_help().split())  # argparse wraps lines, at hyphens too
        for guard in ("leaving complete", "dead-letter guard", "verify gate", "never lifted"):
            assert "".join(guard.split()) in text, (path, guard)


def test_version_in_a_fresh_process() -> None:
    done = subprocess.run([CUTOVER, "--version"], capture_output=True, text=True, timeout=30, env=clean_env())
    assert done.returncode == 0
    assert done.stdout == f"cutover {version('cutover')}\n"
    assert not done.stderr


# -- the pipe -------------------------------------------------------------------------------------------
def test_a_closed_pipe_ends_quietly(admin: FakeAdmin) -> None:
    """`cutover audit | head -1`: 5000 rows fill the pipe, head goes away, cutover ends without a trace."""
    command = f"{CUTOVER} audit --admin-url {admin.url} --token {TOKEN} --limit 5000 | head -1"
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, timeout=60, env=clean_env()
    )
    assert done.stdout.startswith("ID  "), done.stdout
    assert done.returncode == 141, (done.returncode, done.stderr)
    assert done.stderr == ""
