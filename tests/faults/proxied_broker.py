"""A dedicated Tansu broker reachable only through our TcpProxy.

Kafka clients bootstrap, then reconnect to the broker's *advertised* address, so
a proxy in front of a normal broker would be bypassed after the first metadata
request. This broker listens on a private port and advertises the proxy's port:
every connection of every client (the engine's consumer and producer, the test's
producer and readers) goes through the proxy, and a fault cuts all of them.
"""

from __future__ import annotations

import ssl
import subprocess
from dataclasses import dataclass, field

from dataflows.local_stack import LocalStack, free_port, tansu_binary, wait_for_port
from tests.faults.tcp_proxy import TcpProxy


@dataclass
class ProxiedBroker(LocalStack):
    """`LocalStack` with the broker behind a proxy on `kafka_port` (no Redis of its own).

    `tls` terminates TLS at the proxy: clients then use `security.protocol=SSL`.
    """

    tls: ssl.SSLContext | None = None
    listen_port: int = field(default_factory=free_port)
    proxy: TcpProxy | None = field(default=None, init=False)

    def _start_broker(self) -> None:
        assert self.workdir is not None
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proxy = TcpProxy(self.listen_port, port=self.kafka_port, tls=self.tls).start()
        listen = f"tcp://127.0.0.1:{self.listen_port}"
        advertised = f"tcp://127.0.0.1:{self.kafka_port}"
        log = open(self.workdir / "tansu.log", "wb")  # noqa: SIM115 - lives as long as the process it logs
        process = subprocess.Popen(
            [str(tansu_binary()), "broker", "--listener-url", listen,
             "--advertised-listener-url", advertised, "--storage-engine", "memory://tansu/"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.workdir,
        )
        self._processes.append(process)
        wait_for_port(self.listen_port, process, "proxied tansu broker")

    def _start_redis(self) -> None:
        """The session's Redis serves these tests; this stack is only a broker."""

    def stop(self) -> None:
        if self.proxy is not None:  # first: Tansu exits at once without open connections
            self.proxy.stop()
            self.proxy = None
        super().stop()
