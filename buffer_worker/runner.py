"""`cutover worker`: run one worker process until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from buffer_worker.http_applier import HttpApplier
from buffer_worker.pg_applier import PostgresApplier
from buffer_worker.sql_apply import SqlIntents
from buffer_worker.worker import Applier, Worker
from config.settings import Settings


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
    worker = Worker(settings, build_applier(settings))
    logging.getLogger("cutover.worker").info("worker %s starting", worker.worker_id)
    await worker.run(stop)


def run_worker(settings: Settings) -> int:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    try:
        import uvloop

        uvloop.run(serve_worker(settings))
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(serve_worker(settings))
    return 0
