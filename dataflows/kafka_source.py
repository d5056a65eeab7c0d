"""The live source: every input partition a process owns, read by one consumer and
emitted in arrival order (input_alignment.py), with offsets in recovery snapshots.

One source partition per process (`inputs-<member>of<members>`): it owns partition `p`
of every input topic where `p % members == member`, so each process of a cluster reads
its own share. It assigns them (no consumer group: Bytewax's recovery holds the
offsets) and its snapshot is the next offset to emit from each, so a restart reads again
what was fetched but not yet emitted. Records leave as `RawRecord`s.

Lag: Tansu's `list_offsets(latest)` is wrong, so lag is the partition's high watermark
(as last fetched) minus the next offset to emit.

Polling: a poll takes what has already been fetched and never waits (librdkafka waits
out the whole timeout unless the batch fills: ~10 % of the worker's time at live load,
measured with py-spy). A poll that did not fill its batch asks to be polled again after
`POLL_PAUSE` (Bytewax's `next_awake`): an idle engine does not spin, and under live load
the flow runs fewer, larger micro-batches, for at most that much added latency. One that
stopped to wait for a partition behind the others looks again after `WAIT_PAUSE`; a full
batch (a backlog) is followed by the next poll at once. With nothing to emit for a
second the source emits an `IdleTick` (idle_state.py: the release sweep runs where
records are routed).

Memory: librdkafka's default prefetch queue (64 MB or 100,000 messages per partition)
made the engine's memory grow with the lag behind a backlog, so it is capped
(`PREFETCH`; the configured `add_config` wins), and a partition whose fetched records
wait in the merge beyond `PAUSE_AT` batches is paused until they drain. librdkafka's
statistics are off: lag comes from the fetch watermarks.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, TopicPartition

from dataflows.idle_state import IDLE_TICK_S, IdleTick
from dataflows.input_alignment import ArrivalMerge
from dataflows.metrics import EngineMetrics
from dataflows.records import RawRecord

LAG_REFRESH_S = 5.0
POLL_PAUSE = timedelta(milliseconds=10)
WAIT_PAUSE = timedelta(milliseconds=1)
PAUSE_AT = 4  # batches buffered in the merge for one partition
PREFETCH = {"queued.max.messages.kbytes": 16384, "queued.min.messages": 20_000,
            "statistics.interval.ms": 0}
METADATA_TIMEOUT_S = 10.0

Lane = tuple[str, int]  # (topic, partition)


class ArrivalOrderedKafkaSource(FixedPartitionedSource):
    """`member` of `members` processes; `max_lead_ms` None: merge without waiting."""

    def __init__(self, brokers: Sequence[str], topics: Sequence[str], *, metrics: EngineMetrics,
                 batch_size: int = 1000, add_config: dict | None = None, member: int = 0, members: int = 1,
                 tail: bool = True, max_lead_ms: int | None = 5_000, stall_s: float = 10.0) -> None:
        if not 0 <= member < members:
            raise ValueError(f"member {member} is not one of {members}")
        self._brokers, self._topics, self._metrics = list(brokers), list(topics), metrics
        self._batch_size, self._member, self._members, self._tail = batch_size, member, members, tail
        self._add_config = {**PREFETCH, **(add_config or {})}
        self._max_lead_ms, self._stall_s = max_lead_ms, stall_s

    def list_parts(self) -> list[str]:
        return [f"inputs-{self._member}of{self._members}"]

    def build_part(self, step_id: str, for_part: str, resume_state: dict[Lane, int] | None):
        config = {"bootstrap.servers": ",".join(self._brokers), "group.id": "jukebox-assigned",
                  "enable.auto.commit": "false", "enable.partition.eof": str(not self._tail).lower(),
                  **self._add_config}
        consumer = Consumer(config)
        try:
            lanes = self._owned_lanes(consumer)
        except Exception:
            consumer.close()
            raise
        metrics = self._metrics

        def on_stall(lane: Lane) -> None:
            metrics.input_alignment_stalls.labels(topic=lane[0], partition=str(lane[1])).inc()

        merge = ArrivalMerge(self._max_lead_ms, self._stall_s, on_stall)
        return _ArrivalOrderedPartition(consumer, lanes, resume_state or {}, merge, self._batch_size,
                                        metrics, self._tail)

    def _owned_lanes(self, consumer: Consumer) -> list[Lane]:
        lanes: list[Lane] = []
        for topic in self._topics:
            found = consumer.list_topics(topic, timeout=METADATA_TIMEOUT_S).topics.get(topic)
            if found is None or found.error is not None or not found.partitions:
                reason = "no partitions" if found is None or found.error is None else found.error.str()
                raise RuntimeError(f"input topic {topic!r} is not readable: {reason}")
            lanes.extend((topic, p) for p in sorted(found.partitions) if p % self._members == self._member)
        return lanes


def _timestamp_ms(message, now_ms: int) -> int:
    """The record's Kafka timestamp; a record in a message format too old to carry one
    (before Kafka 0.10) counts as arriving when it is read."""
    kind, ms = message.timestamp()
    return ms if kind else now_ms


class _ArrivalOrderedPartition(StatefulSourcePartition):
    def __init__(self, consumer: Consumer, lanes: list[Lane], resume: dict[Lane, int], merge: ArrivalMerge,
                 batch_size: int, metrics: EngineMetrics, tail: bool) -> None:
        self._consumer, self._merge, self._batch_size, self._tail = consumer, merge, batch_size, tail
        self._next = {lane: resume.get(lane, OFFSET_BEGINNING) for lane in lanes}  # next offset to emit
        self._paused: set[Lane] = set()
        self._ended: set[Lane] = set()  # reached the end of the log (tail=False)
        now = time.monotonic()
        for lane in sorted(lanes):  # records of one timestamp merge as a replay orders them
            merge.track(lane, now)
        consumer.assign([TopicPartition(t, p, self._next[(t, p)]) for t, p in lanes])
        self._lag = {lane: metrics.consumer_lag.labels(topic=lane[0], partition=str(lane[1])) for lane in lanes}
        self._waits = metrics.input_alignment_waits
        self._lag_at = 0.0
        self._emitted_at = now
        self._awake: datetime | None = None

    def next_batch(self) -> list:
        merge, now = self._merge, time.monotonic()
        now_ms = time.time_ns() // 1_000_000
        fetched: dict[Lane, tuple[list, list]] = {}
        for message in self._consumer.consume(self._batch_size, 0):
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    self._ended.add((message.topic(), message.partition()))
                    continue
                raise RuntimeError(f"error consuming from Kafka topic {message.topic()!r}: {error}")
            lane = (message.topic(), message.partition())
            records, stamps = fetched.setdefault(lane, ([], []))
            records.append(RawRecord(lane[0], message.key(), message.value(), lane[1], message.offset(),
                                     _timestamp_ms(message, now_ms)))
            stamps.append(records[-1].timestamp_ms)
        for lane, (records, stamps) in fetched.items():
            merge.add(lane, records, stamps, now)
        batch = merge.take(self._batch_size, now, self._at_head)
        for record in batch:
            self._next[(record.topic, record.partition)] = record.offset + 1
        self._pace(fetched)
        if merge.waited_for is not None:
            self._waits.labels(topic=merge.waited_for[0]).inc()
        if now - self._lag_at >= LAG_REFRESH_S:
            self._lag_at = now
            self._report_lag()
        if batch:
            self._emitted_at = now
        elif self._tail or len(self._ended) < len(self._next):
            if now - self._emitted_at >= IDLE_TICK_S:
                self._emitted_at = now
                batch = [IdleTick()]
        elif not any(merge.buffered(lane) for lane in self._next):
            raise StopIteration  # a bounded read, all of it emitted
        if len(batch) >= self._batch_size:
            self._awake = None
        else:
            pause = WAIT_PAUSE if merge.waited_for is not None else POLL_PAUSE
            self._awake = datetime.now(UTC) + pause
        return batch

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> dict[Lane, int]:
        return dict(self._next)

    def close(self) -> None:
        self._consumer.close()

    def _at_head(self, lane: Lane) -> bool:
        """Nothing more to read in the partition, as far as the last fetch told."""
        if lane in self._ended:
            return True
        offset, high = self._position(lane)
        return 0 <= offset and high <= offset

    def _position(self, lane: Lane) -> tuple[int, int]:
        """(next offset to emit, high watermark) as the last fetch told; negative: not known."""
        low, high = self._consumer.get_watermark_offsets(TopicPartition(*lane), cached=True)
        if high < 0:
            return -1, -1  # nothing fetched yet
        offset = self._next[lane]
        if offset == OFFSET_BEGINNING:
            return low, high
        return (high if offset == OFFSET_END else offset), high

    def _pace(self, fetched: dict) -> None:
        """Pause a partition far ahead of the merge; resume it once it has drained."""
        limit = PAUSE_AT * self._batch_size
        for lane in fetched:
            if lane not in self._paused and self._merge.buffered(lane) > limit:
                self._consumer.pause([TopicPartition(*lane)])
                self._paused.add(lane)
        for lane in [lane for lane in self._paused if self._merge.buffered(lane) < self._batch_size]:
            self._consumer.resume([TopicPartition(*lane)])
            self._paused.discard(lane)

    def _report_lag(self) -> None:
        for lane, gauge in self._lag.items():
            offset, high = self._position(lane)
            if offset >= 0:
                gauge.set(max(0, high - offset))
