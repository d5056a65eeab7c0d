"""The live source: every input partition a process owns, read by one consumer and
emitted in arrival order (input_alignment.py), with offsets in recovery snapshots.

One source partition per process (`inputs-<member>of<members>`): it owns partition `p`
of every input topic where `p % members == member`, so each process of a cluster reads
its own share. It assigns them (Bytewax's recovery holds the offsets) and its snapshot is
the next offset to emit from each, so a restart reads again what was fetched but not yet
emitted. Records leave as `RawRecord`s.

When the number of processes changes, so do every share and every part's name, and no
snapshot holds the new parts. Bytewax 0.21.1 crashed every process that resumed state of
a part no process listed, so process 0 also lists the parts of the cluster before (its
size noted by dataflows/recovery_partitions.py) and, over state from before that note,
the per-partition parts of the source before this one (`<partition>-<topic>`), and
retires them: they read nothing, their snapshot drops their state, and their offsets
start the partitions they held where those are owned in the same process. Elsewhere a partition starts at the consumer group's
committed offset (`GroupOffsets`), as Flink's Kafka source does: the offsets of a
snapshot at least `commit_delay_s` old are committed to the group. Delayed, because
Bytewax may resume from a snapshot older than the last one taken (one in flight, or
volumes restored from a backup up to the backup interval old): the group must never be
ahead of what the recovery state holds, or a rescale would skip events; behind, the
overlap is read again and dropped by event id. Commits are only bookkeeping, so a failed
one is counted and logged, not raised.

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

import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
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
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GroupOffsets:
    """Emitted offsets committed to `group_id` once a snapshot holding them is
    `commit_delay_s` old; with `start_committed`, a partition the snapshot does not hold
    starts at the group's committed offset (else, and when there is none: the earliest)."""

    group_id: str
    commit_delay_s: float
    start_committed: bool = True


class ArrivalOrderedKafkaSource(FixedPartitionedSource):
    """`member` of `members` processes; `max_lead_ms` None: merge without waiting."""

    def __init__(self, brokers: Sequence[str], topics: Sequence[str], *, metrics: EngineMetrics,
                 batch_size: int = 1000, add_config: dict | None = None, member: int = 0, members: int = 1,
                 tail: bool = True, max_lead_ms: int | None = 5_000, stall_s: float = 10.0,
                 group: GroupOffsets | None = None, previous_members: int | None = None,
                 legacy_parts: bool = False) -> None:
        if not 0 <= member < members:
            raise ValueError(f"member {member} is not one of {members}")
        self._brokers, self._topics, self._metrics = list(brokers), list(topics), metrics
        self._batch_size, self._member, self._members, self._tail = batch_size, member, members, tail
        self._add_config = {**PREFETCH, **(add_config or {})}
        self._max_lead_ms, self._stall_s, self._group = max_lead_ms, stall_s, group
        self._previous_members, self._legacy_parts = previous_members, legacy_parts
        self._handover: dict[Lane, int] = {}  # offsets in the state of retired parts

    def list_parts(self) -> list[str]:
        """This process's part. Process 0 also lists the parts whose state the recovery may
        hold from before, to retire them: Bytewax 0.21.1 crashed every process that resumed
        state of a part no process listed (2026-12-03). Those are the parts of a cluster of
        another size, and (`legacy_parts`) the per-partition parts of the source before."""
        own = [_part_name(self._member, self._members)]
        if self._member != 0:
            return own
        previous = self._previous_members
        retired = [] if previous in (None, self._members) else [_part_name(i, previous) for i in range(previous)]
        if self._legacy_parts:
            consumer = Consumer({"bootstrap.servers": ",".join(self._brokers), **self._add_config,
                                 "group.id": "jukebox-metadata"})
            try:
                retired += [f"{p}-{topic}" for topic, p in _lanes(consumer, self._topics)]
            finally:
                consumer.close()
        return own + retired

    def build_part(self, step_id: str, for_part: str, resume_state: dict[Lane, int] | int | None):
        if for_part != _part_name(self._member, self._members):
            self._handover.update(_handed_over(for_part, resume_state))
            return _RetiredPartition(self._tail)
        metrics, group = self._metrics, self._group

        def on_commit(error, partitions) -> None:
            failed = [p for p in partitions or () if p.error is not None]
            if error is not None or failed:
                metrics.input_offset_commit_failures.inc()
                log.warning("committing input offsets to group %r failed: %s", group.group_id,
                            error if error is not None else failed[0].error)

        config = {"bootstrap.servers": ",".join(self._brokers),
                  "group.id": "jukebox-assigned" if group is None else group.group_id,
                  "enable.auto.commit": "false", "enable.partition.eof": str(not self._tail).lower(),
                  "on_commit": on_commit, **self._add_config}
        consumer = Consumer(config)
        try:
            lanes = [(t, p) for t, p in _lanes(consumer, self._topics) if p % self._members == self._member]
            resume = dict(resume_state or {})
            committed = {}
            if group is not None and group.start_committed:
                committed = _committed(consumer, [lane for lane in lanes if lane not in resume])
        except Exception:
            consumer.close()
            raise

        def on_stall(lane: Lane) -> None:
            metrics.input_alignment_stalls.labels(topic=lane[0], partition=str(lane[1])).inc()

        merge = ArrivalMerge(self._max_lead_ms, self._stall_s, on_stall)
        commit_delay_s = None if group is None else group.commit_delay_s
        starts = _Starts(resume, self._handover, committed)
        return _ArrivalOrderedPartition(consumer, lanes, starts, merge, self._batch_size, metrics,
                                        self._tail, commit_delay_s)


def _lanes(consumer: Consumer, topics: Sequence[str]) -> list[Lane]:
    """Every partition of `topics`."""
    lanes: list[Lane] = []
    for topic in topics:
        found = consumer.list_topics(topic, timeout=METADATA_TIMEOUT_S).topics.get(topic)
        if found is None or found.error is not None or not found.partitions:
            reason = "no partitions" if found is None or found.error is None else found.error.str()
            raise RuntimeError(f"input topic {topic!r} is not readable: {reason}")
        lanes.extend((topic, p) for p in sorted(found.partitions))
    return lanes


def _handed_over(part: str, state: dict[Lane, int] | int | None) -> dict[Lane, int]:
    """The next offsets in a retired part's state: a cluster part's dict, or the int of a
    per-partition part named `<partition>-<topic>`.

    >>> _handed_over("3-jb.plays", 41), _handed_over("inputs-1of2", {("jb.plays", 1): 7, ("jb.pay", 1): -2})
    ({('jb.plays', 3): 41}, {('jb.plays', 1): 7})
    """
    if isinstance(state, int):
        partition, topic = part.split("-", 1)
        return {(topic, int(partition)): state}
    return {lane: offset for lane, offset in (state or {}).items() if offset >= 0}


@dataclass(frozen=True)
class _Starts:
    """Where each owned partition starts: its own snapshot, else a retired part's (the same
    resume epoch; filled while the parts are built), else the group's committed offset,
    else the beginning."""

    resumed: dict[Lane, int]
    handover: dict[Lane, int]
    committed: dict[Lane, int]

    def of(self, lane: Lane) -> int:
        for source in (self.resumed, self.handover, self.committed):
            if lane in source:
                return source[lane]
        return OFFSET_BEGINNING


def _part_name(member: int, members: int) -> str:
    return f"inputs-{member}of{members}"


class _RetiredPartition(StatefulSourcePartition):
    """A part of a cluster of another size, or of the source before: it reads nothing, and
    its snapshot (None) deletes the state it resumed, whose offsets `build_part` handed over.
    In a bounded read (`tail` false) it ends at once."""

    def __init__(self, tail: bool) -> None:
        self._tail = tail

    def next_batch(self) -> list:
        if not self._tail:
            raise StopIteration
        return []

    def next_awake(self) -> datetime | None:
        return datetime.now(UTC) + timedelta(hours=1) if self._tail else None

    def snapshot(self) -> None:
        return None


def _committed(consumer: Consumer, lanes: list[Lane]) -> dict[Lane, int]:
    """The group's committed offsets of `lanes` that it has any for."""
    if not lanes:
        return {}
    found = consumer.committed([TopicPartition(*lane) for lane in lanes], timeout=METADATA_TIMEOUT_S)
    for position in found:
        if position.error is not None:
            raise RuntimeError(f"cannot read the committed offset of {position.topic}[{position.partition}]: "
                               f"{position.error}")
    committed = {(p.topic, p.partition): p.offset for p in found if p.offset >= 0}
    for (topic, partition), offset in sorted(committed.items()):
        log.info("%s[%d] is not in the recovery snapshot; the group committed offset %d",
                 topic, partition, offset)
    return committed


def _timestamp_ms(message, now_ms: int) -> int:
    """The record's Kafka timestamp; a record in a message format too old to carry one
    (before Kafka 0.10) counts as arriving when it is read."""
    kind, ms = message.timestamp()
    return ms if kind else now_ms


class _ArrivalOrderedPartition(StatefulSourcePartition):
    def __init__(self, consumer: Consumer, lanes: list[Lane], starts: _Starts, merge: ArrivalMerge,
                 batch_size: int, metrics: EngineMetrics, tail: bool, commit_delay_s: float | None) -> None:
        self._consumer, self._merge, self._batch_size, self._tail = consumer, merge, batch_size, tail
        # Assigned at the first poll, once the parts of this worker are built. A retired part
        # on another worker of the process (-w N) may come later: its partitions then start
        # at the group's offsets, further back, which only reads more again.
        self._starts: _Starts | None = starts
        self._next = {lane: starts.of(lane) for lane in lanes}  # next offset to emit
        self._paused: set[Lane] = set()
        self._ended: set[Lane] = set()  # reached the end of the log (tail=False)
        now = time.monotonic()
        for lane in sorted(lanes):  # records of one timestamp merge as a replay orders them
            merge.track(lane, now)
        self._lag = {lane: metrics.consumer_lag.labels(topic=lane[0], partition=str(lane[1])) for lane in lanes}
        self._waits = metrics.input_alignment_waits
        self._lag_at = 0.0
        self._emitted_at = now
        self._awake: datetime | None = None
        self._commit_delay_s = commit_delay_s
        self._snapshots: deque[tuple[float, dict[Lane, int]]] = deque()  # (taken at, offsets), not yet committed
        self._committed: dict[Lane, int] = {}

    def next_batch(self) -> list:
        if self._starts is not None:
            self._next = {lane: self._starts.of(lane) for lane in self._next}
            self._consumer.assign([TopicPartition(t, p, offset) for (t, p), offset in self._next.items()])
            self._starts = None
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
        offsets = dict(self._next)
        if self._commit_delay_s is not None:
            self._commit_offsets(offsets)
        return offsets

    def close(self) -> None:
        self._consumer.close()

    def _commit_offsets(self, offsets: dict[Lane, int]) -> None:
        """Commit the newest snapshot at least the delay old (asynchronously: the result
        comes back through `on_commit` in a later poll)."""
        now, snapshots = time.monotonic(), self._snapshots
        snapshots.append((now, offsets))
        due = None
        while snapshots and now - snapshots[0][0] >= self._commit_delay_s:
            due = snapshots.popleft()[1]
        if due is None:
            return
        changed = [TopicPartition(t, p, offset) for (t, p), offset in due.items()
                   if offset >= 0 and self._committed.get((t, p)) != offset]
        if changed:
            self._consumer.commit(offsets=changed, asynchronous=True)
            self._committed.update(((tp.topic, tp.partition), tp.offset) for tp in changed)

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
