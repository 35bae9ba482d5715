"""`cutover worker`: run one worker process until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal

from buffer_worker.http_applier import HttpApplier
from buffer_worker.pg_applier import PostgresApplier
from buffer_worker.sql_apply import SqlIntents
from buffer_worker.worker import Applier, Worker
from config.settings import Settings
from telemetry.logs import configure_logging
from telemetry.process import run_async, settle_heap
from telemetry.tracing import build_tracer_provider


def build_applier(settings: Settings) -> Applier:
    if settings.worker.applier == "postgres":
        assert settings.worker.postgres is not None  # enforced by the settings model
        sql = SqlIntents(settings) if settings.sql.endpoints else None
        return PostgresApplier(settings.worker.postgres, id_field=settings.worker.id_field, sql=sql)
    return HttpApplier(settings)


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
