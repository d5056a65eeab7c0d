"""Promises the embedded broker cannot prove, run against a real Apache Kafka.

Tansu (memory storage) loses everything when it restarts, does not isolate the
records of aborted transactions from read_committed consumers, and its SASL/TLS
listeners are not usable. These tests run only when JUKEBOX_KAFKA_BOOTSTRAP
points to a real Kafka (with its JUKEBOX_KAFKA_SECURITY_PROTOCOL / SASL_* /
SSL_* settings, passed through to every client exactly as the engine gets them):

    JUKEBOX_KAFKA_BOOTSTRAP=broker:9092 pytest tests/faults -m kafka_real -s

The broker-restart test also needs JUKEBOX_KAFKA_RESTART_COMMAND, a shell command
that restarts the broker (e.g. `docker restart kafka`).
"""

from __future__ import annotations

import os
import subprocess
import time
from datetime import UTC, datetime, timedelta

import pytest
import redis
from confluent_kafka import Producer

from dataflows.local_stack import create_topics
from dataflows.records import RawRecord
from dataflows.settings import JukeboxSettings
from online_store.redis_store import RedisFeatureStore
from schemas.topics import Topics
from tests.faults.conftest import report
from tests.faults.feed import produce_acknowledged
from tests.faults.outage import wait_clean
from tests.faults.verifier import expectation

REAL_BOOTSTRAP = os.environ.get("JUKEBOX_KAFKA_BOOTSTRAP")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.kafka_real,
    pytest.mark.skipif(not REAL_BOOTSTRAP, reason="JUKEBOX_KAFKA_BOOTSTRAP does not point to a real Kafka"),
]

START = datetime(2026, 11, 23, 20, 0, tzinfo=UTC)


def client_config() -> dict[str, str]:
    """What the engine's clients get: bootstrap plus security settings from JUKEBOX_KAFKA_*."""
    return JukeboxSettings().kafka.client_config(REAL_BOOTSTRAP)


def _plays(topics: Topics, prefix: str, n: int, jukeboxes: int = 50) -> list[RawRecord]:
    records = []
    for i in range(n):
        at = START + timedelta(seconds=i)
        value = (f'{{"event_id":"{prefix}-{i}","jukebox_id":"jb-{i % jukeboxes}","venue_id":"v1",'
                 f'"song_id":"s{i % 7}","played_at":"{at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}",'
                 f'"credits_used":1}}').encode()
        records.append(RawRecord(topics.plays, f"jb-{i % jukeboxes}".encode(), value, None, None,
                                 int(at.timestamp() * 1000) + 100))
    return records


@pytest.fixture
def real_topics(test_namespace: str) -> Topics:
    names = Topics(prefix=f"{test_namespace}.")
    create_topics(client_config(), names.specs())
    return names


def test_aborted_transactions_never_reach_the_features(engines, redis_url, real_topics,
                                                       redis_key_prefix):
    committed = _plays(real_topics, "committed", 400)
    aborted = _plays(real_topics, "aborted", 400)
    producer = Producer({**client_config(), "transactional.id": f"{real_topics.prefix}tx"})
    producer.init_transactions(30)
    producer.begin_transaction()
    for record in aborted:
        producer.produce(record.topic, record.value, record.key, timestamp=record.timestamp_ms)
    producer.flush(30)
    producer.abort_transaction(30)
    acked = produce_acknowledged(REAL_BOOTSTRAP, committed, config=client_config())
    expected = expectation(acked, real_topics)
    engine = engines(REAL_BOOTSTRAP, redis_url, real_topics, redis_key_prefix, snapshot_interval_s=1.0)
    store = RedisFeatureStore(redis.Redis.from_url(redis_url), redis_key_prefix)
    waited, result = wait_clean(expected, store, REAL_BOOTSTRAP, real_topics, 120,
                                engine.assert_running, kafka_config=client_config())
    report("kafka_real/aborted_transactions", committed=len(committed), aborted=len(aborted),
           clean_after_s=round(waited, 1))
    assert result.clean, result.examples


@pytest.mark.skipif(not os.environ.get("JUKEBOX_KAFKA_RESTART_COMMAND"),
                    reason="JUKEBOX_KAFKA_RESTART_COMMAND (how to restart the broker) is not set")
def test_broker_restart_mid_stream_loses_nothing(engines, redis_url, real_topics, redis_key_prefix):
    first, second = _plays(real_topics, "before", 2000), _plays(real_topics, "after", 2000)
    acked = produce_acknowledged(REAL_BOOTSTRAP, first, config=client_config())
    engine = engines(REAL_BOOTSTRAP, redis_url, real_topics, redis_key_prefix, snapshot_interval_s=1.0)
    time.sleep(5)
    subprocess.run(os.environ["JUKEBOX_KAFKA_RESTART_COMMAND"], shell=True, check=True, timeout=300)
    acked += produce_acknowledged(REAL_BOOTSTRAP, second, config=client_config(), timeout_s=300)
    expected = expectation(acked, real_topics)
    store = RedisFeatureStore(redis.Redis.from_url(redis_url), redis_key_prefix)
    restarted = engine
    if engine.exit_code is not None:  # failed loudly: a supervisor restarts it
        restarted = engines(REAL_BOOTSTRAP, redis_url, real_topics, redis_key_prefix,
                            workdir=engine.workdir, snapshot_interval_s=1.0)
    waited, result = wait_clean(expected, store, REAL_BOOTSTRAP, real_topics, 300,
                                restarted.assert_running, kafka_config=client_config())
    report("kafka_real/broker_restart", records=len(acked), clean_after_s=round(waited, 1),
           engine_restarted=restarted is not engine)
    assert result.clean, result.examples


@pytest.mark.skipif(not os.environ.get("JUKEBOX_KAFKA_SASL_PASSWORD"),
                    reason="the real Kafka is not configured with SASL (JUKEBOX_KAFKA_SASL_*)")
def test_wrong_sasl_password_fails_fast_without_the_secret(engines, redis_url, real_topics,
                                                          redis_key_prefix):
    wrong = "wr0ng-sasl-secret-for-the-test"
    produce_acknowledged(REAL_BOOTSTRAP, _plays(real_topics, "sasl", 10), config=client_config())
    engine = engines(REAL_BOOTSTRAP, redis_url, real_topics, redis_key_prefix,
                     extra_env={"JUKEBOX_KAFKA_SASL_PASSWORD": wrong})
    try:
        code = engine.wait_exit(30)
    except subprocess.TimeoutExpired:
        pytest.fail("an engine with a wrong SASL password was still running after 30 s")
    log = engine.log()
    report("kafka_real/wrong_sasl_password", exit_code=code)
    assert code != 0
    assert wrong not in log and os.environ["JUKEBOX_KAFKA_SASL_PASSWORD"] not in log
