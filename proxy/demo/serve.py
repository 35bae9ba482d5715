"""`cutover demo --serve`: the demo's set-up (old and new data services, proxy, worker, a fresh database and
Redis prefix) left running for load tests, the runbook and a look at the status page, until SIGINT/SIGTERM.

What a client needs is printed as one JSON line and, with `--env-file`, written as `NAME=value` lines
(`CUTOVER_ADMIN_URL` and `CUTOVER_ADMIN_TOKEN` are what the CLI's admin commands read, `CUTOVER_CONFIG` the
settings file `cutover backfill` and `cutover verify` read; the `DEMO_*` names are the demo's own). Its
settings name the data services' `items` resource, so `cutover backfill` copies a tenant's records.
Everything is removed on exit, as after `cutover demo`.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

from proxy.demo import runner
from proxy.demo.runner import DEMO_ITEMS, Demo, demo_service, start_stack


def stack_info(demo: Demo, config: Path) -> dict[str, str]:
    return {
        "CUTOVER_CONFIG": str(config),
        "CUTOVER_ADMIN_URL": f"http://127.0.0.1:{demo.ports['admin']}",
        "CUTOVER_ADMIN_TOKEN": runner._TOKEN,
        "DEMO_READ_TOKEN": runner._READ_TOKEN,
        "DEMO_PROXY_URL": f"http://127.0.0.1:{demo.ports['proxy']}",
        "DEMO_OLD_URL": f"http://127.0.0.1:{demo.ports['old']}",
        "DEMO_NEW_URL": f"http://127.0.0.1:{demo.ports['new']}",
    }


async def serve_stack(
    demo: Demo,
    env_file: Path | None,
    *,
    resources: list[dict[str, Any]],
    service: Callable[[str, int], list[str]] = demo_service,
) -> int:
    """Serve the set-up until SIGINT/SIGTERM: the demo's, or with other data services (`service`, and the
    `resources` that describe them to cutover)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with runner.resources(demo) as directory:
        config = await start_stack(demo, directory, resources=resources, service=service)
        info = stack_info(demo, config)
        if env_file is not None:
            # Written whole, then renamed: a reader polling for the file never sees half of it.
            partial = env_file.with_name(env_file.name + ".partial")
            partial.write_text("".join(f"{name}={value}\n" for name, value in info.items()))
            partial.rename(env_file)
        print(json.dumps(info), flush=True)
        demo.say(f"serving until interrupted; logs in {directory}")
        while not stop.is_set():
            dead = [p.args for p in demo.processes if p.poll() is not None]
            if dead:
                demo.say(f"a demo process exited: {dead[0]!r}; stopping")
                return 1
            with suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await stop.wait()
        demo.say("stopping")
    if env_file is not None:
        await asyncio.to_thread(env_file.unlink, missing_ok=True)
    return 0


def serve_demo(*, postgres_url: str, redis_url: str, env_file: str | None) -> int:
    demo = Demo(postgres_url, redis_url)
    return asyncio.run(serve_stack(demo, Path(env_file) if env_file else None, resources=[DEMO_ITEMS]))
