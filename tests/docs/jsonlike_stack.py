"""`python -m tests.docs.jsonlike_stack ENV_FILE`: the demo's served set-up (`cutover demo --serve`:
proxy, worker, a scratch database and Redis prefix) with json-server-like data services
(`tests.support.jsonlike_server`) as old and new, for docs/runbook.md's test. Its settings describe them
to cutover as an operator would: creates are POSTs with the id in the body (their PUT never creates),
lists are bare arrays paged with `_page` / `_limit` and a `Link` header. Old starts with `SEEDED` records
of tenant acme (string ids), so the runbook's copy has pages to walk."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from proxy.demo.runner import Demo
from proxy.demo.serve import serve_stack

SEEDED = 120
JSON_SERVER_ITEMS = {
    "name": "items",
    "list_path": "/items",
    "create": "post",
    "paging": "link",
    "page_param": "_page",
    "size_param": "_limit",
    "page_size": 50,
}


def main() -> int:
    env_file = Path(sys.argv[1])
    seed = env_file.with_name("old-seed.json")
    records = [{"id": f"seed-{n:04d}", "name": f"written long ago {n}"} for n in range(SEEDED)]
    seed.write_text(json.dumps({"acme": records}))

    def service(side: str, port: int) -> list[str]:
        return ["-m", "tests.support.jsonlike_server", str(port), *([str(seed)] if side == "old" else [])]

    demo = Demo("postgresql://postgres@127.0.0.1:5432/postgres", "redis://127.0.0.1:6379/0")
    return asyncio.run(serve_stack(demo, env_file, resources=[JSON_SERVER_ITEMS], service=service))


if __name__ == "__main__":
    sys.exit(main())
