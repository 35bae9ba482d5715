"""Run cutover's locust profiles against a proxy and judge them against latency and error budgets.

Black-box: it talks HTTP to the proxy and its admin API, and runs `cutover demo --serve` and `locust` as
programs; nothing of cutover is imported. For each phase it prepares one tenant (keys seeded while the
tenant mirrors, so both sides hold them, then walked to its phase through the admin API), runs the
profile headless with CSV output, and prints one verdict per run. Exit status: 0 when every run kept its
budget, 1 when one broke it, 2 on bad usage or a set-up failure.

    python -m loadtests.run_loadtest --demo                          # start the demo set-up, run, stop it
    python -m loadtests.run_loadtest --demo --profile mixed --run-time 20s
    python -m loadtests.run_loadtest --proxy-url URL --admin-url URL --token TOKEN
    python -m loadtests.run_loadtest --check results/read_heavy --budgets tight.yaml   # judge a CSV again

Each run names its tenants `lt-<run id>-<phase>` (`--run-id`, else random) and archives them when it
ends (`cutover tenant archive`: gone from `cutover tenants`, fleet moves and the status page, their
records kept), unless `--keep-tenants`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from loadtests.verdict import BudgetFileError, judge, load_budgets, read_stats, render

HERE = Path(__file__).resolve().parent
LOCUSTFILE = HERE / "locustfile.py"
PHASES = ("legacy", "dual_write", "shadow", "live", "rampdown", "complete")
PROFILES = {"read_heavy": ["ReadHeavy"], "write_heavy": ["WriteHeavy"], "mixed": ["ReadHeavy", "WriteHeavy"]}
TENANT_HEADER = "X-Tenant-ID"


class SetupError(Exception):
    pass


@dataclass(frozen=True)
class Stack:
    proxy_url: str
    admin_url: str
    token: str
    config: str | None = None  # the stack's settings file, for `cutover backfill` and `cutover verify`


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        budgets = load_budgets(Path(args.budgets))
    except (OSError, BudgetFileError) as exc:
        print(f"run_loadtest: {exc}", file=sys.stderr)
        return 2
    if args.check:
        verdict = judge(read_stats(Path(f"{args.check}_stats.csv")), budgets)
        print(render(verdict))
        return 0 if verdict.passed else 1
    profiles = ["read_heavy", "write_heavy"] if args.profile == "all" else [args.profile]
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    if unknown := set(phases) - set(PHASES):
        print(f"run_loadtest: unknown phases {sorted(unknown)}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run_id = args.run_id or uuid.uuid4().hex[:6]
    try:
        with _stack(args) as stack:
            print(f"run {run_id}: tenants {tenant_prefix(run_id)}<phase>", flush=True)
            tenants = tenants_of(run_id, phases)
            try:
                prepare(stack, tenants, keys=args.keys)
                passed = True
                for profile in profiles:
                    prefix = out / profile
                    _run_locust(stack, profile, tenants, args, prefix)
                    verdict = judge(read_stats(Path(f"{prefix}_stats.csv")), budgets)
                    print(f"\n== {profile}: {args.users} users, {args.run_time}, phases {','.join(phases)}")
                    print(render(verdict), flush=True)
                    passed = passed and verdict.passed
            finally:
                if not args.keep_tenants:
                    archive(stack, tenants, run_id)
    except SetupError as exc:
        print(f"run_loadtest: {exc}", file=sys.stderr)
        return 2
    print(f"\nCSV files in {out}; overall verdict: {'PASS' if passed else 'FAIL'}")
    return 0 if passed else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    target = parser.add_argument_group("target (either --demo, or the three URLs/token)")
    target.add_argument("--demo", action="store_true", help="start `cutover demo --serve` for the run")
    target.add_argument("--proxy-url", default=os.environ.get("DEMO_PROXY_URL"))
    target.add_argument("--admin-url", default=os.environ.get("CUTOVER_ADMIN_URL"))
    target.add_argument("--token", default=os.environ.get("CUTOVER_ADMIN_TOKEN"), help="write-scope token")
    target.add_argument(
        "--config",
        default=os.environ.get("CUTOVER_CONFIG"),
        help="the stack's settings file, for the copy or verify a move into live or complete asks for",
    )
    parser.add_argument("--profile", choices=[*PROFILES, "all"], default="all")
    parser.add_argument("--phases", default=",".join(PHASES), help="one tenant per phase named here")
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--spawn-rate", type=float, default=8)
    parser.add_argument("--run-time", default="15s", help="per profile, in locust's format (20s, 1m)")
    parser.add_argument("--keys", type=int, default=30, help="keys seeded per tenant")
    parser.add_argument("--budgets", default=str(HERE / "budgets.yaml"))
    parser.add_argument("--out", default="loadtest-results", help="directory for the CSV files")
    parser.add_argument("--check", metavar="CSV_PREFIX", help="only judge an earlier run's CSV")
    parser.add_argument(
        "--run-id", help="names this run's tenants lt-<run id>-<phase> (default: random); must be new"
    )
    parser.add_argument(
        "--keep-tenants",
        action="store_true",
        help="leave the run's tenants listed (by default they are archived when the run ends)",
    )
    return parser


@contextlib.contextmanager
def _stack(args: argparse.Namespace) -> Iterator[Stack]:
    if not args.demo:
        if not (args.proxy_url and args.admin_url and args.token):
            raise SetupError("give --demo, or --proxy-url, --admin-url and --token")
        yield Stack(args.proxy_url, args.admin_url, args.token, args.config)
        return
    with demo_stack(Path(args.out)) as stack:
        yield stack


@contextlib.contextmanager
def demo_stack(directory: Path, timeout_s: float = 60.0) -> Iterator[Stack]:
    """`cutover demo --serve` in its own process group, stopped (and cleaned up by itself) on exit."""
    cutover = Path(sys.executable).with_name("cutover")
    if not cutover.exists():
        raise SetupError(f"{cutover} not found: install the project first (make)")
    env_file = directory / f"demo-{uuid.uuid4().hex[:8]}.env"
    log = (directory / "demo.log").open("wb")
    process = subprocess.Popen(
        [str(cutover), "demo", "--serve", "--env-file", str(env_file)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + timeout_s
        while not env_file.exists():
            if process.poll() is not None:
                raise SetupError(f"the demo set-up exited with {process.returncode}; see {log.name}")
            if time.monotonic() > deadline:
                raise SetupError(f"the demo set-up was not up within {timeout_s:.0f} s; see {log.name}")
            time.sleep(0.1)
        values = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
        yield Stack(
            values["DEMO_PROXY_URL"],
            values["CUTOVER_ADMIN_URL"],
            values["CUTOVER_ADMIN_TOKEN"],
            values.get("CUTOVER_CONFIG"),
        )
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
        log.close()


def tenant_prefix(run_id: str) -> str:
    """A run's namespace: its tenants never collide with another run's, or with real tenants (whose ids
    do not start with `lt-`), and are found again by it."""
    return f"lt-{run_id}-"


def tenants_of(run_id: str, phases: list[str]) -> dict[str, str]:
    return {phase: f"{tenant_prefix(run_id)}{phase}" for phase in phases}


def archive(stack: Stack, tenants: dict[str, str], run_id: str) -> None:
    """Archive the run's tenants: out of `cutover tenants`, fleet moves and the status page, their phase
    rows and audit kept. Best effort: a run that failed half-way archives what exists."""
    headers = {"Authorization": f"Bearer {stack.token}"}
    archived = 0
    with httpx.Client(base_url=stack.admin_url, headers=headers, timeout=30) as admin:
        for tenant in tenants.values():
            try:
                response = admin.post(
                    f"/tenants/{tenant}/archive", json={"reason": f"load test run {run_id}"}
                )
            except httpx.HTTPError as exc:
                print(f"run_loadtest: could not archive {tenant}: {exc}", file=sys.stderr)
                continue
            if response.status_code == 200:
                archived += 1
            elif response.status_code != 404:  # 404: never created (the run stopped before it)
                print(f"run_loadtest: could not archive {tenant}: {response.text[:200]}", file=sys.stderr)
    print(f"run {run_id}: archived {archived} tenants", flush=True)


def prepare(stack: Stack, tenants: dict[str, str], *, keys: int) -> dict[str, str]:
    """One fresh tenant per phase, its keys present on every side its phase reads from."""
    headers = {"Authorization": f"Bearer {stack.token}"}
    with (
        httpx.Client(base_url=stack.admin_url, headers=headers, timeout=30) as admin,
        httpx.Client(base_url=stack.proxy_url, timeout=30) as proxy,
    ):

        def move(tenant: str, phase: str) -> None:
            change = {"phase": phase, "reason": "load test set-up"}
            response = admin.put(f"/tenants/{tenant}/phase", json=change)
            # A stack that copies REST resources or verifies tables refuses live before the copy and
            # complete before a verify: run them as an operator does, then move again.
            if response.status_code == 422 and (command := GATE_COMMANDS.get(response.json().get("error"))):
                run_cutover(stack, [command, "--tenant", tenant], refused=response.text)
                response = admin.put(f"/tenants/{tenant}/phase", json=change)
            if response.status_code != 200:
                raise SetupError(f"moving {tenant} to {phase} was refused: {response.text}")

        for phase, tenant in tenants.items():
            if phase != "legacy":
                move(tenant, "dual_write")  # seeded writes are mirrored to new
        for tenant in tenants.values():
            for key in range(keys):
                response = proxy.put(f"/items/k{key}", json={"value": key}, headers={TENANT_HEADER: tenant})
                if response.status_code >= 300:
                    raise SetupError(f"seeding {tenant} failed: {response.status_code} {response.text[:200]}")
        _wait_drained(admin, set(tenants.values()))
        for step in PHASES[2:]:
            for phase, tenant in tenants.items():
                if PHASES.index(phase) >= PHASES.index(step):
                    move(tenant, step)
    return tenants


# The command that satisfies each gate a move may be refused by (the admin API's error code).
GATE_COMMANDS = {"copy_unfinished": "backfill", "verify_required": "verify"}


def run_cutover(stack: Stack, arguments: list[str], *, refused: str) -> None:
    if stack.config is None:
        raise SetupError(f"a move was refused ({refused}); give --config so `cutover {arguments[0]}` can run")
    cutover = Path(sys.executable).with_name("cutover")
    env = {**os.environ, "CUTOVER_CONFIG": stack.config}
    done = subprocess.run(
        [str(cutover), *arguments], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode != 0:
        raise SetupError(f"`cutover {' '.join(arguments)}` exited {done.returncode}: {done.stderr[-500:]}")


def _wait_drained(admin: httpx.Client, tenants: set[str], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        report = admin.get("/buffer").json()
        pending = sum(sum(t["pending"].values()) for t in report["tenants"] if t["tenant"] in tenants)
        if pending == 0:
            return
        if time.monotonic() > deadline:
            raise SetupError(f"{pending} seeded intents still pending after {timeout_s:.0f} s")
        time.sleep(0.2)


def _run_locust(
    stack: Stack, profile: str, tenants: dict[str, str], args: argparse.Namespace, prefix: Path
) -> None:
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        *PROFILES[profile],
        "--headless",
        "--users",
        str(args.users),
        "--spawn-rate",
        str(args.spawn_rate),
        "--run-time",
        args.run_time,
        "--stop-timeout",
        "5",
        "--host",
        stack.proxy_url,
        "--csv",
        str(prefix),
        "--only-summary",
        "--loglevel",
        "WARNING",
        "--exit-code-on-error",
        "0",  # the budgets decide, not locust
        "--cutover-tenants",
        ",".join(f"{phase}={tenant}" for phase, tenant in tenants.items()),
        "--cutover-keys",
        str(args.keys),
    ]
    with (prefix.parent / f"{prefix.name}.locust.log").open("wb") as log:
        result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0 or not Path(f"{prefix}_stats.csv").exists():
        raise SetupError(f"locust exited with {result.returncode}; see {log.name}")


if __name__ == "__main__":
    sys.exit(main())
