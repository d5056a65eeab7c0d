"""Run `jukebox run` as a real process against the session's broker and Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import redis
from confluent_kafka import Producer

from dataflows.local_stack import free_port
from dataflows.records import RawRecord
from dataflows.topic_reader import read_topic  # noqa: F401  (re-exported for tests)
from schemas.topics import Topics


def produce_records(bootstrap: str, records: Iterable[RawRecord]) -> int:
    """Produce records with their arrival timestamps; raise unless all were acknowledged."""
    errors: list = []
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                         "linger.ms": 5, "compression.type": "lz4"})
    count = 0
    for record in records:
        while True:
            try:
                producer.produce(record.topic, record.value, record.key, timestamp=record.timestamp_ms,
                                 on_delivery=lambda err, _msg: err and errors.append(err))
                break
            except BufferError:
                producer.poll(0.1)
        count += 1
    assert producer.flush(30) == 0 and not errors, errors[:3]
    return count


@dataclass
class FlowProcess:
    """One `jukebox run` process; `kill()` is SIGKILL, as a crash would be."""

    bootstrap: str
    redis_url: str
    topics: Topics
    key_prefix: str
    workdir: Path
    workers: int = 1
    snapshot_interval_s: float = 1.0
    extra_env: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)  # e.g. ["-i", "0", "-a", "host:port;host:port"]
    process: subprocess.Popen | None = field(default=None, init=False)
    metrics_port: int = field(default_factory=free_port)

    @property
    def recovery_dir(self) -> Path:
        return self.workdir / "recovery"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "JUKEBOX_KAFKA_BOOTSTRAP": self.bootstrap,
            "JUKEBOX_KAFKA_TOPIC_PREFIX": self.topics.prefix,
            "JUKEBOX_REDIS_URL": self.redis_url,
            "JUKEBOX_REDIS_KEY_PREFIX": self.key_prefix,
            "JUKEBOX_FLOW_RECOVERY_DIR": str(self.recovery_dir),
            "JUKEBOX_FLOW_SNAPSHOT_INTERVAL_S": str(self.snapshot_interval_s),
            "JUKEBOX_FLOW_METRICS_PORT": str(self.metrics_port),
            "JUKEBOX_FLOW_WORKERS": str(self.workers),
            "JUKEBOX_DATA_DIR": str(self.workdir / "data"),
            "JUKEBOX_FLOW_RECOMMENDATIONS": "false",  # tests that want them publish a catalog
            **self.extra_env,
        }

    def start(self) -> FlowProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.workdir / "flow.log", "ab")  # noqa: SIM115 - lives as long as the process it logs
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dataflows.cli", "run", *self.args], env=self.env(), stdout=log,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        return self

    def log(self) -> str:
        path = self.workdir / "flow.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def assert_running(self) -> None:
        assert self.process is not None and self.process.poll() is None, self.log()[-4000:]

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str, check: Callable[[], None] = lambda: None) -> float:
    """Poll `condition` (it reads real state); return seconds waited, or fail with `what`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        check()
        if condition():
            return time.monotonic() - started
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def stored_versions(client: redis.Redis, key_prefix: str, entity: str) -> dict[str, int]:
    """entity id -> stored _version, via SCAN."""
    head = f"{key_prefix}:{entity}:v1:"
    keys = list(client.scan_iter(match=f"{head}*", count=1000))
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.hget(key, "_version")
    return {key.decode()[len(head):]: int(v) for key, v in zip(keys, pipe.execute(), strict=True) if v}
