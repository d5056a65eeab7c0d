"""Fixtures of the fault suite: engines that are always stopped, proxies, a proxied broker.

Profiles: `pytest tests/faults -m "not slow" -s` is the fast (CI) profile;
`pytest tests/faults -m slow -s` the long one (docs/reliability.md).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from dataflows.local_stack import create_topics
from online_store.redis_store import RedisFeatureStore
from schemas.topics import Topics
from tests.faults.engine import EngineProcess
from tests.faults.proxied_broker import ProxiedBroker
from tests.faults.tcp_proxy import TcpProxy


def report(name: str, **numbers: object) -> None:
    """One greppable line of measured numbers per scenario (run pytest with -s)."""
    print(f"\n[faults] {name}: " + " ".join(f"{k}={v}" for k, v in numbers.items()), flush=True)


def keys_under(client: redis.Redis, key_prefix: str) -> int:
    """Keys of one test's prefix (the server is shared by the whole run, so not `dbsize`)."""
    return sum(1 for _ in client.scan_iter(match=f"{key_prefix}:*", count=10_000))


def committed_epoch(recovery_dir: Path) -> int | None:
    """The epoch of the last complete snapshot (None before the first one)."""
    epochs = []
    for path in sorted(recovery_dir.glob("part-*.sqlite3")):
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
            epochs += [row[0] for row in db.execute("SELECT commit_epoch FROM commits")]
    return min(epochs) if epochs else None


@pytest.fixture
def engines(tmp_path: Path) -> Iterator[Callable[..., EngineProcess]]:
    """Start engines with `engines(bootstrap, redis_url, topics, key_prefix, **kw)`; all
    of them are killed afterwards (their recovery directories are thrown away)."""
    started: list[EngineProcess] = []

    def start(bootstrap: str, redis_url: str, topics: Topics, key_prefix: str, *,
              workdir: Path | None = None, **kwargs) -> EngineProcess:
        engine = EngineProcess(bootstrap, redis_url, topics, key_prefix,
                               workdir or tmp_path / "engine", **kwargs)
        started.append(engine.start())
        return engine

    yield start
    for engine in started:
        engine.kill()


@pytest.fixture
def store(redis_url: str, redis_key_prefix: str) -> RedisFeatureStore:
    return RedisFeatureStore(redis.Redis.from_url(redis_url), redis_key_prefix)


@pytest.fixture
def proxied_broker(tmp_path: Path) -> Iterator[ProxiedBroker]:
    """A dedicated broker that every client reaches through `proxied_broker.proxy`."""
    broker = ProxiedBroker(workdir=tmp_path / "broker")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def proxied_topics(proxied_broker: ProxiedBroker, test_namespace: str) -> Topics:
    names = Topics(prefix=f"{test_namespace}.")
    create_topics({"bootstrap.servers": proxied_broker.kafka_bootstrap}, names.specs())
    return names


@pytest.fixture
def redis_proxy(redis_url: str) -> Iterator[TcpProxy]:
    """The session's Redis behind a proxy; the engine gets `redis://127.0.0.1:<proxy.port>/0`."""
    kwargs = redis.Redis.from_url(redis_url).connection_pool.connection_kwargs
    with TcpProxy(kwargs["port"], upstream_host=kwargs["host"]) as proxy:
        yield proxy

