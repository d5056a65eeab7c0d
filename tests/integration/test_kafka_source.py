"""The live source against the real broker: every owned partition read by one consumer
and emitted in arrival order; offsets resumed; an `IdleTick` once a second of nothing, so
the idle-state sweep (run where records are routed) still gets its turn."""

from __future__ import annotations

import time
from itertools import pairwise

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from prometheus_client import CollectorRegistry

from dataflows.idle_state import IDLE_TICK_S, IdleTick
from dataflows.kafka_source import ArrivalOrderedKafkaSource, GroupOffsets
from dataflows.metrics import EngineMetrics
from schemas.topics import Topics
from tests.integration.slow_fetch import slowed

T0_MS = 1_795_795_200_000


def _source(bootstrap: str, topics: list[str], **kwargs) -> ArrivalOrderedKafkaSource:
    return ArrivalOrderedKafkaSource([bootstrap], topics, metrics=kwargs.pop("metrics", None)
                                     or EngineMetrics(CollectorRegistry()), **kwargs)


def _part(source: ArrivalOrderedKafkaSource, resume=None):
    return source.build_part("records", source.list_parts()[0], resume)


def _drain(part, seconds: float) -> list[tuple[float, object]]:
    """(monotonic time, item) for every item `next_batch` returns in `seconds` of polling."""
    items: list[tuple[float, object]] = []
    ended = time.monotonic() + seconds
    while (now := time.monotonic()) < ended:
        items.extend((now, item) for item in part.next_batch())
        time.sleep(0.01)
    return items


def _records_until(part, count: int, timeout_s: float = 15.0, on_poll=None) -> list:
    """Poll until `count` records came (ticks, while the consumer connects, left out)."""
    records: list = []
    ended = time.monotonic() + timeout_s
    while len(records) < count and time.monotonic() < ended:
        records.extend(item for item in part.next_batch() if type(item) is not IdleTick)
        if on_poll is not None:
            on_poll(part)
        time.sleep(0.001)
    return records


def test_an_idle_source_sends_a_tick_a_second_and_records_otherwise(kafka_bootstrap: str, topics: Topics):
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for n in range(5):
        producer.produce(topics.plays, key=b"jb-1", value=b'{"n": %d}' % n, partition=0)
    assert producer.flush(10) == 0
    part = _part(_source(kafka_bootstrap, [topics.plays], batch_size=100))
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


def test_the_consumer_prefetches_at_most_some_megabytes_unless_configured(kafka_bootstrap: str, topics: Topics):
    # librdkafka's default queue (64 MB or 100,000 messages per partition) made the
    # engine's memory grow with the lag behind a backlog.
    capped = _source(kafka_bootstrap, [topics.plays])
    assert capped._add_config["queued.max.messages.kbytes"] == 16384
    assert capped._add_config["statistics.interval.ms"] == 0
    configured = _source(kafka_bootstrap, [topics.plays],
                         add_config={"queued.max.messages.kbytes": 1024, "client.id": "x"})
    assert configured._add_config["queued.max.messages.kbytes"] == 1024
    assert configured._add_config["client.id"] == "x"
    _part(configured).close()  # librdkafka accepts it


def test_each_process_of_a_cluster_reads_its_own_share_of_the_partitions(kafka_bootstrap: str, topics: Topics):
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for partition in range(8):
        producer.produce(topics.plays, key=b"k", value=b"%d" % partition, partition=partition)
    assert producer.flush(10) == 0
    read = []
    for member in (0, 1):
        source = _source(kafka_bootstrap, [topics.plays], member=member, members=2)
        assert source.list_parts() == [f"inputs-{member}of2"]
        part = _part(source)
        try:
            read.append(sorted(r.partition for r in _records_until(part, 4)))
        finally:
            part.close()
    assert read == [[0, 2, 4, 6], [1, 3, 5, 7]]


def _committed(bootstrap: str, group_id: str, topic: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group_id})
    try:
        found = consumer.committed([TopicPartition(topic, p) for p in range(8)], timeout=10)
    finally:
        consumer.close()
    return {p.partition: p.offset for p in found if p.offset >= 0}


def test_a_changed_process_count_starts_where_the_group_committed_not_at_the_beginning(
        kafka_bootstrap: str, topics: Topics):
    # Each process's share of the partitions, and its part's name, change with the
    # process count: no snapshot holds the new parts. Before the group's offsets, every
    # process then read its share again from the start of retention.
    producer = Producer({"bootstrap.servers": kafka_bootstrap})

    def produce_round(round_: int) -> None:
        for partition in range(8):
            producer.produce(topics.plays, key=b"k", value=b"%d/%d" % (round_, partition), partition=partition)
        assert producer.flush(10) == 0

    produce_round(0)
    waiting = GroupOffsets(f"{topics.plays}-later", commit_delay_s=3600)
    now = GroupOffsets(f"{topics.plays}-group", commit_delay_s=0)
    parts = [_part(_source(kafka_bootstrap, [topics.plays], group=group)) for group in (waiting, now)]
    try:
        for part in parts:  # one process read round 0
            assert len(_records_until(part, 8)) == 8
            part.snapshot()  # the group gets the offsets of snapshots at least the delay old
            _drain(part, 0.5)  # the commit's result comes back in a poll
    finally:
        for part in parts:
            part.close()
    produce_round(1)
    assert _committed(kafka_bootstrap, waiting.group_id, topics.plays) == {}
    assert _committed(kafka_bootstrap, now.group_id, topics.plays) == dict.fromkeys(range(8), 1)

    def read_by_two_processes(group: GroupOffsets) -> list[bytes]:
        read = []
        for member in (0, 1):
            part = _part(_source(kafka_bootstrap, [topics.plays], member=member, members=2, group=group))
            try:
                read.extend(r.value for r in _records_until(part, 8, timeout_s=3))
            finally:
                part.close()
        return sorted(read)

    assert read_by_two_processes(now) == sorted(b"1/%d" % p for p in range(8))
    assert read_by_two_processes(waiting) == sorted(b"%d/%d" % (r, p) for r in (0, 1) for p in range(8))
    from_start = GroupOffsets(now.group_id, commit_delay_s=0, start_committed=False)  # resetting state
    assert read_by_two_processes(from_start) == sorted(b"%d/%d" % (r, p) for r in (0, 1) for p in range(8))


def _produce_history(bootstrap: str, topics: Topics) -> None:
    """An hour of arrivals: a play every second on plays/0, a payment every 10 s on payments/0."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for second in range(3600):
        producer.produce(topics.plays, key=b"jb-1", value=b"p%d" % second, partition=0,
                         timestamp=T0_MS + second * 1000)
        if second % 10 == 0:
            producer.produce(topics.payments, key=b"jb-1", value=b"$%d" % second, partition=0,
                             timestamp=T0_MS + second * 1000)
    assert producer.flush(30) == 0


def _overtaken_by_ms(emitted: list) -> int:
    """The most any record's Kafka timestamp was behind one emitted before it from another topic."""
    newest: dict[str, int] = {}
    worst = 0
    for record in emitted:
        ms = record.timestamp_ms
        ahead = max((t for topic, t in newest.items() if topic != record.topic), default=ms)
        worst = max(worst, ahead - ms)
        newest[record.topic] = max(newest.get(record.topic, ms), ms)
    return worst


def test_topics_fetched_unevenly_are_emitted_in_arrival_order(kafka_bootstrap: str, topics: Topics):
    _produce_history(kafka_bootstrap, topics)
    overtaken, paused = {}, {}
    for name, lead in (("aligned", 5_000), ("unaligned", None)):
        metrics = EngineMetrics(CollectorRegistry())
        source = _source(kafka_bootstrap, [topics.plays, topics.payments], batch_size=50, max_lead_ms=lead,
                         metrics=metrics)
        part = slowed(_part(source), topics.payments, per_poll=1)
        paused_sizes: list[int] = []
        try:
            emitted = _records_until(part, 3960, timeout_s=60, on_poll=lambda p, seen=paused_sizes:
                                     seen.append(len(p._paused)))
        finally:
            part.close()
        assert len(emitted) == 3960
        for topic in (topics.plays, topics.payments):  # each partition in offset order, once
            offsets = [r.offset for r in emitted if r.topic == topic]
            assert offsets == list(range(len(offsets)))
        overtaken[name], paused[name] = _overtaken_by_ms(emitted), max(paused_sizes)
        if lead is not None:
            assert metrics.registry.get_sample_value("jukebox_input_alignment_waits_total",
                                                     {"topic": topics.payments}) > 0
    print(f"most a record was overtaken by another topic: {overtaken}; partitions paused at most: {paused}")
    assert overtaken["aligned"] <= 5_000
    assert overtaken["unaligned"] > 60_000  # without waiting, the plays run far ahead
    assert paused["unaligned"] == 0 < paused["aligned"]  # the plays partition waited, paused


def test_a_restart_resumes_after_the_last_record_emitted(kafka_bootstrap: str, topics: Topics):
    _produce_history(kafka_bootstrap, topics)
    metrics = EngineMetrics(CollectorRegistry())
    source = _source(kafka_bootstrap, [topics.plays, topics.payments], batch_size=100, metrics=metrics)
    part = slowed(_part(source), topics.payments, per_poll=1)
    try:
        first = _records_until(part, 1000, timeout_s=30)
        resume = part.snapshot()
        part._report_lag()  # every 5 s while polled
    finally:
        part.close()
    lag = metrics.registry.get_sample_value("jukebox_kafka_consumer_lag_messages",
                                            {"topic": topics.plays, "partition": "0"})
    assert lag == 3600 - resume[(topics.plays, 0)]  # fetched but not emitted counts as lag
    read_from = {lane: offset for lane, offset in resume.items() if offset != OFFSET_BEGINNING}
    assert read_from == {(topics.plays, 0): sum(r.topic == topics.plays for r in first),
                         (topics.payments, 0): sum(r.topic == topics.payments for r in first)}
    assert len(resume) == 16  # every owned partition, those never read from their beginning
    part = _part(source, resume)  # fetched but not emitted before: read again
    try:
        rest = _records_until(part, 3960 - len(first), timeout_s=30)
        assert part.next_batch() in ([], [IdleTick()])
    finally:
        part.close()
    assert sorted((r.topic, r.offset) for r in first + rest) == sorted(
        [(topics.plays, n) for n in range(3600)] + [(topics.payments, n) for n in range(360)])


def test_parts_of_an_older_source_or_cluster_size_are_retired_and_hand_their_offsets_over(
        kafka_bootstrap: str, topics: Topics):
    # Bytewax crashed every process that resumed state of a part no process listed: process
    # 0 lists the per-partition parts of the source before this one and the parts of a
    # cluster of another size, reads nothing through them, drops their state, and the parts
    # of today start where that state said.
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for partition in range(8):
        for n in range(3):
            producer.produce(topics.plays, key=b"k", value=b"%d/%d" % (partition, n), partition=partition)
    assert producer.flush(10) == 0
    assert _source(kafka_bootstrap, [topics.plays]).list_parts() == ["inputs-0of1"]  # nothing to retire
    source = _source(kafka_bootstrap, [topics.plays], previous_members=2, legacy_parts=True)
    parts = source.list_parts()
    assert parts[:3] == ["inputs-0of1", "inputs-0of2", "inputs-1of2"]
    assert sorted(parts[3:]) == sorted(f"{p}-{topics.plays}" for p in range(8))
    assert _source(kafka_bootstrap, [topics.plays], member=1, members=2).list_parts() == ["inputs-1of2"]

    own = _part(source)  # built first: its partitions are assigned at its first poll
    retired = [source.build_part("records", "inputs-0of2", {(topics.plays, 0): 1, (topics.plays, 2): 2}),
               source.build_part("records", f"5-{topics.plays}", 3),
               source.build_part("records", "inputs-1of2", None)]
    try:
        assert all(part.next_batch() == [] and part.snapshot() is None for part in retired)
        read = sorted(r.value for r in _records_until(own, 24 - 1 - 2 - 3, timeout_s=10))
        assert own.next_batch() in ([], [IdleTick()])
    finally:
        own.close()
    skipped = {b"0/0", b"2/0", b"2/1", b"5/0", b"5/1", b"5/2"}
    assert read == sorted(b"%d/%d" % (p, n) for p in range(8) for n in range(3) if b"%d/%d" % (p, n) not in skipped)
