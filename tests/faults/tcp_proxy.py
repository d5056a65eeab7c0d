"""A loopback TCP proxy of our own that injects network faults on demand.

It forwards `127.0.0.1:<port>` to an upstream port byte for byte (it rewrites
nothing) and can, while traffic flows:

- `blackhole()`: stop moving bytes in both directions, on open and new connections
  alike (new ones complete the TCP handshake in the kernel backlog, as through a
  partitioned network). TCP retransmits hide a partition from applications, so a
  healed blackhole delivers what was held up; clients whose own timeouts fired
  have closed their sockets by then, and those connections end.
- `cut()`: the server is gone: every open connection is reset (RST) and new
  connections are refused (nothing listens) until `heal()`.
- `reset()`: reset every open connection once; new connections work.
- `delay(seconds)`: add latency to every chunk in each direction (a round trip
  costs twice that), without limiting throughput.
- `tls`: terminate TLS from clients and forward plaintext upstream.

Threads, not asyncio: a few connections at most (a Redis client, a Kafka client's
broker connections), and blocking sockets keep the fault logic obvious.

>>> import socket, threading
>>> upstream = socket.create_server(("127.0.0.1", 0))
>>> def echo():
...     conn, _ = upstream.accept()
...     conn.sendall(conn.recv(100).upper()); conn.close()
>>> _ = threading.Thread(target=echo, daemon=True).start()
>>> with TcpProxy(upstream.getsockname()[1]) as proxy:
...     with socket.create_connection(("127.0.0.1", proxy.port)) as client:
...         client.sendall(b"ping")
...         client.recv(100)
b'PING'
>>> upstream.close()
"""

from __future__ import annotations

import collections
import socket
import ssl
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Self

_CHUNK = 256 * 1024
_POLL_S = 0.05


@dataclass
class ProxyStats:
    connections: int = 0
    resets: int = 0
    bytes_up: int = 0  # client -> upstream
    bytes_down: int = 0  # upstream -> client


def _abort(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0), as a crashed peer or a middlebox reset would."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


def _send_all(sock: socket.socket, data: bytes, link: _Link) -> bool:
    """Send every byte, however slowly the peer reads (a timeout only means wait on)."""
    view = memoryview(data)
    while view and not link.closed:
        try:
            view = view[sock.send(view):]
        except (TimeoutError, ssl.SSLWantWriteError):
            continue
        except OSError:
            return False
    return not view


@dataclass(eq=False)
class _Pipe:
    """One direction of one connection: a reader fills a queue of (due, bytes), a
    writer sends each chunk once it is due, so latency adds without throttling."""

    source: socket.socket
    sink: socket.socket
    proxy: TcpProxy
    upward: bool
    queue: collections.deque = field(default_factory=collections.deque)
    ready: threading.Condition = field(default_factory=threading.Condition)
    eof: bool = False

    def read_loop(self, link: _Link) -> None:
        while not link.closed:
            if not self.proxy._flowing.wait(_POLL_S):
                continue
            try:
                data = self.source.recv(_CHUNK)
            except (TimeoutError, ssl.SSLWantReadError):
                continue
            except OSError:
                link.close(abort=True)
                return
            with self.ready:
                if not data:
                    self.eof = True
                else:
                    self.queue.append((time.monotonic() + self.proxy.delay_s, data))
                self.ready.notify()
            if not data:
                return

    def write_loop(self, link: _Link) -> None:
        while not link.closed:
            with self.ready:
                if not self.queue:
                    if self.eof:
                        break
                    self.ready.wait(_POLL_S)
                    continue
                due, data = self.queue[0]
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(min(wait, _POLL_S))
                continue
            if not self.proxy._flowing.wait(_POLL_S):
                continue
            with self.ready:
                self.queue.popleft()
            if not _send_all(self.sink, data, link):
                link.close(abort=True)
                return
            with self.proxy._lock:
                if self.upward:
                    self.proxy.stats.bytes_up += len(data)
                else:
                    self.proxy.stats.bytes_down += len(data)
        if not link.closed:
            try:
                self.sink.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            link.half_closed()


@dataclass(eq=False)
class _Link:
    client: socket.socket
    upstream: socket.socket
    closed: bool = False
    halves: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def half_closed(self) -> None:
        with self.lock:
            self.halves += 1
            done = self.halves == 2
        if done:
            self.close(abort=False)

    def close(self, abort: bool) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
        for sock in (self.client, self.upstream):
            if abort:
                _abort(sock)
            else:
                try:
                    sock.close()
                except OSError:
                    pass


class TcpProxy:
    """Forward 127.0.0.1:`port` to `upstream_host`:`upstream_port`; faults on demand.

    `port` 0 picks a free port. `tls` (a server-side SSLContext) terminates TLS from
    clients. `stats` counts connections and bytes, for the test's printed numbers.
    """

    def __init__(
        self, upstream_port: int, upstream_host: str = "127.0.0.1", port: int = 0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = port
        self.tls = tls
        self.delay_s = 0.0
        self.stats = ProxyStats()
        self._flowing = threading.Event()
        self._flowing.set()
        self._refusing = False
        self._lock = threading.Lock()
        self._links: set[_Link] = set()
        self._listener: socket.socket | None = None
        self._stopped = threading.Event()
        self._acceptor: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------

    def _listen(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port), backlog=128)
        self._listener.settimeout(_POLL_S)
        self.port = self._listener.getsockname()[1]

    def _unlisten(self) -> None:
        """Stop listening now: shutdown() first, as close() alone waits for the acceptor
        thread's poll to return, and the kernel would complete handshakes meanwhile."""
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
            self._listener = None

    def start(self) -> Self:
        self._listen()
        self._acceptor = threading.Thread(target=self._accept_loop, name=f"proxy-{self.port}",
                                          daemon=True)
        self._acceptor.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._flowing.set()
        if self._acceptor is not None:
            self._acceptor.join(5)
        with self._lock:
            self._unlisten()
        self._close_links(abort=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- faults ----------------------------------------------------------------------

    def blackhole(self) -> None:
        """Hold every byte in both directions (connections stay open)."""
        self._flowing.clear()

    def cut(self) -> None:
        """Reset every open connection and refuse new ones until `heal()`."""
        with self._lock:
            self._refusing = True
            self._unlisten()
        self._close_links(abort=True)

    def reset(self) -> None:
        """Reset every open connection once; new connections are served."""
        self._close_links(abort=True)

    def delay(self, seconds: float) -> None:
        """Latency added to each chunk, each direction."""
        self.delay_s = seconds

    def heal(self) -> None:
        self.delay_s = 0.0
        with self._lock:
            if self._listener is None and not self._stopped.is_set():
                self._listen()
            self._refusing = False
        self._flowing.set()

    @property
    def open_connections(self) -> int:
        with self._lock:
            return sum(1 for link in self._links if not link.closed)

    # -- internals -------------------------------------------------------------------

    def _close_links(self, abort: bool) -> None:
        with self._lock:
            links = list(self._links)
            self._links.clear()
            self.stats.resets += len(links) if abort else 0
        for link in links:
            link.close(abort)

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            listener = self._listener
            if listener is None:  # cut: nothing listens, connections are refused
                time.sleep(_POLL_S)
                continue
            if not self._flowing.is_set():
                self._flowing.wait(_POLL_S)  # blackholed: leave new ones in the backlog
                continue
            try:
                client, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            if self.tls is not None:
                client.settimeout(10)
                client = self.tls.wrap_socket(client, server_side=True)
            upstream = socket.create_connection(self.upstream, timeout=10)
        except (OSError, ssl.SSLError):
            _abort(client)
            return
        for sock in (client, upstream):
            sock.settimeout(_POLL_S)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        link = _Link(client, upstream)
        with self._lock:
            if self._refusing or self._stopped.is_set():
                link.close(abort=True)
                return
            self._links.add(link)
            self.stats.connections += 1
        for pipe in (_Pipe(client, upstream, self, True), _Pipe(upstream, client, self, False)):
            threading.Thread(target=pipe.read_loop, args=(link,), daemon=True).start()
            threading.Thread(target=pipe.write_loop, args=(link,), daemon=True).start()
