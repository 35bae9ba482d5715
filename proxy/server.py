"""Run the proxy: the data plane and the admin API in one process, or N data-plane processes.

With `workers > 1` every process binds the data port with SO_REUSEPORT (the kernel spreads connections)
and keeps its own phase cache, exactly as separate proxy replicas would; process 0 also serves the admin
API. The parent only supervises: if a worker process dies, the others are stopped and `serve` exits
non-zero so the orchestrator restarts the whole unit rather than run with silent, partial capacity.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import socket
from collections.abc import Generator
from contextlib import contextmanager, suppress
from typing import Any

import uvicorn

from buffer_worker.spool_check import check_spool, spool_file
from config.settings import ListenAddress, Settings
from proxy.admin.app import create_admin_app
from proxy.dataplane.edge import edge_protocol
from proxy.runtime import Runtime
from telemetry.logs import configure_logging
from telemetry.process import run_async, settle_heap

log = logging.getLogger("cutover.server")
_SHUTDOWN_GRACE_S = 10


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to `run_process` (it runs beside a second server)."""

    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def bind_socket(address: ListenAddress, *, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    # IPPROTO_TCP, not the default 0: asyncio sets TCP_NODELAY only on accepted sockets whose protocol
    # says TCP. Without it a response written as headers then body waits for the peer's delayed ACK
    # (~40 ms on Linux) before its body leaves.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((address.host, address.port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def _uvicorn_config(app: Any, settings: Settings, *, data_plane: bool) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        # Both servers: the admin API shares the process (and its descriptors) with the data plane.
        http=edge_protocol(settings.limits),
        loop="none",
        lifespan="off",
        # cutover writes its own access lines (proxy.dataplane.request_telemetry, proxy.admin.access_log);
        # uvicorn's would be a second line per request, and its switch is one logger for every server in the
        # process.
        access_log=False,
        log_config=None,
        log_level=settings.log_level,
        proxy_headers=False,  # the client address must be the peer's, not a header's claim
        server_header=False,
        date_header=not data_plane,  # the backend's own Date passes through
        timeout_keep_alive=75,
        timeout_graceful_shutdown=_SHUTDOWN_GRACE_S,
    )


async def run_process(settings: Settings, *, index: int, reuse_port: bool) -> None:
    """One proxy process: start the runtime, serve until SIGINT/SIGTERM, then shut down in order."""
    runtime = await Runtime.create(settings, process_index=index)
    servers: list[tuple[_Server, socket.socket]] = [
        (
            _Server(_uvicorn_config(runtime.data_plane, settings, data_plane=True)),
            bind_socket(settings.listen, reuse_port=reuse_port),
        ),
    ]
    if index == 0:
        admin = create_admin_app(runtime)
        servers.append(
            (
                _Server(_uvicorn_config(admin, settings, data_plane=False)),
                bind_socket(settings.admin.listen, reuse_port=False),
            )
        )
    loop = asyncio.get_running_loop()

    def _stop() -> None:
        for server, _sock in servers:
            if server.should_exit:
                server.force_exit = True
            server.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, _stop)
    loop.add_signal_handler(signal.SIGHUP, runtime.shadow.handle_sighup)  # re-read divergence.policy_file
    settle_heap()
    # The one start line (uvicorn's own are filtered out: with two servers each came twice).
    addresses = {"data_plane": str(settings.listen), "pid": os.getpid()}
    if index == 0:
        addresses["admin"] = str(settings.admin.listen)
        log.info(
            "proxy process 0 serving: data plane on %s, admin API on %s",
            settings.listen,
            settings.admin.listen,
            extra=addresses,
        )
    else:
        log.info("proxy process %d serving: data plane on %s", index, settings.listen, extra=addresses)
    try:
        await asyncio.gather(*(server.serve(sockets=[sock]) for server, sock in servers))
    finally:
        await runtime.close()
        log.info("proxy process %d stopped", index)


def _process_main(settings: Settings, index: int, reuse_port: bool) -> None:
    configure_logging(settings, component=f"proxy/{index}")
    run_async(run_process(settings, index=index, reuse_port=reuse_port))


def serve(settings: Settings) -> int:
    """Run the proxy; raise `SpoolUnusableError` before starting anything when a process's spool could
    not take an intent (a proxy that cannot keep its promise on a Redis outage must not start)."""
    for index in range(settings.workers):
        check_spool(spool_file(settings.buffer.spool_path, index))
    configure_logging(settings, component="proxy")
    if settings.workers == 1:
        run_async(run_process(settings, index=0, reuse_port=False))
        return 0
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_process_main, args=(settings, index, True), name=f"cutover-proxy-{index}")
        for index in range(settings.workers)
    ]
    for process in processes:
        process.start()

    def _relay(sig: int, _frame: object) -> None:
        _signal_all(processes, sig)

    signal.signal(signal.SIGTERM, _relay)
    signal.signal(signal.SIGINT, _relay)
    signal.signal(signal.SIGHUP, _relay)
    exit_code = 0
    while any(process.is_alive() for process in processes):
        for process in processes:
            process.join(timeout=0.5)
            if process.exitcode not in (None, 0) and exit_code == 0:
                log.error(
                    "proxy process %s exited with %s; stopping the others", process.name, process.exitcode
                )
                exit_code = 1
                _signal_all(processes, signal.SIGTERM)
    return exit_code


def _signal_all(processes: list[Any], sig: int) -> None:
    for process in processes:
        if process.is_alive() and process.pid is not None:
            with suppress(ProcessLookupError):
                os.kill(process.pid, sig)
