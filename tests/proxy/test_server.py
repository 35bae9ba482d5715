"""The listening socket: accepted connections must not wait on Nagle's algorithm."""

from __future__ import annotations

import asyncio
import socket

from config.settings import ListenAddress
from proxy.server import bind_socket


async def test_accepted_connections_have_tcp_nodelay() -> None:
    # Without TCP_NODELAY a response written as headers then body stalls ~40 ms on the peer's delayed ACK.
    listener = bind_socket(ListenAddress(host="127.0.0.1", port=0), reuse_port=False)
    accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def on_connect(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        accepted.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    server = await asyncio.start_server(on_connect, sock=listener)
    try:
        port = listener.getsockname()[1]
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(accepted, 5) != 0
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
