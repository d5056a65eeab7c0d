"""Issue 2 acceptance: simulated traffic through the real broker, read back whole.

Every record is produced with an idempotent producer and read back with `assign()`
on every partition up to its high watermark. Each message must be exactly one
that was published (key, bytes and timestamp), in per-key order, and must either
decode into its contract or be one of the deliberately broken ones, refused with
the reason it was built to trigger.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, Consumer, TopicPartition
from typer.testing import CliRunner

from dataflows.cli import app
from dataflows.simulate import publish_records, simulator_producer_config
from schemas import DecodeError, decode_event
from schemas.topics import Topics
from simulator.catalog import Song
from simulator.fraud import FraudLabel
from simulator.records import EVENT_TOPICS, SimRecord
from simulator.simulation import Simulation

pytestmark = pytest.mark.integration

ATTRS = ("plays", "payments", "locations", "venues", "labels", "song_catalog")


def read_everything(bootstrap: str, topics: Topics, timeout_s: float = 60.0) -> list[tuple]:
    """(topic attr, partition, offset, key, value, (timestamp type, ms)) of every message."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"sim-check-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    attr_of = {getattr(topics, attr): attr for attr in ATTRS}
    try:
        metadata = consumer.list_topics(timeout=10)
        assignment, remaining = [], {}
        for name in attr_of:
            for partition in metadata.topics[name].partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(name, partition), timeout=10)
                if high > low:
                    assignment.append(TopicPartition(name, partition, low))
                    remaining[(name, partition)] = high
        consumer.assign(assignment)
        messages = []
        deadline = time.monotonic() + timeout_s
        while remaining and time.monotonic() < deadline:
            for message in consumer.consume(2000, timeout=1.0):
                assert message.error() is None, message.error()
                place = (message.topic(), message.partition())
                messages.append((attr_of[place[0]], place[1], message.offset(), message.key(), message.value(),
                                 message.timestamp()))
                if message.offset() + 1 >= remaining.get(place, 0):
                    remaining.pop(place, None)
        assert not remaining, f"partitions not read to their high watermark: {remaining}"
        return messages
    finally:
        consumer.close()


def test_every_simulated_record_arrives_and_decodes_or_is_an_intended_reject(kafka_bootstrap, topics):
    sim = Simulation(
        jukeboxes=250, seed=77, duration=timedelta(minutes=75), fraud_rate=0.4, duplicate_rate=0.01,
        out_of_order_rate=0.02, late_rate=0.3, clock_skew_rate=0.002, malformed_rate=0.02,
        debezium_share=0.25, include_catalog=True,
    )
    records = list(sim.records())
    per_topic = Counter(r.topic_attr for r in records)
    assert sum(per_topic[a] for a in EVENT_TOPICS) > 3000 and per_topic["labels"] > 0
    assert sum(r.malformed_reason is not None for r in records) > 20

    report = publish_records(simulator_producer_config({"bootstrap.servers": kafka_bootstrap}), topics, records)
    assert report.ok, report.problem()
    assert {attr: report.delivered[getattr(topics, attr)] for attr in ATTRS} == {a: per_topic[a] for a in ATTRS}

    messages = read_everything(kafka_bootstrap, topics)
    published = Counter((r.topic_attr, r.key, r.value, r.timestamp_ms) for r in records)
    consumed = Counter((attr, key, value, stamp[1]) for attr, _, _, key, value, stamp in messages)
    assert consumed == published  # nothing lost, nothing extra, keys/bytes/timestamps intact
    assert all(stamp[0] == TIMESTAMP_CREATE_TIME for *_, stamp in messages)

    broken = {(r.topic_attr, r.value): r.malformed_reason for r in records if r.malformed_reason}
    outcomes = Counter()
    for attr, _, _, key, value, _ in messages:
        if attr in EVENT_TOPICS:
            result = decode_event(value, EVENT_TOPICS[attr])
            if (attr, value) in broken:
                assert isinstance(result, DecodeError) and result.reason == broken[(attr, value)]
                outcomes["rejected as intended"] += 1
            else:
                assert not isinstance(result, DecodeError), (attr, value[:200], result)
                assert type(result) is EVENT_TOPICS[attr] and result.entity_id.encode() == key
                outcomes["decoded"] += 1
        elif attr == "labels":
            assert FraudLabel.from_json(value).jukebox_id.encode() == key
        else:
            assert Song.from_json(value).song_id.encode() == key
    assert outcomes["rejected as intended"] == sum(1 for r in records if r.malformed_reason)

    # Same key, same partition, in the order produced (idempotent producer, one partition per key).
    produced_order: dict[tuple, list[bytes]] = defaultdict(list)
    for record in records:
        produced_order[(record.topic_attr, record.key)].append(record.value)
    read_order: dict[tuple, list[tuple[int, int, bytes]]] = defaultdict(list)
    for attr, partition, offset, key, value, _ in messages:
        read_order[(attr, key)].append((partition, offset, value))
    for place, values in read_order.items():
        assert len({partition for partition, _, _ in values}) == 1, place
        assert [value for _, _, value in sorted(values)] == produced_order[place]


def test_the_simulate_command_publishes_to_the_configured_topics(kafka_bootstrap, topics, tmp_path, monkeypatch):
    monkeypatch.setenv("JUKEBOX_KAFKA_BOOTSTRAP", kafka_bootstrap)
    monkeypatch.setenv("JUKEBOX_KAFKA_TOPIC_PREFIX", topics.prefix)
    labels_file = tmp_path / "labels.jsonl"
    result = CliRunner().invoke(app, [
        "simulate", "--jukeboxes", "100", "--seed", "5", "--events", "2500", "--fraud-rate", "0.5",
        "--start", "2026-11-27T18:00:00Z", "--labels-file", str(labels_file),
    ])
    assert result.exit_code == 0, result.output
    messages = read_everything(kafka_bootstrap, topics)
    counts = Counter(attr for attr, *_ in messages)
    assert sum(counts[a] for a in EVENT_TOPICS) == 2500
    assert counts["labels"] == 0 and counts["song_catalog"] == 0  # labels went to the file
    assert labels_file.read_bytes().count(b"\n") >= 1
    same_run = Simulation(100, 5, datetime(2026, 11, 27, 18, tzinfo=UTC), max_events=2500, fraud_rate=0.5)
    expected: list[SimRecord] = [r for r in same_run.records() if r.topic_attr != "labels"]
    assert Counter((a, k, v) for a, _, _, k, v, _ in messages) == Counter((r.topic_attr, r.key, r.value) for r in expected)
