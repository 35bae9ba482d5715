"""json-server 0.17 itself (Node.js), as a test's old or new backend: a PUT that does not create, POST
with the id to create, bare-array lists paged by `_page`/`_limit` with `Link` and `X-Total-Count`. It
knows no tenants: one tenant per server. `make json-server` installs it from the lock in
tests/support/json-server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.support.servers import free_port

BINARY = Path(__file__).parent / "json-server" / "node_modules" / ".bin" / "json-server"


@asynccontextmanager
async def json_server(folder: Path, items: list[dict[str, Any]]) -> AsyncIterator[str]:
    """A json-server serving `items` at /items (its database file in `folder`); yields its URL."""
    assert BINARY.exists(), f"{BINARY} is missing: run `make json-server`"
    port = free_port()
    database = folder / f"db-{port}.json"
    database.write_text(json.dumps({"items": items}))
    process = await asyncio.create_subprocess_exec(
        str(BINARY),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--quiet",
        str(database),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            for _ in range(300):
                assert process.returncode is None, f"json-server exited: {await _stderr(process)}"
                try:
                    if (await client.get(f"{url}/items?_limit=1")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
            else:
                raise AssertionError("json-server did not answer within 15 s")
        yield url
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()


async def records(url: str) -> dict[str, dict[str, Any]]:
    """Every record of /items by id."""
    async with httpx.AsyncClient(timeout=10) as client:
        answer = await client.get(f"{url}/items")
    answer.raise_for_status()
    return {str(record["id"]): record for record in answer.json()}


async def _stderr(process: asyncio.subprocess.Process) -> str:
    assert process.stderr is not None
    return (await process.stderr.read()).decode(errors="replace")[-2000:]
