"""A network-isolated test: loopback works inside, nothing outside is reachable,
not even a server on the host's own loopback.

Run: pytest examples/cookbook/test_network.py -v
"""

import socket
import threading

import pytest


@pytest.fixture(scope="module")
def host_server():
    """A module-scoped fixture: it runs on the host, outside the tests' containers."""
    server = socket.create_server(("127.0.0.1", 0))
    yield server.getsockname()[1]
    server.close()


@pytest.mark.isolated(network="none")
def test_only_loopback_inside(host_server):
    assert [name for _, name in socket.if_nameindex()] == ["lo"]
    # the host's server is on another loopback: nobody listens on this one
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", host_server), timeout=2)
    # the outside world is unreachable (no route), at once rather than after a timeout
    with pytest.raises(OSError):
        socket.create_connection(("203.0.113.7", 80), timeout=2)


@pytest.mark.isolated(network="none")
def test_own_loopback_works():
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    threading.Thread(target=lambda: server.accept()[0].sendall(b"hi"), daemon=True).start()
    with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
        assert conn.recv(2) == b"hi"
    server.close()
