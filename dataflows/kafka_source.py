"""Bytewax's KafkaSource (partition assignment, offsets in recovery snapshots), with
consumer lag from fetch watermarks and polls that never block the worker.

Lag: Tansu's `list_offsets(latest)` is wrong, so lag is the partition's high watermark
(as last fetched) minus the next offset to read.

Polling: Bytewax's partition asks librdkafka for up to `batch_size` messages and waits
up to 1 ms for them. librdkafka waits out the whole timeout unless the batch fills, so
under live load (a few messages per partition per poll) the single worker thread sat idle
1 ms per partition per round: ~10 % of its time, measured with py-spy. Here a poll takes
what has already been fetched and returns at once. A partition whose batch did not fill
asks to be polled again after `POLL_PAUSE` (Bytewax's `next_awake`): an idle engine does
not spin, and under live load the flow runs fewer, larger micro-batches (every keyed step
pays a fixed cost per activation that grows with the keys it holds), for at most that
much added latency. A full batch (a backlog) is followed by the next poll at once. An
idle partition emits an `IdleTick` once a second (idle_state.py: the release sweep runs
where records are routed).

Prefetch: Bytewax opens one consumer per partition, and librdkafka's default lets each
queue up to 64 MB or 100,000 messages ahead of the flow. Behind a backlog that is the
engine's memory growing with the lag, up to gigabytes over the input partitions, so the
queue is capped (`PREFETCH`; the configured `add_config` wins). librdkafka's statistics
are off: Bytewax parses them every second per partition for a lag gauge we compute
ourselves from the fetch watermarks.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from bytewax.connectors.kafka import KafkaSource
from confluent_kafka import TopicPartition

from dataflows.idle_state import IDLE_TICK_S, IdleTick
from dataflows.metrics import EngineMetrics

LAG_REFRESH_S = 5.0
POLL_PAUSE = timedelta(milliseconds=10)
PREFETCH = {"queued.max.messages.kbytes": 4096, "queued.min.messages": 20_000,
            "statistics.interval.ms": 0}


class _NonBlockingConsumer:
    """The partition's consumer, with `consume` never waiting for a batch to fill."""

    def __init__(self, consumer) -> None:
        self._consumer = consumer

    def consume(self, num_messages: int, _timeout: float):
        return self._consumer.consume(num_messages, 0)

    def __getattr__(self, name: str):
        return getattr(self._consumer, name)


class LaggingKafkaSource(KafkaSource):
    def __init__(self, *args, metrics: EngineMetrics, add_config: dict | None = None,
                 **kwargs) -> None:
        super().__init__(*args, add_config={**PREFETCH, **(add_config or {})}, **kwargs)
        self._metrics = metrics

    def build_part(self, step_id: str, for_part: str, resume_state: int | None):
        part = super().build_part(step_id, for_part, resume_state)
        consumer = part._consumer
        part._consumer = _NonBlockingConsumer(consumer)
        metrics, next_batch, last = self._metrics, part.next_batch, [0.0]
        batch_size = part._batch_size
        gauge = metrics.consumer_lag.labels(topic=part._topic, partition=str(part._part_idx))
        awake: list[datetime | None] = [None]
        last_item = [time.monotonic()]  # when this partition last emitted anything

        def next_batch_with_lag():
            batch = next_batch()
            awake[0] = None if len(batch) >= batch_size else datetime.now(UTC) + POLL_PAUSE
            now = time.monotonic()
            if batch:
                last_item[0] = now
            elif now - last_item[0] >= IDLE_TICK_S:
                last_item[0] = now
                batch = [IdleTick()]
            if now - last[0] >= LAG_REFRESH_S:
                last[0] = now
                _, high = consumer.get_watermark_offsets(
                    TopicPartition(part._topic, part._part_idx), cached=True)
                if high >= 0 and part._offset >= 0:
                    gauge.set(max(0, high - part._offset))
            return batch

        part.next_batch = next_batch_with_lag
        part.next_awake = lambda: awake[0]
        return part
