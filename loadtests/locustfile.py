"""Locust users for cutover: one tenant per phase, reads and writes of `/items/{key}` through the proxy.

Black-box over HTTP: nothing from the project is imported. Two profiles (user classes):
  ReadHeavy   90 % reads, 10 % writes
  WriteHeavy  30 % reads, 70 % writes
Request names are `<phase> read` / `<phase> write`: the request types the latency budgets are set for.
A response served by a side the phase does not name (`X-Cutover-Served-By`) counts as a failure.

    locust -f loadtests/locustfile.py ReadHeavy --headless -u 8 -r 8 -t 20s --host http://127.0.0.1:8080 \
        --cutover-tenants legacy=t1,shadow=t2 --csv out/run

`loadtests/run_loadtest.py` prepares the tenants (one per phase, seeded keys, named `lt-<run id>-<phase>`
so that runs never share a tenant), runs this for you and archives them afterwards.
"""

from __future__ import annotations

import random
from typing import Any

from locust import HttpUser, between, events, task

TENANT_HEADER = "X-Tenant-ID"
# The side that must answer, per phase and request kind (the routing table in README.md). Reads in live
# and rampdown may fall back to old, but only when new fails, which these runs do not provoke.
SERVED_BY = {
    ("legacy", "read"): "old",
    ("legacy", "write"): "old",
    ("dual_write", "read"): "old",
    ("dual_write", "write"): "old",
    ("shadow", "read"): "old",
    ("shadow", "write"): "old",
    ("live", "read"): "new",
    ("live", "write"): "new",
    ("rampdown", "read"): "new",
    ("rampdown", "write"): "new",
    ("complete", "read"): "new",
    ("complete", "write"): "new",
}


def _options(parser: Any) -> None:
    parser.add_argument(
        "--cutover-tenants", default="", help="phase=tenant pairs, comma-separated (one tenant per phase)"
    )
    parser.add_argument("--cutover-keys", type=int, default=50, help="keys per tenant (k0 .. kN-1)")


events.init_command_line_parser.add_listener(_options)  # type: ignore[no-untyped-call]  # unannotated hook


class _CutoverUser(HttpUser):
    abstract = True
    wait_time = between(0.005, 0.02)
    write_share = 0.5

    def on_start(self) -> None:
        options = self.environment.parsed_options
        pairs = [pair.split("=", 1) for pair in options.cutover_tenants.split(",") if pair]
        if not pairs:
            raise ValueError("--cutover-tenants is required (phase=tenant,...)")
        self.tenants: list[tuple[str, str]] = [(phase, tenant) for phase, tenant in pairs]
        self.keys: int = options.cutover_keys
        self.rng = random.Random()

    @task
    def one_request(self) -> None:
        phase, tenant = self.rng.choice(self.tenants)
        key = f"k{self.rng.randrange(self.keys)}"
        headers = {TENANT_HEADER: tenant}
        if self.rng.random() < self.write_share:
            kind = "write"
            body = {"value": self.rng.randrange(1_000_000), "by": "loadtest"}
            context = self.client.put(
                f"/items/{key}", json=body, headers=headers, name=f"{phase} write", catch_response=True
            )
        else:
            kind = "read"
            context = self.client.get(
                f"/items/{key}", headers=headers, name=f"{phase} read", catch_response=True
            )
        with context as response:
            expected = SERVED_BY.get((phase, kind))
            served_by = response.headers.get("x-cutover-served-by")
            if response.status_code >= 400:
                response.failure(f"HTTP {response.status_code} served by {served_by}")
            elif expected is not None and served_by != expected:
                response.failure(f"served by {served_by}, the {phase} phase serves {kind}s from {expected}")
            else:
                response.success()


class ReadHeavy(_CutoverUser):
    write_share = 0.1


class WriteHeavy(_CutoverUser):
    write_share = 0.7
