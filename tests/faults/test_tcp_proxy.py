"""The fault injector itself: each fault does what the suite relies on (no broker needed)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.faults.tcp_proxy import TcpProxy


@pytest.fixture
def echo_port() -> Iterator[int]:
    """An upstream that echoes every byte back, one thread per connection."""
    server = socket.create_server(("127.0.0.1", 0))
    stopping = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            try:
                while data := conn.recv(65536):
                    conn.sendall(data)
            except OSError:  # reset by a cut: expected
                pass

    def accept() -> None:
        server.settimeout(0.1)
        while not stopping.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stopping.set()
    thread.join(2)
    server.close()


def _round_trip(port: int, payload: bytes = b"ping", timeout_s: float = 2.0) -> float:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as client:
        client.sendall(payload)
        received = b""
        while len(received) < len(payload):
            received += client.recv(65536)
    assert received == payload
    return time.monotonic() - started


def test_forwards_large_payloads_byte_for_byte(echo_port):
    with TcpProxy(echo_port) as proxy:
        _round_trip(proxy.port, bytes(range(256)) * 20_000)  # 5 MB each way
        # The proxy counts a chunk after forwarding it: the client can be a moment ahead.
        deadline = time.monotonic() + 5
        while proxy.stats.bytes_down < 5_120_000 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proxy.stats.bytes_up == proxy.stats.bytes_down == 5_120_000


def test_cut_refuses_and_resets_then_heal_restores(echo_port):
    with TcpProxy(echo_port) as proxy:
        held = socket.create_connection(("127.0.0.1", proxy.port), timeout=2)
        held.sendall(b"x")
        assert held.recv(1) == b"x"
        proxy.cut()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", proxy.port), timeout=2)
        with pytest.raises((ConnectionResetError, BrokenPipeError, OSError)):
            held.sendall(b"y")
            assert held.recv(1) == b""  # reset or closed: either way the link is gone
            raise ConnectionResetError
        held.close()
        proxy.heal()
        assert _round_trip(proxy.port) < 1


def test_blackhole_holds_bytes_until_heal(echo_port):
    with TcpProxy(echo_port) as proxy:
        client = socket.create_connection(("127.0.0.1", proxy.port), timeout=0.5)
        proxy.blackhole()
        client.sendall(b"held")
        with pytest.raises(TimeoutError):
            client.recv(4)
        proxy.heal()
        client.settimeout(2)
        assert client.recv(4) == b"held"
        client.close()


def test_delay_adds_latency_each_way_without_throttling(echo_port):
    with TcpProxy(echo_port) as proxy:
        baseline = _round_trip(proxy.port)
        proxy.delay(0.05)
        delayed = _round_trip(proxy.port)
        bulk = _round_trip(proxy.port, b"z" * 4_000_000)
    assert delayed >= 0.1 and delayed - baseline >= 0.08  # 50 ms up + 50 ms down
    assert bulk < 2.0  # chunks are delayed, not serialised behind each other
