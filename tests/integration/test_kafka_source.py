"""The live source against the real broker: records, then an `IdleTick` once a second of
nothing, so the idle-state sweep (run where records are routed) still gets its turn."""

from __future__ import annotations

import time
from itertools import pairwise

from confluent_kafka import Producer
from prometheus_client import CollectorRegistry

from dataflows.idle_state import IDLE_TICK_S, IdleTick
from dataflows.kafka_source import LaggingKafkaSource
from dataflows.metrics import EngineMetrics
from schemas.topics import Topics


def _drain(part, seconds: float) -> list[tuple[float, object]]:
    """(monotonic time, item) for every item `next_batch` returns in `seconds` of polling."""
    items: list[tuple[float, object]] = []
    ended = time.monotonic() + seconds
    while (now := time.monotonic()) < ended:
        items.extend((now, item) for item in part.next_batch())
        time.sleep(0.01)
    return items


def _records_until(part, count: int, timeout_s: float = 15.0) -> list:
    """Poll until `count` records came (ticks, while the consumer connects, left out)."""
    records: list = []
    ended = time.monotonic() + timeout_s
    while len(records) < count and time.monotonic() < ended:
        records.extend(item for item in part.next_batch() if type(item) is not IdleTick)
        time.sleep(0.01)
    return records


def test_an_idle_partition_sends_a_tick_a_second_and_records_otherwise(kafka_bootstrap: str, topics: Topics):
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for n in range(5):
        producer.produce(topics.plays, key=b"jb-1", value=b'{"n": %d}' % n, partition=0)
    assert producer.flush(10) == 0
    source = LaggingKafkaSource([kafka_bootstrap], [topics.plays], tail=True, batch_size=100,
                               metrics=EngineMetrics(CollectorRegistry()))
    part = source.build_part("records", f"0-{topics.plays}", None)
    try:
        assert [r.value for r in _records_until(part, 5)] == [b'{"n": %d}' % n for n in range(5)]

        quiet = _drain(part, 3 * IDLE_TICK_S + 0.5)
        assert all(type(item) is IdleTick for _, item in quiet), quiet  # ticks only
        assert 2 <= len(quiet) <= 4, quiet  # about one a second...
        gaps = [later - earlier for (earlier, _), (later, _) in pairwise(quiet)]
        assert min(gaps) >= 0.9 * IDLE_TICK_S, gaps  # ...and never more often (the sleep's jitter aside)

        producer.produce(topics.plays, key=b"jb-1", value=b'{"n": 5}', partition=0)
        assert producer.flush(10) == 0
        assert [r.value for r in _records_until(part, 1)] == [b'{"n": 5}']
    finally:
        part.close()


def test_each_partition_prefetches_at_most_a_few_megabytes_unless_configured(kafka_bootstrap: str,
                                                                           topics: Topics):
    # librdkafka's default queue (64 MB or 100,000 messages per partition consumer) made the
    # engine's memory grow with the lag behind a backlog.
    metrics = EngineMetrics(CollectorRegistry())
    capped = LaggingKafkaSource([kafka_bootstrap], [topics.plays], metrics=metrics)
    assert capped._add_config["queued.max.messages.kbytes"] == 4096
    assert capped._add_config["statistics.interval.ms"] == 0
    configured = LaggingKafkaSource([kafka_bootstrap], [topics.plays], metrics=metrics,
                                    add_config={"queued.max.messages.kbytes": 1024, "client.id": "x"})
    assert configured._add_config["queued.max.messages.kbytes"] == 1024
    assert configured._add_config["client.id"] == "x"
    part = configured.build_part("records", f"0-{topics.plays}", None)  # librdkafka accepts it
    part.close()
