"""Read a whole topic as it is now: every partition, up to its high watermark.

For tools, the demo and tests. Uses `assign()` (no consumer-group join, which is slow
on the local broker) and fetch watermarks (the local broker's `list_offsets(latest)`
is wrong).
"""

from __future__ import annotations

import time

from confluent_kafka import Consumer, TopicPartition


def read_topic(bootstrap: str, topic: str, timeout_s: float = 10.0) -> list[bytes]:
    """Every value currently in `topic`, all partitions, up to the high watermarks."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "demo-reader",
                         "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(topic, timeout=timeout_s).topics[topic].partitions
        ends = {}
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        values: list[bytes] = []
        remaining = dict(ends)
        deadline = time.monotonic() + timeout_s
        while remaining and time.monotonic() < deadline:
            for message in consumer.consume(1000, 0.2):
                if message.error() is None:
                    values.append(message.value())
                    if message.offset() + 1 >= ends[message.partition()]:
                        remaining.pop(message.partition(), None)
        return values
    finally:
        consumer.close()
