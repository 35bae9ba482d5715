"""The shadow process starts with every serving process and again after each of its restarts, and the
serving process waits for it: what it imports before it can take a job is start-up time. It never talks to
Redis, so it loads no Redis client (some 0.2 s of CPU). Checked in a fresh interpreter, by what
`sys.modules` holds after importing what the spawned process unpickles (its entry point and settings)."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, sys
from config.settings import Settings
from proxy.shadow.process import shadow_process_main
print(json.dumps(sorted(sys.modules)))
"""


def test_the_shadow_process_loads_no_redis_client() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    modules = set(json.loads(done.stdout.splitlines()[-1]))
    assert {"proxy.shadow.process", "asyncpg", "aiohttp"} <= modules, "the probe proved nothing"
    assert sorted(m for m in modules if m.split(".")[0] == "redis") == []
