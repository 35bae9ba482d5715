"""`cutover` loads what a command needs when the command runs: printing help, which every command's
parser build shares, loads none of the heavy libraries (each costs tens of milliseconds before a command
can reach its first query). Checked in a fresh interpreter, by what `sys.modules` holds afterwards."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = (
    "aiohttp",
    "asyncpg",
    "fastapi",
    "httpx",
    "msgspec",
    "opentelemetry",
    "pydantic",
    "redis",
    "sqlglot",
    "starlette",
    "uvicorn",
    "yaml",
)
PROBE = """
import json, sys
from proxy.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)))
"""


def _modules_after(*argv: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=60, check=True
    )
    return set(json.loads(done.stdout.splitlines()[-1]))


@pytest.mark.parametrize("argv", [["--help"], ["verify", "--help"], ["backfill", "--help"]], ids=" ".join)
def test_help_loads_no_heavy_library(argv: list[str]) -> None:
    modules = _modules_after(*argv)
    assert "proxy.cli.main" in modules, "the probe proved nothing"
    assert "proxy.cli.data" in modules, "the probe proved nothing"
    loaded = sorted(m for m in modules if m.split(".")[0] in HEAVY)
    assert not loaded, f"`cutover {' '.join(argv)}` imported {loaded}"
