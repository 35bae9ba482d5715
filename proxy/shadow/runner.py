"""Shadow reads, serving-process side: admit, hand off to the shadow process, count the outcomes.

The comparison itself runs in a separate, lower-priority process (`proxy.shadow.process`): sending a
second request and diffing its answer costs about as much CPU as serving the read, and on a busy core
that cost would land on the client's latency. Here a shadowed read costs one frame written to a Unix
socket after the client has its answer.

Admission (before serving, so the executor knows whether to capture the serving answer):
1. only GET and HEAD are shadowed: they are safe to send twice (RFC 9110 §9.2.1); OPTIONS is a read for
   routing but not replayed, and writes reach the other side only through the buffer;
2. the tenant's sample rate (`divergence.policy.sampling`), else `shadow.sample_rate`;
3. a cap of `shadow.max_in_flight` shadow reads per backend. An admitted read holds a slot of the backend
   its shadow read goes to until its completion byte comes back (the shadow process answers within
   `shadow.timeout_s`), which bounds the backlog, the socket buffer and the load on that backend. Reads
   over the cap, or while the shadow process is down, are skipped and counted per tenant and resource.
   Slots are counted by `proxy.shadow.slots` alone.

The divergence policy lives here: it is reloaded on SIGHUP (`reload_policy`) and sent to the shadow
process on every (re)connect and after every reload.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import random
import tempfile
from collections import Counter
from contextlib import suppress
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from common.periodic import Periodic
from common.tasks import cancel_and_wait
from config.divergence import DivergencePolicy, load_policy
from config.settings import Settings
from proxy.dataplane.request import ProxyRequest
from proxy.dataplane.stats import DataPlaneStats
from proxy.shadow.compare import Observation
from proxy.shadow.job import (
    DROPPED,
    POLICY,
    SKIPS,
    STORED,
    Verdict,
    encode_control,
    encode_job,
    parse_completion,
)
from proxy.shadow.process import shadow_process_main
from proxy.shadow.rules import Ruleset
from proxy.shadow.slots import ShadowSlot, ShadowSlots
from routing.decide import Plan
from routing.phases import Side

log = logging.getLogger("cutover.shadow")
_CONNECT_TIMEOUT_S = 15.0
_RESTART_DELAY_S = 1.0
_EXIT_GRACE_S = 0.2  # for the shadow process to exit by itself once its socket is closed
SHADOW_METHODS = frozenset({"GET", "HEAD"})
_MAX_SKIP_KEYS = 10_000  # distinct (tenant, resource) pairs held between two flushes


class PolicyReloadError(Exception):
    """The policy file could not be used; the policy in force stays. `problems` name the keys."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("divergence policy not reloaded: " + "; ".join(problems))


class ShadowRunner:
    def __init__(self, settings: Settings, stats: DataPlaneStats) -> None:
        self._settings = settings
        self._config = settings.shadow
        self._stats = stats
        self._slots = ShadowSlots(self._config.max_in_flight)
        self._skips: Counter[tuple[str, str]] = Counter()
        self._writer: asyncio.StreamWriter | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._flusher = Periodic(
            "shadow-skip-flusher",
            settings.divergence.flush_interval_s,
            self._hand_over_skips,
            final=self._hand_over_skips,
        )
        self._directory = tempfile.TemporaryDirectory(prefix="cutover-shadow-")
        self._socket_path = str(Path(self._directory.name) / "shadow.sock")
        self._connected = asyncio.Event()
        self._apply_policy(settings.divergence.policy)

    @property
    def in_flight(self) -> int:
        return self._slots.total

    def in_flight_to(self, side: Side) -> int:
        return self._slots.held(side)

    @property
    def available(self) -> bool:
        return self._writer is not None

    @property
    def policy(self) -> DivergencePolicy:
        return self._policy

    def route(self, raw_path: str) -> tuple[str | None, str]:
        """The route of `raw_path` under the policy in force (`Ruleset.route`): spans are named by it."""
        return self._ruleset.route(raw_path)

    def _apply_policy(self, policy: DivergencePolicy) -> None:
        self._policy = policy
        self._ruleset = Ruleset(policy)
        self._keep_headers = frozenset(name.encode() for name in self._ruleset.keep_headers)
        default = policy.sampling.default_percent
        self._rate = self._config.sample_rate if default is None else default / 100
        self._rates = {tenant: percent / 100 for tenant, percent in policy.sampling.tenants.items()}

    # -- hot path -------------------------------------------------------------------------------------
    def admit(self, plan: Plan, request: ProxyRequest) -> ShadowSlot | None:
        """The slot of `plan.shadow` this read holds if it is shadowed (see the module docstring), until
        it is handed to `launch`; None when it is not shadowed."""
        if request.method not in SHADOW_METHODS and not request.sql_read:
            return None  # never replay what may write: only GET/HEAD and SQL classified as reads
        tenant = request.tenant
        rate = self._rate if tenant is None else self._rates.get(tenant, self._rate)
        if rate < 1.0 and random.random() >= rate:
            self._stats.shadow_unsampled += 1
            return None
        side = plan.shadow
        assert side is not None
        slot = None if self._writer is None else self._slots.take(side)
        if slot is None:
            self._skip(request)
        return slot

    def launch(
        self,
        slot: ShadowSlot,
        plan: Plan,
        request: ProxyRequest,
        served: Observation | None,
        traceparent: str | None = None,
    ) -> None:
        """Hand an admitted read to the shadow process, with what the serving side answered (None: the
        request ended without an answer to compare, and the slot comes back); `traceparent` names the
        request's span, which the shadow call links to."""
        assert plan.shadow is not None
        if served is None:
            self._slots.give_back(slot)
            return
        if self._writer is None or not self._slots.is_current(slot):
            # The shadow process went away since admission (a job would reach its successor, whose
            # completion would count against a slot the restart already gave back).
            self._slots.give_back(slot)
            self._skip(request)
            return
        shadow_request = request.for_side(plan.shadow)
        # A second copy of the read to the serving side (noise learning) must carry the serving side's
        # body; the job carries the shadow side's, so the copy is only allowed when they are the same.
        copy_allowed = request.body_for(plan.serving) == shadow_request.body
        self._writer.write(
            encode_job(
                plan, shadow_request, served, self._keep_headers, traceparent, copy_allowed=copy_allowed
            )
        )

    def _skip(self, request: ProxyRequest) -> None:
        self._stats.shadow_skipped += 1
        key = (request.mirror_tenant, self._ruleset.match(request.raw_path)[0])
        if key in self._skips or len(self._skips) < _MAX_SKIP_KEYS:
            self._skips[key] += 1

    # -- policy ---------------------------------------------------------------------------------------
    def reload_policy(self) -> dict[str, Any]:
        """Read `divergence.policy_file` again and put it in force here and in the shadow process.
        Raises `PolicyReloadError` (the policy in force stays) when the file cannot be used."""
        divergence = self._settings.divergence
        if divergence.policy_file is None:
            raise PolicyReloadError(["divergence.policy_file is not set: the policy is in the main file"])
        try:
            policy = load_policy(divergence)
        except ValidationError as exc:
            problems = [
                f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}" for e in exc.errors()
            ]
            raise PolicyReloadError(problems) from None
        except ValueError as exc:
            raise PolicyReloadError([str(exc)]) from None
        self._apply_policy(policy)
        self._send_policy()
        log.info("divergence policy reloaded from %s", divergence.policy_file)
        return {"policy_file": divergence.policy_file, "resources": len(policy.resources)}

    def handle_sighup(self) -> None:
        try:
            self.reload_policy()
        except PolicyReloadError as exc:
            log.error("%s; the policy in force stays", exc)

    def _send_policy(self) -> None:
        if self._writer is not None:
            self._writer.write(encode_control(POLICY, self._policy.model_dump_json().encode()))

    # -- lifecycle ------------------------------------------------------------------------------------
    async def start(self, wait_s: float = _CONNECT_TIMEOUT_S) -> None:
        self._supervisor = asyncio.create_task(self._supervise(), name="shadow-supervisor")
        self._flusher.start()
        with suppress(TimeoutError):
            async with asyncio.timeout(wait_s):
                await self._connected.wait()
        if not self.available:
            log.warning("shadow process not up after %.0f s; reads are not shadowed until it is", wait_s)

    async def stop(self) -> None:
        # First, with a last hand-over: it gives counts to the process the supervisor runs.
        await self._flusher.stop()
        await cancel_and_wait(self._supervisor)
        await self._close_process()
        self._directory.cleanup()

    async def _hand_over_skips(self) -> None:
        """Hand skip counts to the shadow process, which writes them with the other counters. While it is
        down they accumulate here (bounded) until it is back."""
        if self._writer is not None and self._skips:
            rows = [[tenant, resource, count] for (tenant, resource), count in self._skips.items()]
            self._skips.clear()
            self._writer.write(encode_control(SKIPS, orjson.dumps(rows)))

    async def _supervise(self) -> None:
        """Run the shadow process; restart it whenever it (or its connection) dies."""
        while True:
            try:
                reader = await self._spawn()
                self._send_policy()
                self._connected.set()
                await self._count_outcomes(reader)
                log.warning("shadow process connection lost; restarting it")
            except (OSError, TimeoutError) as exc:
                log.warning("shadow process could not be started (%s); retrying", type(exc).__name__)
            self._slots.reset()
            await self._close_process()  # closes the lost connection's writer too
            await asyncio.sleep(_RESTART_DELAY_S)

    async def _spawn(self) -> asyncio.StreamReader:
        await asyncio.to_thread(Path(self._socket_path).unlink, missing_ok=True)
        context = multiprocessing.get_context("spawn")
        self._process = context.Process(
            target=shadow_process_main,
            args=(self._settings, self._socket_path),
            name="cutover-shadow",
            daemon=True,
        )
        self._process.start()
        deadline = asyncio.get_running_loop().time() + _CONNECT_TIMEOUT_S
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(self._socket_path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if asyncio.get_running_loop().time() > deadline or not self._process.is_alive():
                    raise TimeoutError("shadow process did not open its socket") from None
                await asyncio.sleep(0.05)
        self._writer = writer
        return reader

    async def _count_outcomes(self, reader: asyncio.StreamReader) -> None:
        stats = self._stats
        slots = self._slots
        while chunk := await reader.read(4096):
            for code in chunk:
                done = _COMPLETIONS.get(code)
                if done is not None:
                    verdict, side = done
                    slots.completed(side)
                    if verdict is Verdict.INTERNAL:
                        stats.shadow_errors += 1
                        continue
                    stats.shadow_compared += 1
                    if verdict is Verdict.EQUAL:
                        stats.shadow_equal += 1
                    elif verdict is Verdict.NOISE:
                        stats.shadow_noise += 1
                    elif verdict is Verdict.FAILED:  # never divergent too (proxy.shadow.rates)
                        stats.shadow_failed += 1
                    else:
                        stats.shadow_divergent += 1
                elif code == _STORED:
                    stats.divergences_stored += 1
                elif code == _DROPPED:
                    stats.divergences_dropped += 1

    async def _close_process(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        process, self._process = self._process, None
        if process is None:
            return
        process.join(timeout=0)
        if process.is_alive():
            # Closing the socket ends it: it flushes and exits on its own, within tens of milliseconds.
            await asyncio.to_thread(process.join, _EXIT_GRACE_S)
        if process.is_alive():
            process.terminate()
            await asyncio.to_thread(process.join, 5)
        if process.is_alive():
            process.kill()


_COMPLETIONS = {code: done for code in range(256) if (done := parse_completion(code)) is not None}
_STORED, _DROPPED = STORED[0], DROPPED[0]
