"""docs/runbook.md cannot go stale: every ```console block is run, in order, against `cutover demo --serve`
and against the same set-up with json-server-like data services (`tests/docs/jsonlike_stack.py`: string
ids, a PUT that never creates, creates by POST, bare-array lists paged by `Link`), and each command's
output must match what the runbook says it prints. The two differ only by their settings file, which the
commands read from `CUTOVER_CONFIG`.

In a block, a line starting with `$ ` is a command (run with bash, `pipefail` on); the lines up to the
next command are its expected output. `...` alone on a line matches any number of lines, `...` inside a
line matches any text, and a run of spaces matches any run of spaces (table columns move with widths).

Nothing else may slip through: every other shell block (```sh, ```bash) must say why it is not run, on
the line before it (`<!-- not run: ... -->`), and every `cutover ...` command quoted in the prose must be
one the CLI accepts as written (parsed by its own parser, not run), so a renamed option cannot hide in a
sentence.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.docs.jsonlike_stack import SEEDED

REPO = Path(__file__).resolve().parents[2]
RUNBOOK = REPO / "docs" / "runbook.md"


@dataclass(frozen=True)
class Command:
    line: int
    command: str
    expected: list[str]


def parse_console_blocks(text: str) -> list[Command]:
    commands: list[Command] = []
    in_block = False
    current: Command | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if not in_block:
            in_block = line.strip() == "```console"
            continue
        if line.strip() == "```":
            in_block = False
            current = None
            continue
        if line.startswith("$ "):
            current = Command(number, line[2:], [])
            commands.append(current)
        elif current is None:
            raise ValueError(f"runbook line {number}: output before any command")
        else:
            current.expected.append(line)
    return commands


def expected_pattern(expected: list[str]) -> re.Pattern[str]:
    parts = []
    for line in expected:
        if line.strip() == "...":
            parts.append(r"(?:[^\n]*\n)*?")
            continue
        pieces = [re.sub(r"\\ (?:\\ )+", "[ ]+", re.escape(piece)) for piece in line.rstrip().split("...")]
        parts.append("[^\n]*?".join(pieces) + r"\n")
    return re.compile("".join(parts))


def matches(expected: list[str], output: str) -> bool:
    normalised = "".join(line.rstrip() + "\n" for line in output.splitlines())
    return expected_pattern(expected).fullmatch(normalised) is not None


def test_matcher_is_exact_except_where_told() -> None:
    table = "TENANT  PHASE   VERSION\nacme    legacy  0\n"
    assert matches(["TENANT  PHASE  VERSION", "acme  legacy  0"], table)
    assert not matches(["TENANT  PHASE  VERSION", "acme  legacy  1"], table)
    assert not matches(["TENANT  PHASE  VERSION"], table)  # a line too many in the output
    assert not matches(["TENANT  PHASE  VERSION", "acme  legacy  0", "more"], table)
    assert matches(["...", "acme  ...  0"], table)
    assert matches(["TENANT  PHASE  VERSION", "...", "acme  legacy  0", "..."], table)
    assert not matches(["acme legacy 0"], "acmelegacy0\n")  # spaces stay required
    assert matches([], "")


_FENCE = re.compile(r"^```(\w*)")
_NOT_RUN = re.compile(r"^<!-- not run: .+ -->$")
_SHELL = frozenset({"sh", "bash", "shell"})
_INLINE = re.compile(r"`(cutover [^`]+)`")


def unrun_shell_blocks(text: str) -> list[tuple[int, bool]]:
    """(line, says why) of every shell block that is not a console block."""
    found = []
    lines = text.splitlines()
    in_block = False
    for number, line in enumerate(lines, start=1):
        fence = _FENCE.match(line.strip())
        if fence is None:
            continue
        if in_block:
            in_block = False
            continue
        in_block = True
        if fence.group(1) in _SHELL:
            before = next((lines[n].strip() for n in range(number - 2, -1, -1) if lines[n].strip()), "")
            found.append((number, _NOT_RUN.match(before) is not None))
    return found


def inline_commands(text: str) -> list[tuple[int, str]]:
    """`cutover ...` quoted in the prose (outside fenced blocks)."""
    found, in_block = [], False
    for number, line in enumerate(text.splitlines(), start=1):
        if _FENCE.match(line.strip()):
            in_block = not in_block
            continue
        if not in_block:
            found += [(number, command) for command in _INLINE.findall(line)]
    return found


def test_every_shell_block_is_run_or_says_why_not() -> None:
    blocks = unrun_shell_blocks(RUNBOOK.read_text())
    assert [line for line, why in blocks if not why] == [], "shell blocks that are neither run nor explained"
    assert len(parse_console_blocks(RUNBOOK.read_text())) > 30, "the test proved nothing"


def test_commands_quoted_in_the_prose_are_accepted_as_written() -> None:
    from proxy.cli.main import _parser
    from proxy.cli.support import UsageError

    quoted = inline_commands(RUNBOOK.read_text())
    assert len(quoted) >= 10, "the test proved nothing"
    refused = []
    for line, command in quoted:
        try:
            args = _parser().parse_args(shlex.split(command)[1:])
        except UsageError as exc:
            refused.append(f"docs/runbook.md line {line}: `{command}`: {exc.detail}")
            continue
        if not hasattr(args, "run"):
            refused.append(f"docs/runbook.md line {line}: `{command}` is not a whole command")
    assert refused == []


def test_the_checks_catch_what_they_are_for() -> None:
    assert unrun_shell_blocks("text\n```sh\nrm -rf x\n```\n") == [(2, False)]
    assert unrun_shell_blocks("<!-- not run: placeholders -->\n\n```sh\nx\n```\n") == [(3, True)]
    assert inline_commands("see `cutover report --tenant acme` and\n```sh\n`cutover x`\n```\n") == [
        (1, "cutover report --tenant acme")
    ]


def test_runbook_walks_every_phase_and_rehearses_each_rollback() -> None:
    commands = [c.command for c in parse_console_blocks(RUNBOOK.read_text())]
    targets = [c.split()[4] for c in commands if c.startswith("cutover phase set acme ")]
    assert list(dict.fromkeys(targets)) == ["dual_write", "shadow", "live", "rampdown", "complete"]
    assert sum(1 for c in commands if c.startswith("cutover phase rollback acme ")) == 5


def test_runbook_copies_and_verifies_in_the_real_order() -> None:
    """Mirroring first, then the copy, its status and a verification, all before reads are compared."""
    commands = [c.command for c in parse_console_blocks(RUNBOOK.read_text())]

    def first(prefix: str) -> int:
        return next(n for n, command in enumerate(commands) if command.startswith(prefix))

    mirroring = max(n for n, c in enumerate(commands) if c.startswith("cutover phase set acme dual_write"))
    assert (
        mirroring
        < first("cutover backfill --tenant acme --dry-run")
        < first("cutover backfill --tenant acme --rows")
    )
    assert first("cutover backfill --tenant acme --rows") < first("cutover backfill status acme")
    assert first("cutover backfill status acme") < first("cutover verify --tenant acme")
    assert first("cutover verify --tenant acme") < first("cutover phase set acme shadow")
    complete = first("cutover phase set acme complete")
    assert any(
        c.startswith("cutover verify --tenant acme")
        for c in commands[first("cutover phase set acme rampdown") : complete]
    )


# The set-ups the runbook runs against: the demo's data services, and json-server-like ones.
STACKS = {
    "demo": ["{cutover}", "demo", "--serve", "--env-file", "{env_file}"],
    "json-server": ["{python}", "-m", "tests.docs.jsonlike_stack", "{env_file}"],
}


@pytest.fixture(scope="module")
def stacks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, dict[str, str]]]:
    """Every set-up of `STACKS`, started at once; the environment the runbook's commands run in, by name."""
    cutover = Path(sys.executable).with_name("cutover")
    started: dict[str, tuple[subprocess.Popen[bytes], Path, Path]] = {}
    try:
        for name, argv in STACKS.items():
            directory = tmp_path_factory.mktemp(f"runbook-{name}")
            env_file, log = directory / "demo.env", directory / "demo.log"
            names = {"cutover": str(cutover), "python": sys.executable, "env_file": str(env_file)}
            with log.open("wb") as output:
                process = subprocess.Popen(
                    [part.format(**names) for part in argv],
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    cwd=REPO,
                )
            started[name] = (process, env_file, log)
        environments = {}
        deadline = time.monotonic() + 90
        for name, (process, env_file, log) in started.items():
            while not env_file.exists():
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, f"the {name} set-up did not start within 90 s"
                time.sleep(0.1)
            values = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
            environments[name] = {
                **{k: v for k, v in os.environ.items() if not k.startswith(("CUTOVER_", "DEMO_"))},
                **values,
                "PROXY_URL": values["DEMO_PROXY_URL"],
                "PATH": f"{cutover.parent}{os.pathsep}{os.environ.get('PATH', '')}",
            }
        yield environments
    finally:
        for process, _, _ in started.values():
            os.killpg(process.pid, signal.SIGTERM)
        for process, _, _ in started.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)


def walk(env: dict[str, str]) -> str | None:
    """Run every command of the runbook in `env`, in order; what went wrong first, if anything."""
    for step in parse_console_blocks(RUNBOOK.read_text()):
        result = subprocess.run(
            ["bash", "-o", "pipefail", "-c", step.command],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        where = f"docs/runbook.md line {step.line}: $ {step.command}"
        if result.returncode != 0:
            return f"{where}\nexit {result.returncode}\n{result.stdout}{result.stderr}"
        if not matches(step.expected, result.stdout):
            return f"{where}\n--- expected\n" + "\n".join(step.expected) + f"\n--- printed\n{result.stdout}"
    return None


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_runbook_commands_print_what_the_runbook_says(stacks: dict[str, dict[str, str]]) -> None:
    # The set-ups are walked at once: most of a command's time is its process starting, and they share
    # nothing (each has its own database, Redis prefix and ports).
    with ThreadPoolExecutor(len(stacks)) as pool:
        failures = dict(zip(stacks, pool.map(walk, stacks.values()), strict=True))
    assert {name: failure for name, failure in failures.items() if failure} == {}
    for name, env in stacks.items():
        # What the copy and mirroring were for: new holds every record of old, seeded ones too.
        held = {side: _records(env[f"DEMO_{side}_URL"]) for side in ("OLD", "NEW")}
        assert held["OLD"] == held["NEW"], name
        assert {"runbook-0", "runbook-1", "runbook-2"} <= held["NEW"].keys()
        if name == "json-server":
            assert len(held["NEW"]) == SEEDED + 3, "the seeded records were not copied"


def _records(url: str) -> dict[str, object]:
    body = httpx.get(f"{url}/items", headers={"X-Tenant-ID": "acme"}, timeout=10).json()
    return {str(record["id"]): record for record in (body if isinstance(body, list) else body["items"])}
