"""Real uvicorn servers inside the test process, on loopback ports, plus the ports themselves."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Generator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn

from config.settings import ListenAddress
from proxy.server import bind_socket
from tests.support.waits import wait_for


class QuietServer(uvicorn.Server):
    """Several servers share the test process: none of them may take over the signal handlers."""

    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def serve_on(config: uvicorn.Config, sock: socket.socket) -> tuple[QuietServer, asyncio.Task[None]]:
    """Serve `config` on the bound `sock` in this event loop; return once the server has started."""
    server = QuietServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))

    def serving() -> None:
        if task.done():
            task.result()  # re-raise the start-up failure
            raise RuntimeError("server exited during start-up")

    await wait_for(
        lambda: server.started, "the server did not start", timeout_s=5, interval_s=0.01, still_valid=serving
    )
    return server, task


@dataclass
class RunningServer:
    server: QuietServer
    task: asyncio.Task[None]
    sock: socket.socket
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        self.server.should_exit = True
        try:
            await asyncio.wait_for(self.task, 15)
        finally:
            self.sock.close()


async def start_server(config: uvicorn.Config) -> RunningServer:
    sock = bind_socket(ListenAddress(host="127.0.0.1", port=0), reuse_port=False)
    server, task = await serve_on(config, sock)
    return RunningServer(server, task, sock, sock.getsockname()[1])


def backend_config(app: Any) -> uvicorn.Config:
    """How every test backend is served: no lifespan, no access log, quick to stop."""
    return uvicorn.Config(
        app,
        loop="none",
        lifespan="off",
        log_config=None,
        log_level="warning",
        access_log=False,
        ws="none",
        timeout_graceful_shutdown=2,
    )


def bind_loopback(port: int = 0) -> socket.socket:
    """A bound (not yet listening) loopback socket; binding `port` again lets a stopped server come back
    on the same port, with its connections refused meanwhile."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP_NODELAY when accepted
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


# Ports handed out below Linux's ephemeral range (32768-60999 by default). A port the kernel picks for
# a bind to 0 comes from that range, the one the suite's many outgoing connections take their local
# ports from: one of them could take it before the server meant for it binds, which then never starts.
_PORTS = range(20_000, 32_768)
_handed_out: set[int] = set()
_pick = random.Random()


def free_port() -> int:
    """A loopback port nothing listens on: connecting to it is refused, a server started later may bind it.
    Never the same one twice in a run."""
    for _ in range(1_000):
        port = _pick.choice(_PORTS)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use (another service, another run)
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free loopback port in {_PORTS.start}-{_PORTS.stop - 1}")
