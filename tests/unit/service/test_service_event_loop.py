"""The workers' loop listens on a SO_REUSEPORT socket of its own in place of a shared TCP socket, and
leaves any other socket as it is."""

import asyncio
import socket
from pathlib import Path

from model_service.server.event_loop import new_event_loop


def _serve(sock: socket.socket) -> list[socket.socket]:
    """The sockets a server created on `sock` listens on (the loop's own objects, by descriptor)."""
    loop = new_event_loop()
    try:
        server = loop.run_until_complete(loop.create_server(asyncio.Protocol, sock=sock))
        assert server.sockets
        listening = [listener.dup() for listener in server.sockets]
        server.close()
        loop.run_until_complete(server.wait_closed())
        return listening
    finally:
        loop.close()


def test_a_shared_tcp_socket_is_replaced_by_one_of_the_workers_own() -> None:
    with socket.socket() as shared:
        shared.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        shared.bind(("127.0.0.1", 0))  # bound by the parent, never listening
        (own,) = _serve(shared)
        with own:
            assert own.getsockname() == shared.getsockname()
            assert own.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
            assert own.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
        assert shared.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 0


def test_a_unix_socket_is_served_as_given(tmp_path: Path) -> None:
    path = str(tmp_path / "service.sock")
    with socket.socket(socket.AF_UNIX) as unix:
        unix.bind(path)
        (listening,) = _serve(unix)
        with listening:
            assert listening.getsockname() == path
            assert listening.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 0
