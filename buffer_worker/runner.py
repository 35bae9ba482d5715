"""`cutover worker`: run one worker process until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal

from buffer_worker.applier import Applier
from buffer_worker.http_applier import HttpApplier
from buffer_worker.pg_applier import PostgresApplier
from buffer_worker.pg_state import DatabaseState, HttpState, StateSource
from buffer_worker.side_appliers import SideAppliers
from buffer_worker.sql_apply import SqlIntents
from buffer_worker.worker import Worker
from config.settings import Settings
from routing.phases import Side
from telemetry.logs import configure_logging
from telemetry.process import run_async, settle_heap
from telemetry.tracing import build_tracer_provider


def build_applier(settings: Settings) -> Applier:
    """HTTP toward both sides: the HTTP applier itself. Otherwise one applier per side, each intent
    applied by the one of the side it names (`SideAppliers`)."""
    worker = settings.worker
    kinds = {side: worker.applier_toward(side) for side in Side}
    if all(kind == "http" for kind in kinds.values()):
        return HttpApplier(settings)
    http = HttpApplier(settings) if "http" in kinds.values() else None
    sql = SqlIntents(settings) if settings.sql.endpoints else None
    appliers: dict[Side, Applier] = {}
    missing: dict[Side, str] = {}
    for side, kind in kinds.items():
        if kind == "http":
            assert http is not None
            appliers[side] = http
        elif (setting := worker.missing_for(side)) is not None:
            missing[side] = setting
        else:
            assert worker.postgres is not None  # enforced by the settings model
            appliers[side] = PostgresApplier(
                worker.postgres, side, id_field=worker.id_field, sql=sql, state=state_source(settings, side)
            )
    return SideAppliers(appliers, missing)


def state_source(settings: Settings, target: Side) -> StateSource | None:
    """Where the PostgreSQL applier toward `target` reads the authoritative state: the other side's
    database when configured, else its backend over HTTP (None: state transfer is off, it replays)."""
    postgres = settings.worker.postgres
    assert postgres is not None
    mirror = postgres.side(target)
    if not postgres.state_transfer or mirror is None:
        return None
    paths = [resource.path for resource in mirror.resources]
    source = postgres.side(target.other)
    if source is not None:
        return DatabaseState(target.other, source, paths)
    backend = settings.backends.old if target.other is Side.OLD else settings.backends.new
    return HttpState(
        target.other,
        backend,
        paths,
        tenant_header=settings.tenant.header,
        timeout_s=settings.worker.apply_timeout_s,
    )


async def serve_worker(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tracer_provider = build_tracer_provider(settings.telemetry, component="worker")
    worker = Worker(settings, build_applier(settings), tracer_provider=tracer_provider)
    logging.getLogger("cutover.worker").info("worker %s starting", worker.worker_id)
    settle_heap()
    try:
        await worker.run(stop)
    finally:
        if tracer_provider is not None:
            await asyncio.to_thread(tracer_provider.shutdown)  # export what is still queued


def run_worker(settings: Settings) -> int:
    configure_logging(settings, component="worker")
    run_async(serve_worker(settings))
    return 0
