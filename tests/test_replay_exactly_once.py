"""Replay is exactly once in effect without the backend's help.

Both sides are json-server-like subprocesses (`tests.support.jsonlike_server`: no Idempotency-Key, 500 on a
create with an id that exists, 404 to a PUT, PATCH or DELETE of a missing record). A real proxy and real
worker subprocesses run against a private Redis; 20 writers send creates (with and without a client id),
PUTs, PATCHes and DELETEs through the proxy in `dual_write` while workers are SIGKILLed and Redis is
paused (SIGSTOP). After the buffer drains: no acknowledged write is missing on new, no record is there
twice or extra, old and new hold the same records, and nothing is dead-lettered.

`make test` runs the short variant; `make soak` the 60 s one (5 kills, a 10 s pause).
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
import yaml

from buffer_worker.keys import worker_stats_key
from tests.support.processes import Processes
from tests.support.servers import free_port
from tests.support.waits import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.fault]

TENANTS = 4
WRITERS = 20
PARTITIONS = 4
PREFIX = "exactly-once"
TOKEN = "exactly-once-write-token"
Record = dict[str, Any]


@dataclass
class Scenario:
    duration_s: float
    kills: int
    pause_s: float


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    running = Processes(tmp_path)
    yield running
    running.stop_all()


def _config(tmp_path: Path, ports: dict[str, int], redis_url: str, pg_url: str) -> Path:
    config = {
        "listen": f"127.0.0.1:{ports['proxy']}",
        "admin": {
            "listen": f"127.0.0.1:{ports['admin']}",
            "tokens": {"soak": {"token": TOKEN, "scope": "write"}},
        },
        "backends": {side: {"url": f"http://127.0.0.1:{ports[side]}"} for side in ("old", "new")},
        "postgres_url": pg_url,
        "redis_url": redis_url,
        "buffer": {
            "key_prefix": PREFIX,
            "partitions": PARTITIONS,
            "spool_path": str(tmp_path / "intents.spool"),
        },
        "worker": {
            "lease_ttl_s": 1,
            "block_ms": 50,
            "batch_size": 50,
            "retry_initial_s": 0.02,
            "retry_max_s": 0.2,
            "apply_timeout_s": 3,
        },
        # The backend contract: creates go to the collection with the id in the body (json-server's PUT
        # only replaces).
        "data": {"rest": {"resources": [{"name": "items", "list_path": "/items", "create": "post"}]}},
        "log_level": "warning",
    }
    path = tmp_path / "cutover.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@dataclass
class Writer:
    """One client: creates records, then updates and deletes its own. `model` is each record's state as
    the last acknowledged write left it (None: deleted)."""

    number: int
    tenant: str
    model: dict[str, Record | None] = field(default_factory=dict)
    acknowledged: int = 0
    refused: list[str] = field(default_factory=list)

    async def run(self, client: httpx.AsyncClient, stop_at: float) -> None:
        rng = random.Random(self.number)
        headers = {"X-Tenant-ID": self.tenant}
        created = 0
        loop = asyncio.get_running_loop()
        while loop.time() < stop_at:
            live = [key for key, record in self.model.items() if record is not None]
            roll = rng.random()
            body: Record = {"writer": self.number, "n": rng.randrange(10**6)}
            if not live or roll < 0.3:
                if rng.random() < 0.5:
                    created += 1
                    body["id"] = f"w{self.number}-{created}"
                response = await client.post("/items", json=body, headers=headers)
                if self._acknowledged(response, "POST"):
                    record = response.json()
                    self.model[str(record["id"])] = record
            else:
                key = rng.choice(live)
                current = self.model[key]
                assert current is not None
                if roll < 0.55:
                    response = await client.put(f"/items/{key}", json=body, headers=headers)
                    if self._acknowledged(response, "PUT"):
                        self.model[key] = {**body, "id": current["id"]}
                elif roll < 0.85:
                    patch = {"n": body["n"], f"f{rng.randrange(3)}": self.number}
                    response = await client.patch(f"/items/{key}", json=patch, headers=headers)
                    if self._acknowledged(response, "PATCH"):
                        self.model[key] = {**current, **patch}
                else:
                    response = await client.delete(f"/items/{key}", headers=headers)
                    if self._acknowledged(response, "DELETE"):
                        self.model[key] = None
            await asyncio.sleep(0.005)

    def _acknowledged(self, response: httpx.Response, method: str) -> bool:
        if 200 <= response.status_code < 300:
            self.acknowledged += 1
            return True
        self.refused.append(f"{method} {response.status_code} {response.text[:100]}")
        return False


async def _faults(
    scenario: Scenario, processes: Processes, config: Path, workers: list[subprocess.Popen[bytes]], redis: Any
) -> list[str]:
    """SIGKILL a worker `kills` times (a new one replaces it at once) and pause Redis once, spread over
    the run. Returns what was done, in order."""
    done: list[str] = []
    steps = scenario.kills + 1
    gap_s = scenario.duration_s / (steps + 1)
    pause_at = steps // 2
    for step in range(steps):
        await asyncio.sleep(gap_s)
        if step == pause_at:
            redis.send_signal(signal.SIGSTOP)
            await asyncio.sleep(scenario.pause_s)
            redis.send_signal(signal.SIGCONT)
            done.append(f"redis paused {scenario.pause_s:.0f} s")
            continue
        victim = workers.pop(0)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        workers.append(processes.start("worker", "-m", "proxy.cli.main", "worker", "--config", str(config)))
        done.append("worker killed")
    return done


async def _records(client: httpx.AsyncClient, tenant: str) -> list[Record]:
    response = await client.get("/items", headers={"X-Tenant-ID": tenant})
    assert response.status_code == 200, response.text
    records: list[Record] = response.json()
    return records


@pytest.mark.parametrize(
    "scenario",
    [
        pytest.param(Scenario(duration_s=20, kills=2, pause_s=5), id="short", marks=pytest.mark.timeout(150)),
        pytest.param(
            Scenario(duration_s=60, kills=5, pause_s=10),
            id="soak",
            marks=[pytest.mark.soak, pytest.mark.timeout(400)],
        ),
    ],
)
async def test_replay_is_exactly_once_in_effect_against_a_json_server_like_backend(
    scenario: Scenario,
    processes: Processes,
    private_redis: tuple[str, asyncio.subprocess.Process],
    pg_url: str,
    tmp_path: Path,
) -> None:
    redis_url, redis_process = private_redis
    ports = {name: free_port() for name in ("old", "new", "proxy", "admin")}
    for side in ("old", "new"):
        processes.start(side, "-m", "tests.support.jsonlike_server", str(ports[side]))
    config = _config(tmp_path, ports, redis_url, pg_url)
    processes.start("proxy", "-m", "proxy.cli.main", "serve", "--config", str(config))
    admin = httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{ports['admin']}",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=30,
    )
    data = httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports['proxy']}", timeout=60)
    sides = {
        side: httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports[side]}", timeout=30)
        for side in ("old", "new")
    }

    async def ready() -> bool:
        answers = [await admin.get("/readyz")] + [await c.get("/items") for c in sides.values()]
        return all(a.status_code == 200 for a in answers)

    try:
        await wait_for(
            ready,
            "the proxy and both backends did not come up",
            timeout_s=30,
            interval_s=0.1,
            ignoring=(httpx.HTTPError,),
        )
        run = uuid.uuid4().hex[:6]
        tenants = [f"once-{run}-{n}" for n in range(TENANTS)]
        for tenant in tenants:
            response = await admin.put(
                f"/tenants/{tenant}/phase", json={"phase": "dual_write", "reason": "exactly-once test"}
            )
            assert response.status_code == 200, response.text
        workers = [
            processes.start("worker", "-m", "proxy.cli.main", "worker", "--config", str(config))
            for _ in range(2)
        ]
        writers = [Writer(n, tenants[n % TENANTS]) for n in range(WRITERS)]
        stop_at = asyncio.get_running_loop().time() + scenario.duration_s
        _, faults = await asyncio.gather(
            asyncio.gather(*(writer.run(data, stop_at) for writer in writers)),
            _faults(scenario, processes, config, workers, redis_process),
        )

        async def drained() -> bool:
            """Nothing left to apply: intents still pending are dead letters (so the failure says so)."""
            report = (await admin.get("/buffer")).json()
            rows = [t for t in report["tenants"] if t["tenant"] in tenants]
            waiting = sum(sum(t["pending"].values()) - t["dead_letters"] for t in rows)
            return bool(report["spool"]["spooled"] == 0 and waiting <= 0)

        try:
            await wait_for(
                drained,
                "the buffer did not drain",
                timeout_s=90 if scenario.duration_s < 60 else 180,
                interval_s=0.1,
                ignoring=(httpx.HTTPError,),
            )
        except AssertionError as exc:
            report = (await admin.get("/buffer")).json()
            raise AssertionError(
                f"{exc}: {[t for t in report['tenants'] if t['tenant'] in tenants]}"
            ) from None
        spooled_total = (await admin.get("/readyz")).json()["buffer"]["spooled_total"]
        dead = (await admin.get("/buffer/dead-letters", params={"limit": 1000})).json()["dead_letters"]
        lost: list[str] = []
        duplicated: list[str] = []
        divergent: list[str] = []
        for tenant in tenants:
            old_list = await _records(sides["old"], tenant)
            new_list = await _records(sides["new"], tenant)
            old = {str(r["id"]): r for r in old_list}
            new = {str(r["id"]): r for r in new_list}
            duplicated += [f"{tenant}/{k}" for k in new if [str(r["id"]) for r in new_list].count(k) > 1]
            duplicated += [f"{tenant}/{k} (extra on new)" for k in new.keys() - old.keys()]
            divergent += [f"{tenant}/{k}" for k in old if old[k] != new.get(k)]
            for writer in writers:
                if writer.tenant != tenant:
                    continue
                for key, record in writer.model.items():
                    if record is None and key in new or record is not None and new.get(key) != record:
                        lost.append(f"{tenant}/{key}: acknowledged {record}, new holds {new.get(key)}")
    finally:
        for client in (admin, data, *sides.values()):
            await client.aclose()
        processes.stop_all()  # workers stop gracefully: their counters reach Redis
    stats_client = aioredis.Redis.from_url(redis_url)
    try:
        raw: Any = await stats_client.hgetall(worker_stats_key(PREFIX))
        stats = {k.decode(): int(v) for k, v in raw.items()}
    finally:
        await stats_client.aclose()
    acknowledged = sum(writer.acknowledged for writer in writers)
    summary = {
        "scenario": scenario.__dict__,
        "faults": faults,
        "acknowledged_writes": acknowledged,
        "records_on_old": sum(1 for w in writers for r in w.model.values() if r is not None),
        "lost": len(lost),
        "duplicated": len(duplicated),
        "divergent": len(divergent),
        "dead_letters": len(dead),
        "spooled_total": spooled_total,
        "worker": stats,
    }
    print(f"\nexactly-once result: {json.dumps(summary, sort_keys=True)}")
    assert faults.count("worker killed") == scenario.kills
    assert acknowledged > 500, "too few writes: the test proved nothing"
    assert spooled_total, "Redis was paused but nothing was spooled: the test proved nothing"
    assert not [w.refused for w in writers if w.refused], "writes were refused"
    assert lost == [], lost[:10]
    assert duplicated == [], duplicated[:10]
    assert divergent == [], divergent[:10]
    assert dead == [], [d["reason"] for d in dead[:5]]
