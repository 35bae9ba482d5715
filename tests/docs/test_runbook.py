"""docs/runbook.md cannot go stale: every ```console block is run, in order, against `cutover demo --serve`,
and each command's output must match what the runbook says it prints.

In a block, a line starting with `$ ` is a command (run with bash, `pipefail` on); the lines up to the
next command are its expected output. `...` alone on a line matches any number of lines, `...` inside a
line matches any text, and a run of spaces matches any run of spaces (table columns move with widths).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

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


def test_runbook_walks_every_phase_and_rehearses_each_rollback() -> None:
    commands = [c.command for c in parse_console_blocks(RUNBOOK.read_text())]
    targets = [c.split()[4] for c in commands if c.startswith("cutover phase set acme ")]
    assert list(dict.fromkeys(targets)) == ["dual_write", "shadow", "live", "rampdown", "complete"]
    assert sum(1 for c in commands if c.startswith("cutover phase rollback acme ")) == 5


@pytest.fixture(scope="module")
def demo_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    directory = tmp_path_factory.mktemp("runbook")
    env_file = directory / "demo.env"
    cutover = Path(sys.executable).with_name("cutover")
    log = (directory / "demo.log").open("wb")
    process = subprocess.Popen(
        [str(cutover), "demo", "--serve", "--env-file", str(env_file)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not env_file.exists():
            assert process.poll() is None, (directory / "demo.log").read_text()
            assert time.monotonic() < deadline, "the demo set-up did not start within 60 s"
            time.sleep(0.1)
        values = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("CUTOVER_", "DEMO_"))},
            **values,
            "PROXY_URL": values["DEMO_PROXY_URL"],
            "PATH": f"{cutover.parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        yield env
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
        log.close()


@pytest.mark.timeout(150)
def test_runbook_commands_print_what_the_runbook_says(demo_env: dict[str, str]) -> None:
    for step in parse_console_blocks(RUNBOOK.read_text()):
        result = subprocess.run(
            ["bash", "-o", "pipefail", "-c", step.command],
            env=demo_env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        where = f"docs/runbook.md line {step.line}: $ {step.command}"
        assert result.returncode == 0, f"{where}\nexit {result.returncode}\n{result.stdout}{result.stderr}"
        assert matches(step.expected, result.stdout), (
            f"{where}\n--- expected\n" + "\n".join(step.expected) + f"\n--- printed\n{result.stdout}"
        )
