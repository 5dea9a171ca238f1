"""A stop while a registry request is on its way (builder.registry.transport).

``abort()`` shuts down the sockets of every open connection, so that a worker waiting
on a stalled registry returns at once.  A connection taken from the pool but not yet
connected has no socket to shut down: the worker must see the stop once it has one.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from builder import interrupt
from builder.registry import transport as transport_mod
from builder.registry.transport import Transport


def test_a_stop_while_the_connection_has_no_socket_yet_ends_the_request(monkeypatch):
    """The stop lands after the worker took a fresh connection and before it
    connected (seen once in CI as ``test_signal_during_registry_download[SIGINT-silent]``):
    the request must end with Stopped, not wait out the socket timeout for a
    registry that never answers."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept() -> None:  # takes the connection and the request, never answers
        with server:
            for _ in range(4):
                try:
                    accepted.append(server.accept()[0])
                except OSError:
                    return

    threading.Thread(target=accept, daemon=True).start()
    host = f"127.0.0.1:{server.getsockname()[1]}"
    monkeypatch.setattr(transport_mod, "_TIMEOUT", 5)   # the old code fails in 5 s, not 60
    connection = Transport._connection

    def connection_then_stop(self: Transport, scheme: str, where: str):
        conn = connection(self, scheme, where)
        interrupt.request()
        self.abort()   # conn.sock is None: there is nothing to shut down yet
        return conn

    monkeypatch.setattr(Transport, "_connection", connection_then_stop)
    transport = Transport(host, host, insecure=[host])
    started = time.monotonic()
    try:
        with pytest.raises(interrupt.Stopped):
            transport._send("GET", "http", host, "/v2/", {}, None)
    finally:
        interrupt.clear()
        server.close()
        for sock in accepted:
            sock.close()
    assert time.monotonic() - started < 2
