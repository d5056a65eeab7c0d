"""Input for the fault suite: deterministic records, produced with their acknowledgements.

Only what the broker acknowledged is owed by the engine, so `produce_acknowledged`
returns each acknowledged record with the partition and offset the broker gave it
(the origin every dead letter must name) and raises if anything was refused.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import timedelta

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from dataflows.records import RawRecord
from schemas.topics import Topics
from simulator import Simulation

# Large enough for the 30 MB poison record; librdkafka's default is 1 MB.
MAX_RECORD_BYTES = 40 * 1024 * 1024


class NotAcknowledged(AssertionError):
    pass


def simulated_records(topics: Topics, jukeboxes: int, minutes: int, seed: int, **rates) -> list[RawRecord]:
    """The simulator's event records (labels and songs left out) as RawRecords, in
    delivery order, stamped with their simulated arrival time."""
    sim = Simulation(jukeboxes=jukeboxes, seed=seed, duration=timedelta(minutes=minutes),
                     include_labels=False, **rates)
    return [RawRecord(getattr(topics, r.topic_attr), r.key, r.value, None, None, r.timestamp_ms)
            for r in sim.records() if r.contract is not None]


def produce_acknowledged(
    bootstrap: str, records: Iterable[RawRecord], config: dict[str, str] | None = None,
    timeout_s: float = 60.0,
) -> list[RawRecord]:
    """Produce `records` (with their timestamps); return them with partition and offset,
    in production order. Raises NotAcknowledged unless every one was acknowledged."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                         "linger.ms": 5, "compression.type": "lz4",
                         "message.max.bytes": MAX_RECORD_BYTES, **(config or {})})
    acked: dict[int, RawRecord] = {}
    errors: list[str] = []
    lock = threading.Lock()
    sent = 0

    def on_delivery(index: int, record: RawRecord):
        def delivered(err, msg) -> None:
            with lock:
                if err is not None:
                    errors.append(f"{record.topic}: {err}")
                else:
                    acked[index] = replace(record, partition=msg.partition(), offset=msg.offset())
        return delivered

    for index, record in enumerate(records):
        while True:
            try:
                producer.produce(record.topic, record.value, record.key,
                                 timestamp=record.timestamp_ms, on_delivery=on_delivery(index, record))
                break
            except BufferError:
                producer.poll(0.1)
        sent += 1
    unflushed = producer.flush(timeout_s)
    if unflushed or errors or len(acked) != sent:
        raise NotAcknowledged(f"{len(acked)} of {sent} records acknowledged, {unflushed} unflushed, "
                              f"errors {errors[:3]}")
    return [acked[i] for i in range(sent)]


def topic_messages(bootstrap: str, topic: str, timeout_s: float = 15.0,
                   config: dict[str, str] | None = None) -> list:
    """Every message now in `topic` (see `messages_by_topic`)."""
    return messages_by_topic(bootstrap, [topic], timeout_s, config)[topic]


def messages_by_topic(bootstrap: str, topics: Sequence[str], timeout_s: float = 15.0,
                      config: dict[str, str] | None = None) -> dict[str, list]:
    """Every message now in each topic, all partitions, read from offset 0 until each
    partition reports EOF. assign(), never a group join (Tansu's joins take ~20 s);
    EOF, not watermarks: Tansu answers ListOffsets(latest) with stale offsets."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "fault-verifier",
                         "enable.auto.commit": False, "enable.partition.eof": True, "log_level": 0,
                         "fetch.wait.max.ms": 10, "fetch.max.bytes": MAX_RECORD_BYTES,
                         "receive.message.max.bytes": MAX_RECORD_BYTES + 1_000_000,
                         **(config or {})})
    try:
        assignment = []
        for topic in topics:
            partitions = consumer.list_topics(topic, timeout=timeout_s).topics[topic].partitions
            assignment += [TopicPartition(topic, p, 0) for p in partitions]
        consumer.assign(assignment)
        messages: dict[str, list] = {topic: [] for topic in topics}
        at_end: set[tuple[str, int]] = set()
        deadline = time.monotonic() + timeout_s
        while len(at_end) < len(assignment):
            if time.monotonic() > deadline:
                raise AssertionError(f"could not read {', '.join(topics)} to the end in {timeout_s}s")
            for message in consumer.consume(1000, 0.1):
                error = message.error()
                if error is None:
                    messages[message.topic()].append(message)
                elif error.code() == KafkaError._PARTITION_EOF:
                    at_end.add((message.topic(), message.partition()))
                elif error.fatal():
                    raise AssertionError(f"reading {message.topic()}: {error}")
        return messages
    finally:
        consumer.close()


def by_arrival(records: Sequence[RawRecord]) -> list[RawRecord]:
    return sorted(records, key=lambda r: r.timestamp_ms)


def engine_outputs(bootstrap: str, topics: Topics,
                   config: dict[str, str] | None = None) -> dict[str, list]:
    """The engine's Kafka outputs, keyed as `verifier.verdict` takes them."""
    found = messages_by_topic(bootstrap, [topics.dead_letters, topics.late_events,
                                          topics.fraud_alerts], config=config)
    return {"dead_letters": found[topics.dead_letters], "late_events": found[topics.late_events],
            "alerts": found[topics.fraud_alerts]}
