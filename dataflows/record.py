"""Recorded history: topics -> JSON Lines (`jukebox record`), read back in one deterministic order.

A history is a bounded set of raw records. Whatever it comes from (Kafka partitions,
recorded files, a simulator `--jsonl` file), `merged_history` yields it in ONE order:
by `(timestamp_ms, topic, partition, offset)`, a k-way merge of the streams, so a
replay sees every key's records in the same order however many workers run it.

A recorded line keeps everything a replay needs, bytes as base64:

    {"topic": "jukebox.plays.v1", "partition": 3, "offset": 1207, "timestamp_ms": 1795795200000,
     "key": "amItMDAwMDAwMQ==", "value": "eyJzY2hlbWFfdmVyc2lvbiI6..."}

Simulator lines (`jukebox simulate --jsonl`) are read too: their `topic` is a `Topics`
attribute (`plays`) and their key and value are text (or `value_b64`).

Kafka ranges: Tansu's ListOffsets answers are batch-granular and its time index
always says offset 0, so a range starts at a conservative offset (the low watermark,
or the time index's answer, which is never later than the truth) and records are
filtered by timestamp; it ends at an explicit end offset or at the high watermark
that the partition's first fetch reports (exact on every broker).

>>> raw = RawRecord("jukebox.plays.v1", b"jb-1", b'{"a":1}', 3, 17, 1_795_795_200_000)
>>> history_record(recorded_line(raw), Topics()) == raw
True
>>> history_record(b'{"topic":"plays","key":"jb-1","timestamp_ms":5,"value":"{}"}', Topics("x.")).topic
'x.jukebox.plays.v1'
>>> [r.offset for r in merged_history([[raw], [RawRecord("a", None, None, 0, 1, 5)]])]
[1, 17]
"""

from __future__ import annotations

import base64
import heapq
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson
import typer
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from dataflows.records import RawRecord
from schemas.topics import Topics

console = Console(stderr=True)

IDLE_TIMEOUT_S = 30.0  # a partition that returns nothing (not even EOF) this long is an error


class HistoryError(RuntimeError):
    """A history that cannot be read as asked: bad line, missing topic, stalled partition."""


# --- lines -------------------------------------------------------------------------------
def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def recorded_line(raw: RawRecord) -> bytes:
    """One raw record as a JSON line (key and value base64, null when absent)."""
    return orjson.dumps({
        "topic": raw.topic, "partition": raw.partition, "offset": raw.offset,
        "timestamp_ms": raw.timestamp_ms, "key": _b64(raw.key), "value": _b64(raw.value),
    }) + b"\n"


def history_record(line: bytes, topics: Topics) -> RawRecord:
    """A recorded line, or a simulator line whose topic attribute is named in `topics`."""
    item = orjson.loads(line)
    if "partition" in item:  # recorded by `jukebox record`
        key, value = item["key"], item["value"]
        return RawRecord(item["topic"], None if key is None else base64.b64decode(key),
                         None if value is None else base64.b64decode(value),
                         item["partition"], item["offset"], int(item["timestamp_ms"]))
    attr = item["topic"]
    if attr not in _TOPIC_ATTRS:
        raise ValueError(f"unknown simulator topic {attr!r}")
    value = item["value"].encode() if "value" in item else base64.b64decode(item["value_b64"])
    return RawRecord(getattr(topics, attr), item["key"].encode(), value, None, None,
                     int(item["timestamp_ms"]))


_TOPIC_ATTRS = frozenset(("plays", "payments", "locations", "venues", "labels", "song_catalog"))


def history_order(raw: RawRecord) -> tuple[int, str, int, int]:
    """The replay order: arrival time, then topic, partition and offset (absent = -1)."""
    return (raw.timestamp_ms, raw.topic, -1 if raw.partition is None else raw.partition,
            -1 if raw.offset is None else raw.offset)


@dataclass
class HistoryStats:
    """What reading a history saw; filled in while it is read."""

    records: Counter[str] = field(default_factory=Counter)  # by topic, as merged
    outside_time_range: int = 0  # Kafka records skipped for their timestamp
    out_of_order: int = 0  # records earlier (in replay order) than their stream's previous one
    partitions: list[str] = field(default_factory=list)  # "topic:partition=start-end" read


def merged_history(streams: Iterable[Iterable[RawRecord]], stats: HistoryStats | None = None) -> Iterator[RawRecord]:
    """All streams merged in `history_order`; ties keep stream order, then in-stream order.

    Each stream is expected in that order already (a Kafka partition, a recorded file);
    one that is not still merges deterministically, and `stats.out_of_order` counts it.
    """
    stats = stats if stats is not None else HistoryStats()

    def checked(stream: Iterable[RawRecord]) -> Iterator[RawRecord]:
        previous = None
        for raw in stream:
            order = history_order(raw)
            if previous is not None and order < previous:
                stats.out_of_order += 1
            previous = order
            yield raw

    for raw in heapq.merge(*(checked(s) for s in streams), key=history_order):
        stats.records[raw.topic] += 1
        yield raw


def file_history(path: Path, topics: Topics) -> Iterator[RawRecord]:
    """The records of a JSON Lines file, in file order; a bad line is a HistoryError."""
    with path.open("rb") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                yield history_record(line, topics)
            except (ValueError, KeyError, TypeError) as exc:
                raise HistoryError(f"{path}:{number}: not a recorded or simulator line ({exc!r})") from None


def line_count(path: Path) -> int:
    with path.open("rb") as data:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: data.read(1 << 20), b""))


# --- Kafka ranges ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PartitionRange:
    topic: str
    partition: int
    start: int
    end: int | None  # exclusive; None = the high watermark reported by the first fetch

    def __str__(self) -> str:
        return f"{self.topic}:{self.partition}={self.start}-{'' if self.end is None else self.end}"


def offset_ranges_from_text(specs: Iterable[str]) -> dict[tuple[str, int], tuple[int, int | None]]:
    """`topic:partition=start-end` (end exclusive, may be left empty) per partition.

    >>> offset_ranges_from_text(["jukebox.plays.v1:3=100-2000", "jukebox.venues.v1:0=5-"])
    {('jukebox.plays.v1', 3): (100, 2000), ('jukebox.venues.v1', 0): (5, None)}
    """
    ranges: dict[tuple[str, int], tuple[int, int | None]] = {}
    for spec in specs:
        try:
            where, _, span = spec.partition("=")
            topic, _, partition = where.rpartition(":")
            start, _, end = span.partition("-")
            key, value = (topic, int(partition)), (int(start), int(end) if end else None)
        except ValueError:
            raise ValueError(f"{spec!r}: use topic:partition=start-end, e.g. jukebox.plays.v1:3=100-2000") from None
        if not topic or value[0] < 0 or (value[1] is not None and value[1] < value[0]):
            raise ValueError(f"{spec!r}: need a topic and 0 <= start <= end")
        ranges[key] = value
    return ranges


def _consumer(client_config: dict[str, str]) -> Consumer:
    # assign() only: no group join (slow on Tansu), no commits; a trimmed start is an error
    return Consumer({**client_config, "group.id": "jukebox-replay", "enable.auto.commit": "false",
                     "enable.partition.eof": "true", "auto.offset.reset": "error",
                     "queued.max.messages.kbytes": "16384"})


def partition_ranges(
    client_config: dict[str, str],
    topic_names: Iterable[str],
    start_ms: int | None = None,
    offsets: dict[tuple[str, int], tuple[int, int | None]] | None = None,
    timeout_s: float = 10.0,
    optional: Iterable[str] = (),
) -> list[PartitionRange]:
    """The range to read of every partition of `topic_names` (explicit `offsets` win);
    a missing topic is an error unless it is `optional`."""
    offsets = dict(offsets or {})
    consumer = _consumer(client_config)
    try:
        names, skippable = list(topic_names), set(optional)
        metadata = consumer.list_topics(timeout=timeout_s).topics
        ranges = []
        for name in names:
            if name not in metadata or metadata[name].error is not None:
                if name in skippable:
                    continue
                raise HistoryError(f"topic {name!r} does not exist on the broker")
            for partition in sorted(metadata[name].partitions):
                explicit = offsets.pop((name, partition), None)
                if explicit is not None:
                    ranges.append(PartitionRange(name, partition, *explicit))
                    continue
                low, _high = consumer.get_watermark_offsets(TopicPartition(name, partition), timeout=timeout_s)
                start = low
                if start_ms is not None:
                    (found,) = consumer.offsets_for_times([TopicPartition(name, partition, start_ms)],
                                                          timeout=timeout_s)
                    start = max(low, found.offset) if found.offset >= 0 else start
                ranges.append(PartitionRange(name, partition, start, None))
        if offsets:
            raise HistoryError(f"offsets given for partitions that are not read: {sorted(offsets)}")
        return ranges
    finally:
        consumer.close()


class PartitionReader:
    """One partition's range as RawRecords, in offset order; its consumer is assigned at
    construction, so every partition fetches in the background while the merge starts."""

    def __init__(self, client_config: dict[str, str], part: PartitionRange, start_ms: int | None,
                 end_ms: int | None, stats: HistoryStats, batch: int = 1000,
                 idle_timeout_s: float = IDLE_TIMEOUT_S) -> None:
        self.part, self.start_ms, self.end_ms, self.stats = part, start_ms, end_ms, stats
        self.batch, self.idle_timeout_s = batch, idle_timeout_s
        self.consumer: Consumer | None = None
        if part.end is None or part.end > part.start:
            self.consumer = _consumer(client_config)
            self.consumer.assign([TopicPartition(part.topic, part.partition, part.start)])

    def __iter__(self) -> Iterator[RawRecord]:
        consumer, part = self.consumer, self.part
        if consumer is None:
            return
        end, last_seen = part.end, time.monotonic()
        try:
            while True:
                # what is already fetched, without waiting; else wait for the first message
                messages = consumer.consume(self.batch, 0) or [m for m in (consumer.poll(0.5),) if m]
                if not messages:
                    if time.monotonic() - last_seen > self.idle_timeout_s:
                        raise HistoryError(f"{part}: no records and no end of partition for "
                                           f"{self.idle_timeout_s:.0f}s")
                    continue
                last_seen = time.monotonic()
                for message in messages:
                    error = message.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            return
                        raise HistoryError(f"{part}: {error.str()}")
                    if end is None:  # the first fetch's high watermark: exact, unlike ListOffsets
                        end = consumer.get_watermark_offsets(
                            TopicPartition(part.topic, part.partition), cached=True)[1]
                    offset = message.offset()
                    if offset >= end:
                        return
                    raw = self._raw(message)
                    if raw is not None:
                        yield raw
                    if offset + 1 >= end:
                        return
        finally:
            consumer.close()
            self.consumer = None

    def _raw(self, message) -> RawRecord | None:
        kind, timestamp = message.timestamp()
        if not kind:
            raise HistoryError(f"{message.topic()}:{message.partition()}@{message.offset()} has no timestamp")
        if (self.start_ms is not None and timestamp < self.start_ms) or (
                self.end_ms is not None and timestamp >= self.end_ms):
            self.stats.outside_time_range += 1
            return None
        return RawRecord(message.topic(), message.key(), message.value(), message.partition(),
                         message.offset(), timestamp)


def kafka_history(
    client_config: dict[str, str],
    topic_names: Iterable[str],
    start_ms: int | None = None,
    end_ms: int | None = None,
    offsets: dict[tuple[str, int], tuple[int, int | None]] | None = None,
    stats: HistoryStats | None = None,
    optional: Iterable[str] = (),
) -> Iterator[RawRecord]:
    """Every partition's range of `topic_names`, merged into the replay order."""
    stats = stats if stats is not None else HistoryStats()
    ranges = partition_ranges(client_config, topic_names, start_ms, offsets, optional=optional)
    stats.partitions = [str(r) for r in ranges]
    readers = [PartitionReader(client_config, r, start_ms, end_ms, stats) for r in ranges]
    return merged_history(readers, stats)


# --- the command -------------------------------------------------------------------------
def time_ms_from_text(text: str | None, option: str) -> int | None:
    """ISO 8601 with an offset, as epoch milliseconds."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not an ISO 8601 time", param_hint=option) from None
    if moment.tzinfo is None:
        raise typer.BadParameter(f"{text!r} has no UTC offset: add Z or +00:00", param_hint=option)
    return int(moment.astimezone(UTC).timestamp() * 1000)


def history_progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                    TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), console=console)


def position_text(count: int, elapsed_s: float, timestamp_ms: int) -> str:
    """`12,000 events  48,000/s  at 2026-11-27 18:02:11Z` for a progress bar."""
    at = datetime.fromtimestamp(timestamp_ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return f"{count:,} events  {count / max(elapsed_s, 1e-9):,.0f}/s  at {at}"


def write_history(records: Iterable[RawRecord], out: Path,
                  on_record: Callable[[int, RawRecord], None] | None = None) -> int:
    """Write records as recorded lines (via a temporary file, renamed when complete)."""
    partial = out.with_name(out.name + ".partial")
    count = 0
    with partial.open("wb") as lines:
        for count, raw in enumerate(records, 1):
            lines.write(recorded_line(raw))
            if on_record is not None and count % 5000 == 0:
                on_record(count, raw)
    partial.replace(out)
    return count


def record(
    out: Path = typer.Option(..., "--out", "-o", help="JSON Lines file to write"),
    start: str = typer.Option(None, help="Only records with a Kafka timestamp at or after this (ISO 8601)"),
    end: str = typer.Option(None, help="Only records with a Kafka timestamp before this (ISO 8601)"),
    offsets: list[str] = typer.Option(None, "--offsets",
                                      help="topic:partition=start-end (end exclusive; repeatable)"),
    labels: bool = typer.Option(True, "--labels/--no-labels", help="Also record the fraud-labels topic"),
    source_prefix: str = typer.Option(None, help="Topic prefix to read (default: JUKEBOX_KAFKA_TOPIC_PREFIX)"),
) -> None:
    """Record the input topics (a time or offset range) to JSON Lines, in replay order."""
    from dataflows.cli import load_settings  # dataflows.cli imports this module to register it

    settings = load_settings()
    if not settings.kafka.bootstrap:
        console.print("[red]no Kafka to record from:[/red] set JUKEBOX_KAFKA_BOOTSTRAP")
        raise typer.Exit(2)
    topics = Topics(settings.kafka.topic_prefix if source_prefix is None else source_prefix)
    names = [*topics.inputs, *([topics.labels] if labels else [])]
    start_ms, end_ms = time_ms_from_text(start, "--start"), time_ms_from_text(end, "--end")
    try:
        ranges = offset_ranges_from_text(offsets or [])
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--offsets") from None
    stats = HistoryStats()
    progress = history_progress()
    task = progress.add_task("record", total=None, stats="")
    began = time.monotonic()

    def show(count: int, raw: RawRecord) -> None:
        progress.update(task, stats=position_text(count, time.monotonic() - began, raw.timestamp_ms))

    try:
        with progress:
            history = kafka_history(settings.kafka.client_config(), names, start_ms, end_ms, ranges, stats,
                                    optional=[topics.labels])
            count = write_history(history, out, show)
    except (HistoryError, KafkaException) as exc:
        console.print(f"[red]cannot record:[/red] {exc}")
        raise typer.Exit(1) from None
    seconds = time.monotonic() - began
    table = Table(title=f"recorded {count:,} records to {out} in {seconds:.1f}s")
    table.add_column("topic")
    table.add_column("records", justify="right")
    for topic in sorted(stats.records):
        table.add_row(topic, f"{stats.records[topic]:,}")
    if stats.outside_time_range:
        table.add_row("(outside the time range, skipped)", f"{stats.outside_time_range:,}")
    console.print(table)
